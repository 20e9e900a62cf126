// The fill's life with a FAKE upstream (bytes pushed by the test) and a FAKE
// in-memory store: states, readers, failures, limits, abort.
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import t from 'tap'
import { BlobFill, type FillFailure } from '../../src/cache/blob-fill.js'
import { FillReader } from '../../src/cache/fill-reader.js'
import { BusyError, Slots } from '../../src/limits/slots.js'
import { RegistryError } from '../../src/oci/errors.js'
import { MemoryStore, PushedBlob } from './fakes/memory-store.js'

const log = pino({ level: 'silent' })
const spoolDir = mkdtempSync(join(tmpdir(), 'stevedore-fill-test-'))
const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
const freeSlot = async (): Promise<() => void> => () => undefined

interface Harness {
  fill: BlobFill
  store: MemoryStore
  body: PushedBlob
  answer: () => void
  refuse: (err: Error) => void
  ended: Promise<FillFailure | 'ok'>
}

function makeFill(bytes: Buffer, opts: { size?: number | undefined; acquireSlot?: (signal: AbortSignal) => Promise<() => void>; maxDurationMs?: number; digest?: string } = {}): Harness {
  const store = new MemoryStore()
  const body = new PushedBlob('size' in opts ? opts.size : bytes.byteLength)
  let answer!: () => void
  let refuse!: (err: Error) => void
  const opened = new Promise<PushedBlob>((resolve, reject) => {
    answer = () => resolve(body)
    refuse = reject
  })
  let onEnd!: (f: FillFailure | 'ok') => void
  const ended = new Promise<FillFailure | 'ok'>((resolve) => {
    onEnd = resolve
  })
  const fill = new BlobFill(opts.digest ?? digestOf(bytes), store, { upstream: 'up', registry: 'https://up.example', open: () => opened }, {
    spoolDir,
    log,
    acquireSlot: opts.acquireSlot ?? freeSlot,
    ...(opts.maxDurationMs !== undefined ? { maxDurationMs: opts.maxDurationMs } : {}),
    events: { onEnd: (_f, failure) => onEnd(failure ?? 'ok') },
  })
  return { fill, store, body, answer, refuse, ended }
}

/** Reads a source to its end; resolves with the bytes, or rejects as the source does. */
async function readAll(reader: FillReader, start = 0): Promise<Buffer> {
  const parts: Buffer[] = []
  const buffer = Buffer.alloc(64 * 1024)
  try {
    for (let pos = start; ;) {
      const limit = await reader.readable(pos)
      if (limit === undefined) break
      const mem = reader.inMemory(pos, limit - pos)
      if (mem !== undefined) {
        parts.push(Buffer.from(mem))
        pos += mem.byteLength
        continue
      }
      const n = await reader.read(buffer, Math.min(buffer.byteLength, limit - pos), pos)
      if (n <= 0) throw new Error('short read')
      parts.push(Buffer.from(buffer.subarray(0, n)))
      pos += n
    }
  } finally {
    // As the sender does: a reader that failed is closed too, or the fill keeps its spool file open.
    await reader.close()
  }
  return Buffer.concat(parts)
}

t.test('waiting → streaming → verified: every reader gets every byte, the last one only once verified', async (t) => {
  const bytes = randomBytes(300_000)
  const h = makeFill(bytes)
  t.equal(h.fill.state, 'waiting')
  await tick()
  t.equal(h.store.writersCreated, 0, 'no temp file before the upstream answered')
  h.answer()
  await h.fill.ready
  t.equal(h.fill.state, 'streaming')
  t.equal(h.store.writersCreated, 1, 'the temp file once it answered')
  const first = new FillReader(h.fill, undefined, true)
  const joiner = new FillReader(h.fill, undefined, false)
  const ranged = new FillReader(h.fill, 1000, false)
  const all = [readAll(first), readAll(joiner), readAll(ranged, 10)]
  h.body.push(bytes.subarray(0, 100_000))
  await tick()
  h.body.push(bytes.subarray(100_000))
  await tick()
  await tick()
  // Everything is in; until the digest is checked the last byte stays back.
  const probe = new FillReader(h.fill, undefined, false)
  t.equal(h.fill.state, 'streaming')
  const last = probe.readable(bytes.byteLength - 1)
  t.ok(last instanceof Promise, 'the last byte waits for the verification')
  if (last instanceof Promise) last.catch(() => undefined)
  h.body.end()
  const [a, b, r] = await Promise.all(all)
  await probe.close()
  t.ok(a?.equals(bytes), 'originator')
  t.ok(b?.equals(bytes), 'joiner')
  t.ok(r?.equals(bytes.subarray(10, 1000)), 'a range of the fill')
  t.equal(await h.ended, 'ok')
  t.equal(h.fill.state, 'verified')
  t.ok(h.fill.stored)
  t.ok(h.store.blobs.get(digestOf(bytes))?.equals(bytes), 'stored')
  t.equal(h.store.writersOpen, 0)
})

t.test('an upstream that refuses: failed, no temp file ever, readers see the registry error', async (t) => {
  const h = makeFill(randomBytes(10))
  h.refuse(new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream'))
  await t.rejects(h.fill.ready, { code: 'BLOB_UNKNOWN' })
  t.equal(await h.ended, 'upstream')
  t.equal(h.fill.state, 'failed')
  t.equal(h.store.writersCreated, 0, 'no temp file was created')
})

t.test('content that does not match the digest: failed, readers cut, nothing stored', async (t) => {
  const bytes = randomBytes(50_000)
  const h = makeFill(bytes, { digest: digestOf(randomBytes(8)) })
  h.answer()
  await h.fill.ready
  const reader = readAll(new FillReader(h.fill, undefined, true))
  h.body.push(bytes)
  h.body.end()
  await t.rejects(reader, { code: 'UPSTREAM_ERROR' }, 'the reader is cut, never a clean end')
  t.equal(await h.ended, 'digest_mismatch')
  t.equal(h.store.blobs.size, 0)
  t.equal(h.store.writersOpen, 0, 'the writer was cancelled')
})

t.test('more bytes than announced, or a body cut short: failed, nothing stored', async (t) => {
  for (const fault of ['overlong', 'cut'] as const) {
    const bytes = randomBytes(20_000)
    const h = makeFill(bytes)
    h.answer()
    await h.fill.ready
    const reader = readAll(new FillReader(h.fill, undefined, true))
    if (fault === 'overlong') {
      h.body.push(bytes, Buffer.from('x'))
      h.body.end()
    } else {
      h.body.push(bytes.subarray(0, 5000))
      h.body.fail(Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }))
    }
    await t.rejects(reader, Error, `${fault}: the reader is cut`)
    t.equal(await h.ended, 'upstream', `${fault}: an upstream failure`)
    t.equal(h.store.blobs.size, 0, `${fault}: nothing stored`)
    t.ok(h.body.destroyed, `${fault}: the upstream body was destroyed`)
  }
})

t.test('storage fails mid-fill: the originator still gets every byte verified, joiners are cut, nothing stored', async (t) => {
  const bytes = randomBytes(200_000)
  const h = makeFill(bytes)
  h.store.failWritesAfter = 50_000
  h.answer()
  await h.fill.ready
  const originator = readAll(new FillReader(h.fill, undefined, true))
  const joiner = readAll(new FillReader(h.fill, undefined, false))
  h.body.push(bytes.subarray(0, 40_000))
  await tick()
  h.body.push(bytes.subarray(40_000, 120_000))
  await tick()
  h.body.push(bytes.subarray(120_000))
  h.body.end()
  await t.rejects(joiner, /storage failed/, 'the joiner is cut (it retries)')
  t.ok((await originator).equals(bytes), 'the originator got every byte')
  t.equal(await h.ended, 'storage')
  t.equal(h.fill.state, 'verified', 'verified, though not stored')
  t.notOk(h.fill.stored)
  t.equal(h.store.blobs.size, 0)
})

/** Rejects if `work` has not settled within ms: a deadlock fails the test instead of hanging it. */
function within<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms)
  })
  return Promise.race([work, late]).finally(() => clearTimeout(timer))
}

t.test('storage fails mid-fill and the originator asked for a range: it gets the range, wherever it lies past the window', async (t) => {
  const MiB = 1024 * 1024
  const bytes = randomBytes(20 * MiB)
  for (const [start, end] of [[12 * MiB, 13 * MiB], [0, 100_000], [5 * MiB, 19 * MiB]] as const) {
    const h = makeFill(bytes)
    h.store.failWritesAfter = MiB
    h.answer()
    await h.fill.ready
    const originator = readAll(new FillReader(h.fill, end, true, start), start)
    for (let pos = 0; pos < bytes.byteLength; pos += 256 * 1024) {
      h.body.push(bytes.subarray(pos, pos + 256 * 1024))
      await tick()
    }
    h.body.end()
    // Before the fix: the fill waited for the originator to take bytes it never would (before its start, after its end).
    const got = await within(originator, 5000, `range ${start}-${end}`)
    t.ok(got.equals(bytes.subarray(start, end)), `bytes ${start}-${end - 1}, verified`)
    t.equal(await h.ended, 'storage')
    t.equal(h.store.blobs.size, 0, 'nothing stored')
  }
})

t.test('a fill aborted while it waits for a slot gives back the slot it is granted later', async (t) => {
  const slots = new Slots({ what: 'blob fills', key: 'limits.fills', capacity: 1, queue: 5, timeoutMs: 5000 })
  const held = await slots.acquire()
  const h = makeFill(randomBytes(10), { acquireSlot: (signal) => slots.acquire('live', signal) })
  h.answer()
  await tick()
  h.fill.abort('shutdown deadline')
  t.equal(await h.ended, 'shutdown')
  held()
  await tick()
  // Before the fix: the slot went to the aborted fill's wait and was never given back.
  t.equal(slots.inUse, 0, 'no slot is held')
})

t.test('waiting for a slot: readers wait; a refused slot fails the fill with the 503', async (t) => {
  const slots = new Slots({ what: 'blob fills', key: 'limits.fills', capacity: 1, queue: 0, timeoutMs: 1000 })
  const held = await slots.acquire()
  const h = makeFill(randomBytes(10), { acquireSlot: (signal) => slots.acquire('live', signal) })
  await t.rejects(h.fill.ready, BusyError)
  t.equal(await h.ended, 'busy')
  t.equal(h.store.writersCreated, 0)
  held()

  const slots2 = new Slots({ what: 'blob fills', key: 'limits.fills', capacity: 1, queue: 5, timeoutMs: 5000 })
  const held2 = await slots2.acquire()
  const bytes = randomBytes(1000)
  const h2 = makeFill(bytes, { acquireSlot: (signal) => slots2.acquire('live', signal) })
  h2.answer()
  await tick()
  t.equal(h2.fill.state, 'waiting', 'still waiting for the slot')
  held2()
  await h2.fill.ready
  t.equal(slots2.inUse, 1, 'the fill holds the slot')
  h2.body.push(bytes)
  h2.body.end()
  t.ok((await readAll(new FillReader(h2.fill, undefined, true))).equals(bytes))
  await h2.fill.done
  t.equal(slots2.inUse, 0, 'and gives it back at the end')
})

t.test('abort (shutdown) and the overall cap end a fill: readers cut, nothing stored', async (t) => {
  const bytes = randomBytes(10_000)
  const h = makeFill(bytes)
  h.answer()
  await h.fill.ready
  const reader = readAll(new FillReader(h.fill, undefined, true))
  h.body.push(bytes.subarray(0, 100))
  await tick()
  h.fill.abort('shutdown deadline')
  await t.rejects(reader, /shutdown deadline/)
  t.equal(await h.ended, 'shutdown')
  t.ok(h.body.destroyed, 'the upstream body was destroyed')
  t.equal(h.store.blobs.size, 0)

  const capped = makeFill(bytes, { maxDurationMs: 50 })
  capped.answer()
  await capped.fill.ready
  capped.body.push(bytes.subarray(0, 100)) // then silence
  // AbortSignal.timeout does not keep the process alive; the test must.
  const alive = setTimeout(() => undefined, 5000)
  t.equal(await capped.ended, 'timeout')
  clearTimeout(alive)
  t.equal(capped.fill.state, 'failed')
  t.equal(capped.store.blobs.size, 0)
})

t.test('an upstream that announces no size: streamed, verified at its end', async (t) => {
  const bytes = randomBytes(70_000)
  const h = makeFill(bytes, { size: undefined })
  h.answer()
  await h.fill.ready
  t.equal(h.fill.size, undefined)
  const reader = readAll(new FillReader(h.fill, undefined, true))
  h.body.push(bytes)
  h.body.end()
  t.ok((await reader).equals(bytes))
  t.equal(h.fill.size, bytes.byteLength)
  t.ok(h.fill.stored)
})
