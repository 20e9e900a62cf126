// The BlobStore contract as tests: every backend runs this same suite
// (test/unit/filesystem-store.test.ts, test/e2e/s3-store.test.ts). Writers
// are created with the digest they will commit, as the cache fill does: S3
// needs it (it uploads to the digest's key), the filesystem ignores it.
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import { BlobNotFoundError, DigestMismatchError, type BlobStore, type BlobWriter } from '../../src/storage/blob-store.js'

export interface ConformanceSubject {
  readonly store: BlobStore
  /** What the backend keeps besides published blobs and documents (temp files, staged objects); must end empty. */
  readonly tempFiles?: () => Promise<string[]>
  /** A second, initialised store over the same data (same folder, same bucket and prefix). */
  readonly reopen?: () => Promise<BlobStore>
}

/** Builds an initialised store over fresh, empty data; cleans up through t.teardown. */
export type MakeStore = (t: Test) => Promise<ConformanceSubject>

export interface TestBlob {
  readonly bytes: Buffer
  readonly digest: string
}

export function testBlob(size: number, algorithm: 'sha256' | 'sha512' = 'sha256'): TestBlob {
  const bytes = randomBytes(size)
  return { bytes, digest: `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}` }
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Writes bytes in chunks of the given size (odd sizes cross part boundaries). */
export async function writeAll(writer: BlobWriter, bytes: Buffer, chunk = 65_521): Promise<void> {
  for (let i = 0; i < bytes.byteLength; i += chunk) await writer.write(bytes.subarray(i, i + chunk))
}

export async function putBlob(store: BlobStore, blob: TestBlob, chunk?: number): Promise<void> {
  const writer = await store.createWriter(blob.digest.startsWith('sha512:') ? 'sha512' : 'sha256', blob.digest)
  try {
    await writeAll(writer, blob.bytes, chunk)
    await writer.commit(blob.digest, blob.bytes.byteLength)
  } finally {
    await writer.cancel()
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

const sorted = (xs: string[]): string[] => [...xs].sort()

export async function runConformance(t: Test, name: string, makeStore: MakeStore): Promise<void> {
  const noTemp = async (tt: Test, subject: ConformanceSubject, when: string): Promise<void> => {
    if (subject.tempFiles === undefined) return
    tt.same(await subject.tempFiles(), [], `no temp data left ${when}`)
  }

  await t.test(`${name}: missing blobs and documents`, async (t) => {
    const { store } = await makeStore(t)
    const { digest } = testBlob(10)
    t.equal(await store.stat(digest), undefined, 'stat of a missing blob is undefined')
    await t.rejects(store.read(digest), BlobNotFoundError, 'read of a missing blob throws BlobNotFoundError')
    await t.rejects(store.read(digest, { start: 0, end: 0 }), BlobNotFoundError, 'ranged read too')
    t.equal(await store.delete(digest), false, 'delete of a missing blob is false')
    t.equal(await store.getDocument('tags/none/@x'), undefined, 'missing document is undefined')
    await t.resolves(store.deleteDocument('tags/none/@x'), 'deleting a missing document is not an error')
    t.same(await collect(store.list()), [], 'an empty store lists nothing')
    t.same(await collect(store.listDocuments('')), [], 'and no documents')
    t.equal(await store.writable(), true, 'writable')
  })

  await t.test(`${name}: write, commit, stat, read, list`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    const small = testBlob(1000)
    const large = testBlob(300_001)
    const empty = testBlob(0)
    for (const blob of [small, large, empty]) {
      const writer = await store.createWriter('sha256', blob.digest)
      await writeAll(writer, blob.bytes)
      t.equal(writer.written, blob.bytes.byteLength, `written counts ${blob.bytes.byteLength} bytes`)
      if (writer.localPath !== undefined) t.same(await readFile(writer.localPath), blob.bytes, 'localPath holds the bytes written so far')
      t.equal(await store.stat(blob.digest), undefined, 'nothing visible before commit')
      let verified = false
      await writer.commit(blob.digest, blob.bytes.byteLength, () => {
        verified = true
      })
      t.ok(verified, 'onVerified ran')
      t.same(await store.stat(blob.digest), { digest: blob.digest, size: blob.bytes.byteLength }, 'stat after commit')
      t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), `read returns the ${blob.bytes.byteLength} bytes`)
      await t.resolves(writer.cancel(), 'cancel after commit is a no-op')
      await t.rejects(writer.write(Buffer.from('x')), 'write after commit rejects')
      await t.rejects(writer.commit(blob.digest, blob.bytes.byteLength), 'a second commit rejects')
    }
    t.same(await store.stat(small.digest), { digest: small.digest, size: 1000 }, 'the cancel after commit left the blob')
    const listed = await collect(store.list())
    t.same(
      listed.sort((a, b) => a.digest.localeCompare(b.digest)),
      [small, large, empty].map((b) => ({ digest: b.digest, size: b.bytes.byteLength })).sort((a, b) => a.digest.localeCompare(b.digest)),
      'list has exactly the committed blobs with their sizes',
    )
    await noTemp(t, subject, 'after commits')
  })

  await t.test(`${name}: writev appends several chunks in order, mixed with write`, async (t) => {
    const { store } = await makeStore(t)
    const blob = testBlob(700_003)
    const writer = await store.createWriter('sha256', blob.digest)
    const cuts = [0, 1, 65_536, 65_537, 300_000, 300_000, 512_000, 700_003]
    const pieces = cuts.slice(1).map((end, i) => blob.bytes.subarray(cuts[i], end))
    await writer.write(pieces[0] as Buffer)
    await writer.writev(pieces.slice(1, 4))
    await writer.writev([])
    await writer.writev(pieces.slice(4))
    t.equal(writer.written, blob.bytes.byteLength, 'written counts every chunk, empty ones included')
    if (writer.localPath !== undefined) t.same(await readFile(writer.localPath), blob.bytes, 'localPath holds the bytes in order')
    await writer.commit(blob.digest, blob.bytes.byteLength)
    t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), 'the committed blob is the chunks in order')
  })

  await t.test(`${name}: sha512 blobs`, async (t) => {
    const { store } = await makeStore(t)
    const blob = testBlob(70_000, 'sha512')
    await putBlob(store, blob)
    t.same(await store.stat(blob.digest), { digest: blob.digest, size: 70_000 })
    t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes))
    t.same(await collect(store.list()), [{ digest: blob.digest, size: 70_000 }])
  })

  await t.test(`${name}: ranged reads at the edges`, async (t) => {
    const { store } = await makeStore(t)
    const blob = testBlob(300_001)
    await putBlob(store, blob)
    const size = blob.bytes.byteLength
    const ranges: Array<[number, number]> = [[0, 0], [0, size - 1], [size - 1, size - 1], [65_535, 65_536], [1, 2], [1000, 200_000], [size - 10, size - 1], [131_071, 196_609]]
    for (const [start, end] of ranges) {
      const got = await readAll(await store.read(blob.digest, { start, end }))
      t.ok(got.equals(blob.bytes.subarray(start, end + 1)), `bytes ${start}-${end}: ${got.byteLength} bytes, the right ones`)
    }
  })

  await t.test(`${name}: cancel leaves nothing`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    for (const size of [1000, 300_001]) {
      const blob = testBlob(size)
      const writer = await store.createWriter('sha256', blob.digest)
      await writeAll(writer, blob.bytes)
      const localPath = writer.localPath
      await writer.cancel()
      await t.resolves(writer.cancel(), 'a second cancel is a no-op')
      await t.rejects(writer.write(Buffer.from('x')), 'write after cancel rejects')
      await t.rejects(writer.commit(blob.digest, size), 'commit after cancel rejects')
      t.equal(await store.stat(blob.digest), undefined, `cancelled ${size}-byte blob is not visible`)
      await t.rejects(store.read(blob.digest), BlobNotFoundError)
      if (localPath !== undefined) await t.rejects(readFile(localPath), { code: 'ENOENT' }, 'its local file is gone')
    }
    t.same(await collect(store.list()), [], 'list is empty')
    await noTemp(t, subject, 'after cancel')
  })

  await t.test(`${name}: an uncommitted writer is invisible, and init clears what it left`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    const blob = testBlob(300_001)
    const writer = await store.createWriter('sha256', blob.digest)
    await writeAll(writer, blob.bytes)
    t.equal(await store.stat(blob.digest), undefined, 'not visible while uncommitted')
    t.same(await collect(store.list()), [], 'not listed')
    if (subject.reopen !== undefined) {
      // As after a crash: the writer is abandoned, a new process starts on the same data.
      const again = await subject.reopen()
      t.equal(await again.stat(blob.digest), undefined, 'not visible to a new instance')
      await noTemp(t, subject, 'after init of a new instance')
    }
    await writer.cancel()
  })

  await t.test(`${name}: a wrong digest or size never commits`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    for (const size of [1000, 300_001]) {
      const blob = testBlob(size)
      const other = testBlob(size)
      // As a fill whose upstream sends other bytes than the digest asked for.
      const w1 = await store.createWriter('sha256', other.digest)
      await writeAll(w1, blob.bytes)
      const e1 = await w1.commit(other.digest, size).then(() => undefined, (err: unknown) => err)
      t.type(e1, DigestMismatchError, 'wrong digest: DigestMismatchError')
      if (e1 instanceof DigestMismatchError) {
        t.equal(e1.expected, other.digest)
        t.equal(e1.actual, blob.digest, 'the error names the actual digest')
      }
      t.equal(await store.stat(other.digest), undefined, 'nothing under the claimed digest')
      t.equal(await store.stat(blob.digest), undefined, 'nothing under the actual digest')
      await t.resolves(w1.cancel(), 'cancel after a failed commit is fine')

      const w2 = await store.createWriter('sha256', blob.digest)
      await writeAll(w2, blob.bytes)
      await t.rejects(w2.commit(blob.digest, size + 1), DigestMismatchError, 'right digest, wrong size: DigestMismatchError')
      t.equal(await store.stat(blob.digest), undefined, 'nothing visible')

      const w3 = await store.createWriter('sha256', blob.digest)
      await writeAll(w3, blob.bytes.subarray(0, size - 1))
      await t.rejects(w3.commit(blob.digest, size), DigestMismatchError, 'a short write: DigestMismatchError')
      t.equal(await store.stat(blob.digest), undefined, 'nothing visible')
    }
    t.same(await collect(store.list()), [], 'list is empty')
    await noTemp(t, subject, 'after failed commits')
  })

  await t.test(`${name}: concurrent writers of one digest end with one correct object`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    for (const size of [1000, 300_001]) {
      const blob = testBlob(size)
      const writers = await Promise.all([1, 2, 3].map(() => store.createWriter('sha256', blob.digest)))
      // Interleave the writes so every writer is mid-blob at once.
      const step = 40_000
      for (let i = 0; i < size; i += step) {
        await Promise.all(writers.map((w) => w.write(blob.bytes.subarray(i, i + step))))
      }
      // One more writer with corrupt bytes for the same digest, committing at the same time.
      const bad = await store.createWriter('sha256', blob.digest)
      const corrupt = Buffer.from(blob.bytes)
      corrupt[size >> 1] = (corrupt[size >> 1] ?? 0) ^ 0xff
      await writeAll(bad, corrupt)
      const results = await Promise.allSettled([...writers.map((w) => w.commit(blob.digest, size)), bad.commit(blob.digest, size)])
      t.same(results.slice(0, 3).map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled'], 'every correct writer commits')
      const last = results[3]
      t.ok(last?.status === 'rejected' && last.reason instanceof DigestMismatchError, 'the corrupt writer fails with DigestMismatchError')
      t.same(await store.stat(blob.digest), { digest: blob.digest, size }, 'one object of the right size')
      t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), 'with the right bytes')
      t.equal((await collect(store.list())).filter((b) => b.digest === blob.digest).length, 1, 'listed once')
    }
    await noTemp(t, subject, 'after concurrent commits')
  })

  await t.test(`${name}: delete`, async (t) => {
    const { store } = await makeStore(t)
    const a = testBlob(1000)
    const b = testBlob(2000)
    await putBlob(store, a)
    await putBlob(store, b)
    t.equal(await store.delete(a.digest), true, 'delete of a stored blob is true')
    t.equal(await store.stat(a.digest), undefined, 'gone from stat')
    await t.rejects(store.read(a.digest), BlobNotFoundError, 'gone from read')
    t.same(await collect(store.list()), [{ digest: b.digest, size: 2000 }], 'gone from list, the other one stays')
    t.equal(await store.delete(a.digest), false, 'a second delete is false')
    await putBlob(store, a)
    t.same(await store.stat(a.digest), { digest: a.digest, size: 1000 }, 'a deleted digest can be written again')
  })

  await t.test(`${name}: a stream whose blob is deleted mid-read errors or delivers every byte`, async (t) => {
    const { store } = await makeStore(t)
    const blob = testBlob(2 * 1024 * 1024 + 3)
    await putBlob(store, blob)
    const stream = await store.read(blob.digest)
    const chunks: Buffer[] = []
    let deleted = false
    let error: unknown
    try {
      for await (const chunk of stream) {
        chunks.push(chunk as Buffer)
        if (!deleted) {
          deleted = true
          t.equal(await store.delete(blob.digest), true, 'deleted after the first chunk')
        }
      }
    } catch (err) {
      error = err
    }
    const got = Buffer.concat(chunks)
    if (error === undefined) t.ok(got.equals(blob.bytes), 'a clean end means every byte, the right ones')
    else t.ok(got.byteLength < blob.bytes.byteLength, `or the stream errors (${String(error)})`)
    t.equal(await store.stat(blob.digest), undefined, 'the blob is gone')
  })

  await t.test(`${name}: documents`, async (t) => {
    const subject = await makeStore(t)
    const { store } = subject
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    await store.putDocument('manifests/sha256/abc', binary)
    t.same(await store.getDocument('manifests/sha256/abc'), binary, 'binary bytes round-trip')
    await store.putDocument('manifests/sha256/abc', Buffer.from('second'))
    t.same(await store.getDocument('manifests/sha256/abc'), Buffer.from('second'), 'a put replaces the document')
    await store.putDocument('tags/reg.example:5000/a/@v1', Buffer.from('{"v":1}'))
    await store.putDocument('tags/reg.example:5000/a/b/@latest', Buffer.from('{}'))
    await store.putDocument('tags/reg.example:5000/ab/@v1', Buffer.from('{}'))
    await store.putDocument('access/host-1.json', new Uint8Array([1, 2, 3]))
    t.same(await store.getDocument('access/host-1.json'), Buffer.from([1, 2, 3]), 'a Uint8Array is stored as is')
    t.same(sorted(await collect(store.listDocuments('tags/reg.example:5000/a'))), ['tags/reg.example:5000/a/@v1', 'tags/reg.example:5000/a/b/@latest'], 'listDocuments is by path prefix, nested, not string prefix')
    t.same(sorted(await collect(store.listDocuments('tags/reg.example:5000/a/'))), ['tags/reg.example:5000/a/@v1', 'tags/reg.example:5000/a/b/@latest'], 'a trailing slash means the same')
    t.same(sorted(await collect(store.listDocuments('tags'))), ['tags/reg.example:5000/a/@v1', 'tags/reg.example:5000/a/b/@latest', 'tags/reg.example:5000/ab/@v1'])
    t.same(sorted(await collect(store.listDocuments(''))), ['access/host-1.json', 'manifests/sha256/abc', 'tags/reg.example:5000/a/@v1', 'tags/reg.example:5000/a/b/@latest', 'tags/reg.example:5000/ab/@v1'], 'the empty prefix lists all')
    t.same(await collect(store.listDocuments('nothing')), [], 'an unknown prefix lists nothing')
    t.same(await collect(store.listDocuments('manifests/sha256/abc')), [], 'a document is not a prefix of itself')
    await store.deleteDocument('tags/reg.example:5000/a/@v1')
    t.equal(await store.getDocument('tags/reg.example:5000/a/@v1'), undefined, 'deleted')
    t.same(await collect(store.listDocuments('tags/reg.example:5000/a')), ['tags/reg.example:5000/a/b/@latest'], 'and no longer listed')
    t.same(await collect(store.list()), [], 'documents are not blobs')
    for (const bad of ['', '../escape', 'a/../../b', '/abs', 'a//b', 'a/./b', 'sp ace']) {
      await t.rejects(store.putDocument(bad, Buffer.from('x')), `key ${JSON.stringify(bad)} is refused`)
    }
    await t.rejects(collect(store.listDocuments('../x')), 'a prefix that climbs out is refused')
    await noTemp(t, subject, 'after document writes')
  })

  await t.test(`${name}: a second instance on the same data sees blobs and documents`, async (t) => {
    const subject = await makeStore(t)
    if (subject.reopen === undefined) {
      t.pass('backend has no reopen')
      return
    }
    const blob = testBlob(300_001)
    await putBlob(subject.store, blob)
    await subject.store.putDocument('tags/up/repo/@v1', Buffer.from('{"digest":"x"}'))
    const again = await subject.reopen()
    t.same(await again.stat(blob.digest), { digest: blob.digest, size: 300_001 }, 'blob stat')
    t.ok((await readAll(await again.read(blob.digest, { start: 5, end: 100_004 }))).equals(blob.bytes.subarray(5, 100_005)), 'blob bytes')
    t.same(await again.getDocument('tags/up/repo/@v1'), Buffer.from('{"digest":"x"}'), 'document')
    t.same(await collect(again.listDocuments('tags')), ['tags/up/repo/@v1'], 'document listing')
    await again.putDocument('tags/up/repo/@v2', Buffer.from('2'))
    t.same(await subject.store.getDocument('tags/up/repo/@v2'), Buffer.from('2'), 'and the first sees what the second wrote')
  })
}
