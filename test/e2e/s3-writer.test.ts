// The S3 writer against a real S3 endpoint (s3rver on loopback, behind a
// recording proxy): parts stream while writing, writes wait while S3 takes
// none, faults on the wire leave no object, a writer uploads to its digest's key.
import { createHash } from 'node:crypto'
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import t from 'tap'
import { PARTS_IN_FLIGHT } from '../../src/storage/s3-writer.js'
import { sleep, waitFor } from '../harness/tools.js'
import { putBlob, readAll, testBlob, writeAll } from '../storage/conformance.js'
import { openS3Store, startS3, startS3Proxy } from '../storage/s3-helpers.js'

const PART = 64 * 1024
const s3 = await startS3(t)
const openStore = openS3Store(PART)

t.test('s3: multipart parts stream while writing; one part is one PutObject', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const store = await openStore(t, s3.config({ prefix: 'stream/', endpoint: proxy.endpoint }))

  const small = testBlob(PART - 1)
  const puts = proxy.count('PUT', 'x-id=PutObject')
  const one = await store.createWriter('sha256', small.digest)
  await writeAll(one, small.bytes, 1000)
  await sleep(100)
  t.equal(proxy.count('PUT', 'x-id=PutObject'), puts, 'nothing is sent before commit: the one PutObject waits for the verified bytes')
  await one.commit(small.digest, small.bytes.byteLength)
  t.equal(proxy.count('POST', '?uploads'), 0, 'a blob under one part starts no multipart upload')
  t.equal(proxy.count('PUT', 'x-id=PutObject'), puts + 1, 'it is one PutObject')

  const big = testBlob(16 * PART + 5)
  const writer = await store.createWriter('sha256', big.digest)
  await writeAll(writer, big.bytes, 10_000)
  const partsBeforeCommit = proxy.count('PUT', 'x-id=UploadPart')
  t.ok(partsBeforeCommit >= 14, `parts are uploaded while writing, not at commit (${partsBeforeCommit} of 17 before commit)`)
  t.equal(await store.stat(big.digest), undefined, 'an unfinished upload is not a visible object')
  await writer.commit(big.digest, big.bytes.byteLength)
  t.equal(proxy.count('PUT', 'x-id=UploadPart'), 17, '17 parts in all')
  t.equal(proxy.count('PUT', 'CopyObject'), 0, 'a writer that knows its digest uploads to the final key: no copy')
  t.equal(proxy.requests.filter((r) => r.url.includes('/uploads/')).length, 0, 'and no staging key')
  t.ok((await readAll(await store.read(big.digest))).equals(big.bytes), 'the object has the right bytes')

  const again = await store.createWriter('sha256', big.digest)
  await writeAll(again, big.bytes, 100_000)
  const completes = proxy.count('POST', '?uploadId=')
  await again.commit(big.digest, big.bytes.byteLength)
  t.equal(proxy.count('POST', '?uploadId='), completes, 'a blob already published is not completed again')
  t.ok(proxy.count('DELETE', 'uploadId='), 'its upload is aborted instead')
})

t.test('s3: writes wait while S3 takes no parts: memory per writer stays within the parts in flight', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const store = await openStore(t, s3.config({ prefix: 'backpressure/', endpoint: proxy.endpoint }))
  const held: Array<() => void> = []
  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const up = httpRequest({ host: '127.0.0.1', port: s3.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    req.pipe(up)
  }
  proxy.rules.push({ match: (m, u) => m === 'PUT' && u.includes('x-id=UploadPart'), fault: { kind: 'respond', handler: (req, res) => held.push(() => forward(req, res)) } })
  const blob = testBlob(20 * PART)
  const writer = await store.createWriter('sha256', blob.digest)
  const writing = writeAll(writer, blob.bytes, 10_000)
  await waitFor(async () => held.length === PARTS_IN_FLIGHT, 10_000, 'the first parts sent')
  await sleep(200)
  t.equal(held.length, PARTS_IN_FLIGHT, 'no further part while those are in flight')
  // The parts in flight and the one filling behind them: the memory a writer holds.
  t.ok(writer.written <= (PARTS_IN_FLIGHT + 1) * PART, `written stops at ${writer.written} bytes (parts of ${PART})`)
  proxy.rules.length = 0
  for (const release of held.splice(0)) release()
  await writing
  await writer.commit(blob.digest, blob.bytes.byteLength)
  t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), 'once S3 takes parts again the blob completes, intact')
})

t.test('s3: failures while writing leave no object and abort the upload', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const prefix = 'faults/'
  const store = await openStore(t, s3.config({ prefix, endpoint: proxy.endpoint }), { clientOverrides: { maxAttempts: 1 } })
  const visible = async (): Promise<string[]> => [...(await s3.objects(prefix)).keys()].filter((k) => k !== `${prefix}stevedore-layout.json`)

  await t.test('a part upload fails', async (t) => {
    const blob = testBlob(10 * PART)
    proxy.rules.push({ match: (m, u) => m === 'PUT' && u.includes('partNumber=3&'), fault: { kind: 'error', status: 500, code: 'InternalError' }, times: 1 })
    const writer = await store.createWriter('sha256', blob.digest)
    const failed = await writeAll(writer, blob.bytes, 10_000).then(() => writer.commit(blob.digest, blob.bytes.byteLength)).then(() => undefined, (err: unknown) => err)
    t.ok(failed instanceof Error, `write or commit rejects (${String(failed)})`)
    await writer.cancel()
    t.ok(proxy.count('DELETE', 'uploadId='), 'the upload is aborted (best effort)')
    t.same(await visible(), [], 'nothing visible')
  })

  await t.test('the connection resets during a part', async (t) => {
    const blob = testBlob(10 * PART)
    proxy.rules.push({ match: (m, u) => m === 'PUT' && u.includes('partNumber=2&'), fault: { kind: 'reset' }, times: 1 })
    const writer = await store.createWriter('sha256', blob.digest)
    const failed = await writeAll(writer, blob.bytes, 10_000).then(() => writer.commit(blob.digest, blob.bytes.byteLength)).then(() => undefined, (err: unknown) => err)
    t.ok(failed instanceof Error, `write or commit rejects (${String(failed)})`)
    await writer.cancel()
    t.same(await visible(), [], 'nothing visible')
  })

  await t.test('completing the upload fails', async (t) => {
    const blob = testBlob(3 * PART)
    proxy.rules.push({ match: (m, u) => m === 'POST' && u.includes('?uploadId='), fault: { kind: 'error', status: 503, code: 'SlowDown' }, times: 1 })
    const writer = await store.createWriter('sha256', blob.digest)
    await writeAll(writer, blob.bytes)
    await t.rejects(writer.commit(blob.digest, blob.bytes.byteLength), 'commit rejects')
    t.ok(proxy.requests.at(-1)?.method === 'DELETE' && proxy.requests.at(-1)?.url.includes('uploadId='), 'and aborts the upload')
    t.same(await visible(), [], 'nothing visible')
  })

  await t.test('the single PutObject fails', async (t) => {
    const blob = testBlob(1000)
    proxy.rules.push({ match: (m, u) => m === 'PUT' && u.includes('x-id=PutObject'), fault: { kind: 'reset' }, times: 1 })
    const writer = await store.createWriter('sha256', blob.digest)
    await writeAll(writer, blob.bytes)
    await t.rejects(writer.commit(blob.digest, blob.bytes.byteLength), 'commit rejects')
    t.same(await visible(), [], 'nothing visible')
  })

  await t.test('a wrong digest after a multipart upload', async (t) => {
    const blob = testBlob(5 * PART)
    const writer = await store.createWriter('sha256', blob.digest)
    const corrupt = Buffer.from(blob.bytes)
    corrupt[7] = (corrupt[7] ?? 0) ^ 1
    await writeAll(writer, corrupt)
    const aborts = proxy.count('DELETE', 'uploadId=')
    await t.rejects(writer.commit(blob.digest, blob.bytes.byteLength), { name: 'DigestMismatchError' })
    t.equal(proxy.count('DELETE', 'uploadId='), aborts + 1, 'the upload is aborted')
    t.equal(proxy.count('POST', '?uploadId='), 1, 'never completed (the one complete is the failed test above)')
    t.same(await visible(), [], 'nothing visible')
  })
})

t.test('s3: a writer must know its digest: it uploads to that key, never to a staging key', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const store = await openStore(t, s3.config({ prefix: 'direct/', endpoint: proxy.endpoint }))
  const sinceInit = (): typeof proxy.requests => proxy.requests.slice(afterInit).filter((r) => r.method !== 'GET')
  const afterInit = proxy.requests.length
  await t.rejects(store.createWriter('sha256'), { name: 'DigestRequiredError', code: 'S3_DIGEST_REQUIRED' }, 'no digest: a typed error')
  t.same(sinceInit(), [], 'and nothing is sent')
  const blob = testBlob(4 * PART + 1)
  const other = testBlob(4 * PART + 1)
  const writer = await store.createWriter('sha256', blob.digest)
  await writeAll(writer, other.bytes)
  // The bytes are good for their own digest, but the upload went to blob's key: publishing would file them under the wrong name.
  await t.rejects(writer.commit(other.digest, other.bytes.byteLength), /created for/, 'a commit of another digest than the one given is refused')
  t.same([...(await s3.objects('direct/')).keys()], ['direct/stevedore-layout.json'], 'and leaves nothing')
  const again = await store.createWriter('sha256', blob.digest)
  await writeAll(again, blob.bytes)
  await again.commit(blob.digest, blob.bytes.byteLength)
  const keys = sinceInit().map((r) => new URL(r.url, 'http://x').pathname)
  t.same([...new Set(keys)], [`/${s3.bucket}/direct/blobs/sha256/${blob.digest.slice(7)}`], 'every write request goes to the blob key')
  t.equal(proxy.count('PUT', 'CopyObject'), 0, 'no copy')
  const got = await readAll(await store.read(blob.digest))
  t.equal(`sha256:${createHash('sha256').update(got).digest('hex')}`, blob.digest)
})

t.test('s3: the part buffer starts small and grows to the part size', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const store = await openStore(t, s3.config({ prefix: 'grow/', endpoint: proxy.endpoint }), { partSize: 1024 * 1024 })
  for (const size of [1, 300_000, 1024 * 1024, 2.5 * 1024 * 1024]) {
    const blob = testBlob(size)
    const parts = proxy.count('PUT', 'x-id=UploadPart')
    await putBlob(store, blob, 77_777)
    t.equal(proxy.count('PUT', 'x-id=UploadPart') - parts, size > 1024 * 1024 ? 3 : 0, `${size} bytes: ${size > 1024 * 1024 ? 'three parts' : 'one PutObject'}`)
    t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), `${size} bytes read back intact`)
  }
})
