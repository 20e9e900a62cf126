import type { Readable } from 'node:stream'

/**
 * The chunks of a stream as they were pushed, in batches of what arrived
 * since the last batch. A stream's own async iterator joins what is buffered
 * into one new Buffer (a copy of every byte, and garbage); this hands over
 * the chunks themselves. The stream is paused while `highWaterMark` bytes
 * wait to be taken (backpressure). A consumer that stops early owns the
 * stream: it must destroy it.
 */
export async function* chunkBatches(stream: Readable, highWaterMark: number): AsyncGenerator<Buffer[]> {
  let queue: Buffer[] = []
  let queued = 0
  let ended = false
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const signal = (): void => {
    const w = wake
    wake = undefined
    w?.()
  }
  const onData = (chunk: Buffer): void => {
    queue.push(chunk)
    queued += chunk.byteLength
    if (queued >= highWaterMark) stream.pause()
    signal()
  }
  const onEnd = (): void => {
    ended = true
    signal()
  }
  const onError = (err: Error): void => {
    failure ??= err
    signal()
  }
  const onClose = (): void => {
    if (!ended) failure ??= new Error('stream closed before its end')
    signal()
  }
  stream.on('data', onData)
  stream.once('end', onEnd)
  stream.once('error', onError)
  stream.once('close', onClose)
  try {
    for (;;) {
      if (queue.length > 0) {
        const batch = queue
        queue = []
        queued = 0
        // More may arrive while the consumer works on this batch.
        if (stream.isPaused()) stream.resume()
        yield batch
        continue
      }
      if (failure !== undefined) throw failure
      if (ended) return
      await new Promise<void>((resolve) => {
        wake = resolve
      })
    }
  } finally {
    stream.removeListener('data', onData)
    stream.removeListener('end', onEnd)
    stream.removeListener('error', onError)
    stream.removeListener('close', onClose)
  }
}
