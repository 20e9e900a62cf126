// A TCP proxy that slows the answers of a server down to a byte rate, so a
// test can act in the middle of a transfer (kill the mirror, stop S3).
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Transform, type TransformCallback } from 'node:stream'
import type { Test } from 'tap'

export interface Throttle {
  readonly host: string
  readonly url: string
  /** Bytes per second from the server to the client; change it at any time. */
  rate: number
}

class Paced extends Transform {
  constructor(private readonly throttle: Throttle) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    // Small slices so the rate is smooth and a rate change takes effect soon.
    const slice = 16 * 1024
    let offset = 0
    const next = (): void => {
      if (offset >= chunk.byteLength) {
        callback()
        return
      }
      const part = chunk.subarray(offset, offset + slice)
      offset += part.byteLength
      this.push(part)
      setTimeout(next, (part.byteLength / this.throttle.rate) * 1000)
    }
    next()
  }
}

export async function startThrottle(t: Test, target: { host: string; port: number }, rate: number): Promise<Throttle> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    const close = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
    client.pipe(upstream)
    upstream.pipe(new Paced(throttle)).pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const throttle: Throttle = { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, rate }
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy()
    server.close(() => resolve())
  }))
  return throttle
}
