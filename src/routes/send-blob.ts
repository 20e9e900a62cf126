import type { ServerResponse } from 'node:http'
import type { BlobSource } from '../cache/blob-source.js'
import { BufferPool } from '../io/buffer-pool.js'
import type { SendQueueProbe } from '../io/send-queue.js'

// A reader that keeps up is sent 1 MiB per read and write: measured, about
// twice as fast as 64 KiB. A reader that does not keep up holds at most two
// small buffers, so thousands of slow clients cost little memory.
const BIG = 1024 * 1024
const SMALL = 64 * 1024
// The kernel takes a few MB of a new connection at once, whoever reads it
// (measured here: about 4 MB for curl --limit-rate 2k). Only a response that
// has moved more than that without stalling, fast enough to drain a 1 MiB
// write within STALL_MS, has proven it keeps up.
const PROMOTE_AFTER = 8 * 1024 * 1024
// A write still pending after this long means the client is not keeping up.
const STALL_MS = 100
const PROMOTE_RATE = BIG / STALL_MS // bytes per ms
// 4 MiB of small buffers kept for reuse.
const SMALL_KEPT_FREE = 64

/** The buffers every response shares: big ones bounded by limits.sendBuffers, small ones kept a few at a time. */
export class SendBuffers {
  readonly big: BufferPool
  readonly small: BufferPool

  constructor(bigBytes: number) {
    this.big = new BufferPool(BIG, bigBytes)
    // Small buffers in use are bounded by the response cap (two each); only a few are kept
    // free, so a burst of slow readers does not hold its peak for the life of the process.
    this.small = new BufferPool(SMALL, Number.MAX_SAFE_INTEGER, SMALL_KEPT_FREE)
  }
}

export interface SendOptions {
  readonly buffers: SendBuffers
  /** A client that reads nothing for this long is dropped. */
  readonly writeTimeoutMs: number
  /** Tells a slow reader from a stopped one while a write stays pending; without it, a pending write is all there is to go by. */
  readonly sendQueue?: SendQueueProbe
}

/** The client stopped reading: its response is dropped (the caller cuts the connection). */
export class WriteTimeoutError extends Error {
  override name = 'WriteTimeoutError'
  readonly code = 'CLIENT_WRITE_TIMEOUT'
}

interface Chunk {
  readonly parts: readonly Buffer[]
  readonly size: number
  /** The pool its buffer came from, when it came from one. */
  readonly pool?: BufferPool
  readonly buffer?: Buffer
}

interface Write {
  readonly chunk: Chunk
  readonly done: Promise<void>
  finished: boolean
}

/**
 * Writes a blob's bytes from `start` on to res as the source has them.
 * Chunks the source holds in memory go out as they are; the rest is read
 * into pooled buffers, the next read running while the last write drains,
 * one write in flight (backpressure). A response starts with small buffers
 * and moves to 1 MiB ones once it has shown it keeps up; when a write stalls
 * it drops its read-ahead back to the pool and goes back to small ones.
 * Rejects when the client goes away, reads nothing for writeTimeoutMs, or
 * the source fails or runs short; never ends res.
 */
export async function writeBlob(source: BlobSource, start: number, res: ServerResponse, options: SendOptions): Promise<void> {
  const { buffers } = options
  let big = false
  // Bytes written since the last stall, and since when: the client's rate.
  let unstalled = 0
  let unstalledSince = Date.now()
  let closedError: Error | undefined
  let onClose: (() => void) | undefined
  const closed = new Promise<void>((resolve) => {
    onClose = () => {
      closedError ??= new Error('client went away')
      resolve()
    }
    res.once('close', onClose)
  })
  const whileOpen = async <T>(work: Promise<T>): Promise<T> => {
    const value = await Promise.race([work, closed])
    if (closedError !== undefined) throw closedError
    return value as T
  }
  let inflight: Write | undefined
  let ahead: Chunk | undefined

  /** Waits up to ms for the write in flight; true when it finished. */
  const settle = async (write: Write, ms: number): Promise<boolean> => {
    if (!write.finished) await whileOpen(raceTimer(write.done, ms))
    return write.finished
  }

  /** Waits for a stalled write while the client keeps reading (see whileReading). */
  const drain = (write: Write): Promise<void> => whileReading(res, whileOpen(write.done), () => write.finished, options)

  try {
    for (let pos = start; ;) {
      const next = source.readable(pos)
      // A fill in progress may keep a reader waiting: a client that leaves meanwhile ends it.
      const limit = next instanceof Promise ? await whileOpen(next) : next
      if (limit === undefined) break
      ahead = await readChunk(source, pos, limit - pos, big ? buffers.big : buffers.small, buffers.small)
      if (inflight !== undefined) {
        if (!(await settle(inflight, STALL_MS))) {
          unstalled = 0
          big = false
          if (ahead.pool === buffers.big) {
            // Not keeping up: no 1 MiB read-ahead while it drains; this part is read again, small.
            release(ahead)
            ahead = undefined
          }
          await drain(inflight)
        }
        await whileOpen(inflight.done)
        if (unstalled === 0) unstalledSince = Date.now()
        unstalled += inflight.chunk.size
        release(inflight.chunk)
        inflight = undefined
        if (!big && unstalled >= PROMOTE_AFTER && unstalled >= PROMOTE_RATE * (Date.now() - unstalledSince)) big = true
        if (ahead === undefined) continue
      }
      inflight = startWrite(res, ahead)
      ahead = undefined
      pos += inflight.chunk.size
    }
    if (inflight !== undefined) {
      if (!(await settle(inflight, STALL_MS))) await drain(inflight)
      await whileOpen(inflight.done)
      release(inflight.chunk)
      inflight = undefined
    }
  } finally {
    if (onClose !== undefined) res.removeListener('close', onClose)
    if (ahead !== undefined) release(ahead)
    // A write that failed or is still pending may hold its buffer: the GC takes it, not the pool.
    if (inflight !== undefined) forget(inflight.chunk)
  }
}

/**
 * Ends res and waits for its last bytes to leave (a chunked body's
 * terminator can wait behind a full socket too), while the client keeps
 * reading; rejects with WriteTimeoutError once it has read nothing for
 * writeTimeoutMs. Resolves also when the client goes away.
 */
export async function endBlob(res: ServerResponse, options: SendOptions): Promise<void> {
  let ended = false
  const done = new Promise<void>((resolve) => {
    const end = (): void => {
      ended = true
      resolve()
    }
    // 'finish' never comes for a client that left after the last byte: 'close' does.
    res.once('finish', end)
    res.once('close', end)
    res.end()
  })
  await whileReading(res, done, () => ended, options)
}

/**
 * Waits for `done` while the client keeps reading. A slow reader's write can
 * stay pending for minutes while the kernel sends what it holds (it wakes a
 * writer only once a third of its buffer has drained), so the kernel's send
 * queue is looked at every eighth of writeTimeoutMs: once it has not moved
 * for writeTimeoutMs, the client is taken to have stopped.
 */
async function whileReading(res: ServerResponse, done: Promise<unknown>, isDone: () => boolean, options: SendOptions): Promise<void> {
  // The caller awaits what it waits for itself: a rejection after an early return is not unhandled.
  done.catch(() => undefined)
  const progress = new ReadProgress(res, options)
  if (!isDone()) await progress.look()
  while (!isDone()) {
    await raceTimer(done, progress.nextLookInMs())
    if (isDone()) return
    if (await progress.stopped()) throw new WriteTimeoutError(`the client read nothing for ${options.writeTimeoutMs} ms`)
  }
}

/** Whether a client is still reading, by its socket's send queue, looked at every eighth of writeTimeoutMs. */
class ReadProgress {
  private seen: number | undefined
  private movedAt = Date.now()
  readonly stepMs: number

  constructor(private readonly res: ServerResponse, private readonly options: SendOptions) {
    this.stepMs = Math.max(1, Math.floor(options.writeTimeoutMs / 8))
  }

  /** Takes a look at the queue; true when it moved since the last look. */
  async look(): Promise<boolean> {
    const now = await (this.options.sendQueue?.queued(this.res.socket) ?? Promise.resolve(undefined))
    const moved = now !== undefined && this.seen !== undefined && now !== this.seen
    this.seen = now
    if (moved) this.movedAt = Date.now()
    return moved
  }

  /** Looks again; true once nothing has moved for writeTimeoutMs. */
  async stopped(): Promise<boolean> {
    return !(await this.look()) && Date.now() - this.movedAt >= this.options.writeTimeoutMs
  }

  /** Starts the clock again: the client is not being waited for. */
  reset(): void {
    this.seen = undefined
    this.movedAt = Date.now()
  }

  nextLookInMs(): number {
    return Math.max(1, Math.min(this.stepMs, this.movedAt + this.options.writeTimeoutMs - Date.now()))
  }
}

/**
 * For a body piped to res by someone else (a storage stream): calls onStopped
 * once res has waited for the client to drain it (backpressure) and the
 * client has read nothing for writeTimeoutMs, judged by the socket's send
 * queue as whileReading does. Returns the function that stops watching;
 * res closing stops it too.
 */
export function watchWrites(res: ServerResponse, options: SendOptions, onStopped: (err: WriteTimeoutError) => void): () => void {
  const progress = new ReadProgress(res, options)
  let looking = false
  const look = async (): Promise<void> => {
    // Not waiting for the client: it keeps up, or the source is the slow one.
    if (!res.writableNeedDrain) return progress.reset()
    if (!(await progress.stopped())) return
    stop()
    onStopped(new WriteTimeoutError(`the client read nothing for ${options.writeTimeoutMs} ms`))
  }
  const timer = setInterval(() => {
    if (looking) return
    looking = true
    void look().finally(() => (looking = false))
  }, progress.stepMs)
  timer.unref()
  const stop = (): void => {
    clearInterval(timer)
    res.removeListener('close', stop)
  }
  res.once('close', stop)
  return stop
}

/** Settles with work, or resolves after ms, whichever comes first; the timer never outlives it. */
async function raceTimer(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** The next bytes at pos, at most max: the source's own memory, else a read into a pooled buffer. */
async function readChunk(source: BlobSource, pos: number, max: number, preferred: BufferPool, fallback: BufferPool): Promise<Chunk> {
  const want = Math.min(max, preferred.size)
  const parts: Buffer[] = []
  let size = 0
  for (let part = source.inMemory(pos, want); part !== undefined && part.byteLength > 0; part = size < want ? source.inMemory(pos + size, want - size) : undefined) {
    parts.push(part)
    size += part.byteLength
  }
  if (size > 0) return { parts, size }
  // The big pool is bounded: when it is lent out, a small read will do.
  let pool = preferred
  let buffer = preferred.take()
  if (buffer === undefined) {
    pool = fallback
    buffer = fallback.take() as Buffer
  }
  const length = Math.min(max, buffer.byteLength)
  let n: number
  try {
    n = await source.read(buffer, length, pos)
  } catch (err) {
    pool.give(buffer)
    throw err
  }
  if (n <= 0) {
    pool.give(buffer)
    throw new Error('blob data is shorter than its size')
  }
  return { parts: [n === buffer.byteLength ? buffer : buffer.subarray(0, n)], size: n, pool, buffer }
}

function release(chunk: Chunk): void {
  if (chunk.pool !== undefined && chunk.buffer !== undefined) chunk.pool.give(chunk.buffer)
}

function forget(chunk: Chunk): void {
  chunk.pool?.drop()
}

/** Writes the chunk's parts as one socket write (corked: a writev). */
function startWrite(res: ServerResponse, chunk: Chunk): Write {
  const write: Write = {
    chunk,
    finished: false,
    done: new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => {
        write.finished = true
        if (err) reject(err)
        else resolve()
      }
      const { parts } = chunk
      if (parts.length === 1) {
        res.write(parts[0] as Buffer, done)
        return
      }
      res.cork()
      parts.forEach((part, i) => (i === parts.length - 1 ? res.write(part, done) : res.write(part)))
      res.uncork()
    }),
  }
  // It may fail while the next read is under way: handled, so it is no unhandled rejection.
  write.done.catch(() => undefined)
  return write
}
