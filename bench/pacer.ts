// The pacing proxy: a model of the WAN link between a site and a remote
// registry. It is a stand-in only in that sense: it forwards every request to
// the real upstream registry (distribution) unchanged, with its headers
// (Host, Location, WWW-Authenticate, Docker-Content-Digest...) and streams the
// answers back, but all answer bodies, of every connection through it, share
// ONE token bucket of `bytesPerSecond` (100 MB/s in the bench): N parallel
// downloads each get about 1/N of the link, as they would from a real remote.
//
// It also records every request it forwarded (method, path, status, declared
// length, bytes delivered, clean end), which is how the bench counts full
// upstream GETs for the systems that sit behind it.
import { createServer, request as httpRequest, Agent, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'

export interface PacedRequest {
  method: string
  /** path and query as received */
  path: string
  status: number
  /** upstream Content-Length, if it sent one */
  contentLength: number | undefined
  /** body bytes delivered to the client */
  bytes: number
  /** the whole body went through and the client got a clean end */
  complete: boolean
  /** the exchange is over (either way) */
  closed: boolean
}

export interface Pacer {
  url: string
  host: string
  port: number
  requests(): PacedRequest[]
  reset(): void
  /** exchanges not over yet */
  inflight(): number
  /** GETs of `pathIncludes` answered 200 whose whole body (of `size` bytes) went through */
  fullGets(pathIncludes: string, size: number): number
  close(): Promise<void>
}

/**
 * One shared link. Each chunk reserves the next `bytes / rate` of link time,
 * first come first served, and is passed on when its reservation ends (as the
 * last bit of it would arrive). Chunks of all connections interleave, so the
 * link is shared fairly, chunk by chunk.
 *
 * Up to `burstMs` of unused link time can be caught up on (a token bucket of
 * that depth): timers fire late by a millisecond or more, and without credit
 * every late delivery would be capacity lost for good (a lone download would
 * get ~70 MB/s of a 100 MB/s link). 20 ms at 100 MB/s is 2 MB, 1 % of 200 MB.
 */
export class Link {
  #next = 0
  readonly #msPerByte: number
  readonly #burstMs: number

  constructor(bytesPerSecond: number, burstMs = 20) {
    this.#msPerByte = 1000 / bytesPerSecond
    this.#burstMs = burstMs
  }

  /** ms to wait before delivering `bytes` */
  reserve(bytes: number): number {
    const now = performance.now()
    const start = Math.max(now - this.#burstMs, this.#next)
    this.#next = start + bytes * this.#msPerByte
    return this.#next - now
  }
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer'])

export async function startPacer(opts: { upstream: string; bytesPerSecond: number; port: number }): Promise<Pacer> {
  const upstream = new URL(opts.upstream)
  const link = new Link(opts.bytesPerSecond)
  const agent = new Agent({ keepAlive: true, maxSockets: 256 })
  let log: PacedRequest[] = []

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const rec: PacedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, contentLength: undefined, bytes: 0, complete: false, closed: false }
    log.push(rec)
    const headers: OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v
    }
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent })
    let upRes: IncomingMessage | undefined
    const fail = (): void => {
      upRes?.destroy()
      up.destroy()
      res.destroy()
    }
    req.on('aborted', fail)
    res.on('close', () => {
      rec.closed = true
      if (!res.writableFinished) fail()
    })
    up.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' })
        res.end('pacer: upstream error\n')
      } else {
        res.destroy()
      }
    })
    up.on('response', (ures) => {
      upRes = ures
      rec.status = ures.statusCode ?? 0
      const out: OutgoingHttpHeaders = {}
      for (const [k, v] of Object.entries(ures.headers)) {
        if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v
      }
      const cl = Number(ures.headers['content-length'])
      if (ures.headers['content-length'] !== undefined && Number.isSafeInteger(cl)) rec.contentLength = cl
      res.writeHead(rec.status, ures.statusMessage, out)
      let waiting = false
      let ended = false
      const finish = (): void => {
        if (ended && !waiting) {
          res.end(() => {
            rec.complete = rec.contentLength === undefined || rec.bytes === rec.contentLength
          })
        }
      }
      ures.on('data', (chunk: Buffer) => {
        ures.pause()
        waiting = true
        const wait = link.reserve(chunk.byteLength)
        const deliver = (): void => {
          if (res.destroyed) return
          rec.bytes += chunk.byteLength
          const more = res.write(chunk)
          waiting = false
          if (ended) {
            finish()
          } else if (more) {
            ures.resume()
          } else {
            res.once('drain', () => ures.resume())
          }
        }
        if (wait >= 1) setTimeout(deliver, wait)
        else deliver()
      })
      ures.on('end', () => {
        ended = true
        finish()
      })
      ures.on('error', () => res.destroy())
    })
    req.pipe(up)
  }

  const server: Server = createServer({ keepAliveTimeout: 60_000 }, handle)
  server.on('clientError', (_err, socket) => socket.destroy())
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, '127.0.0.1', () => resolve())
  })
  const url = `http://127.0.0.1:${opts.port}`
  return {
    url,
    host: `127.0.0.1:${opts.port}`,
    port: opts.port,
    requests: () => log.slice(),
    reset: () => {
      log = []
    },
    inflight: () => log.filter((r) => !r.closed).length,
    fullGets: (pathIncludes, size) => log.filter((r) => r.method === 'GET' && r.path.includes(pathIncludes) && r.status === 200 && r.complete && r.bytes === size).length,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      agent.destroy()
    },
  }
}
