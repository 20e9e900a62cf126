import type { ServerResponse } from 'node:http'
import type { BlobSource } from '../cache/blob-source.js'

// Measured: a fresh 1 MiB buffer per read costs a cached-blob stream about a
// third of its CPU in allocation and GC; recycled buffers cost nothing.
const CHUNK = 1024 * 1024
// Free buffers kept for the next responses; beyond this they go to the GC.
const MAX_FREE = 64
const free: Buffer[] = []

const take = (): Buffer => free.pop() ?? Buffer.allocUnsafeSlow(CHUNK)
const give = (buffer: Buffer): void => {
  if (free.length < MAX_FREE) free.push(buffer)
}

/**
 * Writes a blob's bytes from `start` on to res as the source has them:
 * chunks the source holds in memory go out as they are, the rest is read
 * into two recycled 1 MiB buffers, the next read running while the last
 * write drains. At most one write is in flight (backpressure), and nothing
 * is allocated per full-size chunk. Rejects when the client goes away or the source
 * fails or runs short; never ends res.
 */
export async function writeBlob(source: BlobSource, start: number, res: ServerResponse): Promise<void> {
  // Taken on the first full-size read: a small blob never holds 1 MiB.
  const buffers: Array<Buffer | undefined> = [undefined, undefined]
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
  let inflight: Promise<void> = Promise.resolve()
  let clean = false
  try {
    let turn = 0
    for (let pos = start; ;) {
      const next = source.readable(pos)
      // A fill in progress may keep a reader waiting: a client that leaves meanwhile ends it.
      const limit = next instanceof Promise ? await whileOpen(next) : next
      if (limit === undefined) break
      const max = Math.min(CHUNK, limit - pos)
      // What a fill holds in memory goes out as its own chunks, up to 1 MiB in one write.
      const parts: Buffer[] = []
      let size = 0
      for (let part = source.inMemory(pos, max); part !== undefined && part.byteLength > 0; part = size < max ? source.inMemory(pos + size, max - size) : undefined) {
        parts.push(part)
        size += part.byteLength
      }
      if (size === 0) {
        let buffer: Buffer
        if (max === CHUNK || buffers[0] !== undefined || buffers[1] !== undefined) {
          // The recycled buffer written before the last one: its write is done (one in flight at most).
          buffer = buffers[turn] ??= take()
          turn ^= 1
        } else {
          // A blob that never needed a full-size read (a small one) gets a buffer of its own size.
          buffer = Buffer.allocUnsafe(max)
        }
        const n = await source.read(buffer, max, pos)
        if (n <= 0) throw new Error('blob data is shorter than its size')
        parts.splice(0, parts.length, n === buffer.byteLength ? buffer : buffer.subarray(0, n))
        size = n
      }
      pos += size
      await whileOpen(inflight)
      inflight = writeAll(res, parts)
      // It may fail while the next read is under way: handled, so it is no unhandled rejection.
      inflight.catch(() => undefined)
    }
    await whileOpen(inflight)
    clean = true
  } finally {
    if (onClose !== undefined) res.removeListener('close', onClose)
    // A write that failed half-way may still hold its buffer: only clean runs recycle.
    if (clean) for (const buffer of buffers) if (buffer !== undefined) give(buffer)
  }
}

/** Writes the parts as one socket write (corked: a writev), resolving when all are flushed. */
function writeAll(res: ServerResponse, parts: readonly Buffer[]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error | null): void => (err ? reject(err) : resolve())
    if (parts.length === 1) {
      res.write(parts[0] as Buffer, done)
      return
    }
    res.cork()
    parts.forEach((part, i) => (i === parts.length - 1 ? res.write(part, done) : res.write(part)))
    res.uncork()
  })
}
