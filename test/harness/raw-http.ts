// A raw HTTP/1.1 client on a net.Socket, for tests that need to control
// reading byte by byte: stop reading, read slowly, or never send a request.
import { connect, type Socket } from 'node:net'

export interface RawExchange {
  readonly socket: Socket
  /** Status line and headers, once they arrived. */
  readonly head: Promise<{ status: number; headers: Record<string, string> }>
  /** Body bytes received so far. */
  bodyBytes(): number
  /** The whole body once the connection closed (the server closed it, or we did). */
  readonly closed: Promise<{ body: Buffer; closedByPeer: boolean }>
  /** Closes our side (closedByPeer is then false). */
  close(): void
  /** Reads at about this rate from now on (flowing, paused between chunks). */
  throttle(bytesPerSecond: number): void
}

/** Sends `GET path` (or only connects, with `send: false`) and collects the answer. */
export function rawRequest(port: number, path: string, opts: { headers?: Record<string, string>; send?: boolean; method?: string } = {}): RawExchange {
  const socket = connect(port, '127.0.0.1')
  if (opts.send !== false) {
    const headers = Object.entries({ host: `127.0.0.1:${port}`, ...opts.headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    socket.write(`${opts.method ?? 'GET'} ${path} HTTP/1.1\r\n${headers}\r\n`)
  }
  let buffered = Buffer.alloc(0)
  let headEnd = -1
  const body: Buffer[] = []
  let bodyBytes = 0
  let resolveHead!: (h: { status: number; headers: Record<string, string> }) => void
  let rejectHead!: (err: Error) => void
  const head = new Promise<{ status: number; headers: Record<string, string> }>((resolve, reject) => {
    resolveHead = resolve
    rejectHead = reject
  })
  head.catch(() => undefined)
  let weEnded = false
  socket.on('data', (chunk: Buffer) => {
    if (headEnd >= 0) {
      body.push(chunk)
      bodyBytes += chunk.byteLength
      return
    }
    buffered = Buffer.concat([buffered, chunk])
    headEnd = buffered.indexOf('\r\n\r\n')
    if (headEnd < 0) return
    const lines = buffered.subarray(0, headEnd).toString('latin1').split('\r\n')
    const status = Number(lines[0]?.split(' ')[1])
    const headers: Record<string, string> = {}
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':')
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
    }
    const rest = buffered.subarray(headEnd + 4)
    body.push(rest)
    bodyBytes += rest.byteLength
    resolveHead({ status, headers })
  })
  socket.on('error', () => undefined)
  const closed = new Promise<{ body: Buffer; closedByPeer: boolean }>((resolve) => {
    socket.once('close', () => {
      rejectHead(new Error('closed before the headers'))
      resolve({ body: Buffer.concat(body), closedByPeer: !weEnded })
    })
  })
  let rate: number | undefined
  socket.on('data', (chunk: Buffer) => {
    if (rate === undefined) return
    socket.pause()
    setTimeout(() => socket.resume(), (chunk.byteLength / rate) * 1000)
  })
  return {
    socket,
    head,
    bodyBytes: () => bodyBytes,
    closed,
    close: () => {
      weEnded = true
      socket.destroy()
    },
    throttle: (bytesPerSecond) => {
      rate = bytesPerSecond
      socket.resume()
    },
  }
}

/** One whole answer to bytes written as they are: status 0 when the server closed without answering. */
export interface RawAnswer {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/**
 * Writes `bytes` (a request, well-formed or not) on a fresh connection and
 * reads until the server closes it (send `connection: close`) or `timeoutMs`
 * passes; 1xx heads are skipped, chunked bodies decoded. For requests a
 * normal HTTP client refuses to send. Our side is never half-closed first:
 * node's server drops a request whose client did that.
 */
export function rawExchange(port: number, bytes: Buffer | string, timeoutMs = 5000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no answer within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => undefined)
    socket.once('close', () => {
      clearTimeout(timer)
      resolve(parseAnswer(Buffer.concat(chunks)))
    })
    socket.write(bytes)
  })
}

function parseAnswer(all: Buffer): RawAnswer {
  const headEnd = all.indexOf('\r\n\r\n')
  if (headEnd < 0) return { status: 0, headers: {}, body: all }
  const lines = all.subarray(0, headEnd).toString('latin1').split('\r\n')
  const status = Number(lines[0]?.split(' ')[1])
  if (status >= 100 && status < 200) return parseAnswer(all.subarray(headEnd + 4))
  const headers: Record<string, string> = {}
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':')
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
  }
  let body = all.subarray(headEnd + 4)
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body)
  return { status, headers, body }
}

function dechunk(data: Buffer): Buffer {
  const out: Buffer[] = []
  let pos = 0
  for (;;) {
    const eol = data.indexOf('\r\n', pos)
    if (eol < 0) break
    const size = parseInt(data.subarray(pos, eol).toString('latin1'), 16)
    if (!Number.isFinite(size) || size === 0) break
    out.push(data.subarray(eol + 2, eol + 2 + size))
    pos = eol + 2 + size + 2
  }
  return Buffer.concat(out)
}
