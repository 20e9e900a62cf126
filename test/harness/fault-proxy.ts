// A FAULT INJECTOR, not a real part: an HTTP proxy in front of the real
// upstream registry that forwards every request unchanged, except those a
// rule matches, which it answers with a fault on cue: a socket cut at byte N
// of the body, a stall at byte N, a paced body, late headers, a canned status
// (429 with Retry-After, 503), a redirect. No real registry can be told to
// fail at a given byte; everything else (content, auth, digests) stays the
// real registry's. Listens on 127.0.0.1 only; stopped at t.teardown.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Test } from 'tap'
import { freePort } from './tools.js'

export type Fault =
  /** Forward headers and the first `afterBytes` body bytes, then destroy the socket. */
  | { readonly kind: 'cut'; readonly afterBytes: number }
  /** Forward headers and the first `afterBytes` body bytes, then send nothing more (the socket stays open). */
  | { readonly kind: 'stall'; readonly afterBytes: number }
  /** Forward the body at this rate. */
  | { readonly kind: 'pace'; readonly bytesPerSecond: number }
  /** Send the answer's headers only after this long. */
  | { readonly kind: 'delay'; readonly ms: number }
  /** Answer with this status (and headers, body) without asking the upstream. */
  | { readonly kind: 'status'; readonly status: number; readonly headers?: Record<string, string>; readonly body?: string }
  /** Forward, but send this many body bytes MORE than Content-Length announces. */
  | { readonly kind: 'overlong'; readonly extraBytes: number }
  /** Forward the whole body, but announce a Content-Length this many bytes short of it. */
  | { readonly kind: 'understated'; readonly byBytes: number }

export interface FaultRule {
  readonly method?: string
  /** Matches when the request path (with query) includes this. */
  readonly pathIncludes: string
  readonly fault: Fault
  /** How many requests it applies to; default every matching one. */
  times?: number
}

export interface ProxiedRequest {
  readonly method: string
  readonly path: string
  readonly range: string | undefined
  /** The fault applied, if any. */
  readonly fault: Fault['kind'] | undefined
}

export interface FaultProxy {
  readonly url: string
  readonly host: string
  /** Adds a rule; rules are tried in the order added. */
  add(rule: FaultRule): void
  clear(): void
  requests(): ProxiedRequest[]
  resetRequests(): void
  /** Requests still being answered. */
  open(): number
}

export async function startFaultProxy(t: Test, upstreamUrl: string): Promise<FaultProxy> {
  const target = new URL(upstreamUrl)
  const rules: FaultRule[] = []
  let log: ProxiedRequest[] = []
  let open = 0
  const server = createServer((req, res) => {
    open++
    res.once('close', () => open--)
    const path = req.url ?? '/'
    const rule = rules.find((r) => (r.method === undefined || r.method === req.method) && path.includes(r.pathIncludes) && (r.times === undefined || r.times > 0))
    if (rule !== undefined && rule.times !== undefined) rule.times--
    const fault = rule?.fault
    const range = req.headers['range']
    log.push({ method: req.method ?? '', path, range: typeof range === 'string' ? range : undefined, fault: fault?.kind })
    if (fault?.kind === 'status') {
      req.resume()
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers }).end(fault.body ?? '{}')
      return
    }
    forward(req, res, target, fault)
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    add: (rule) => rules.push(rule),
    clear: () => {
      rules.length = 0
    },
    requests: () => log.slice(),
    resetRequests: () => {
      log = []
    },
    open: () => open,
  }
}

function forward(req: IncomingMessage, res: ServerResponse, target: URL, fault: Fault | undefined): void {
  const upstream = httpRequest({
    host: target.hostname,
    port: target.port,
    method: req.method,
    path: req.url,
    headers: { ...req.headers, host: target.host },
  }, (answer) => {
    const send = (): void => {
      const headers = { ...answer.headers }
      if (fault?.kind === 'understated' && headers['content-length'] !== undefined) {
        headers['content-length'] = String(Number(headers['content-length']) - fault.byBytes)
      }
      res.writeHead(answer.statusCode ?? 502, headers)
      pump(answer, res, fault)
    }
    if (fault?.kind === 'delay') setTimeout(send, fault.ms)
    else send()
  })
  upstream.on('error', () => res.destroy())
  res.once('close', () => upstream.destroy())
  req.pipe(upstream)
}

/** Copies the body, applying the fault at its byte. */
function pump(answer: IncomingMessage, res: ServerResponse, fault: Fault | undefined): void {
  let sent = 0
  const limit = fault?.kind === 'cut' || fault?.kind === 'stall' ? fault.afterBytes : Number.POSITIVE_INFINITY
  if (limit === 0) {
    answer.destroy()
    res.flushHeaders()
    if (fault?.kind === 'cut') setTimeout(() => res.socket?.destroy(), 20)
    return
  }
  answer.on('data', (chunk: Buffer) => {
    if (sent >= limit) return
    const part = sent + chunk.byteLength > limit ? chunk.subarray(0, limit - sent) : chunk
    sent += part.byteLength
    if (sent >= limit) {
      answer.destroy()
      // The cut comes once the bytes before it have left: the client sees exactly `limit` bytes.
      res.write(part, () => {
        if (fault?.kind === 'cut') res.socket?.destroy()
      })
      return
    }
    const ok = res.write(part)
    if (fault?.kind === 'pace') {
      answer.pause()
      setTimeout(() => answer.resume(), (part.byteLength / fault.bytesPerSecond) * 1000)
    } else if (!ok) {
      answer.pause()
      res.once('drain', () => answer.resume())
    }
  })
  answer.on('end', () => {
    if (fault?.kind === 'overlong') res.end(Buffer.alloc(fault.extraBytes, 0x55))
    else if (sent < limit) res.end()
  })
  answer.on('error', () => res.destroy())
}
