import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { RegistryError } from '../oci/errors.js'
import { requestSeq } from './served.js'

/** Sent on every answer, errors included: clients check it to know they talk to a registry. */
const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' } as const

/** The only methods served, anywhere: the mirror is read-only. */
const READ_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD'])

const readOnly = (method: string): RegistryError =>
  new RegistryError('UNSUPPORTED', 'this registry mirror is read-only', { detail: { method }, headers: { allow: 'GET, HEAD' } })

/** Gives a request its context and the API version header; first thing for every request fastify sees. */
export function beginRequest(request: FastifyRequest, reply: FastifyReply): void {
  request.stevedore = { kind: 'other', startedAt: process.hrtime.bigint(), seq: requestSeq() }
  void reply.headers(API_VERSION)
}

/**
 * What is wrong with a request before it is routed: a write method (405,
 * before any body is read or parsed) anywhere but the JSON API under
 * /api/, whose routes name their own methods; or an HTTP/1.1 request
 * without Host, which RFC 9112 makes a 400 (node's own check would answer
 * without our body).
 */
export function checkRequest(request: FastifyRequest): void {
  if (!READ_METHODS.has(request.method) && !(request.raw.url ?? '').startsWith('/api/')) throw readOnly(request.method)
  if (request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor >= 1 && request.headers.host === undefined) {
    throw new RegistryError('UNSUPPORTED', 'an HTTP/1.1 request needs a Host header', { status: 400 })
  }
}

/**
 * The error a failure becomes for the client: ours as it is; fastify's own
 * 4xx (FST_ERR_*) keep their status with the spec's body; anything else is
 * a bug of ours, 500 UNKNOWN.
 */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err
  const { statusCode: status, message, code } = (err ?? {}) as Partial<FastifyError>
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new RegistryError('UNSUPPORTED', typeof message === 'string' ? message : 'request refused', { status, detail: { code: typeof code === 'string' ? code : null } })
  }
  return new RegistryError('UNKNOWN', 'internal error')
}

/**
 * Answers with an error as the spec's JSON body: the one place errors become
 * responses (the error handler, and fastify's framework errors, call it).
 */
export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown): void {
  const error = toRegistryError(err)
  if (error.status >= 500) request.log.warn({ err, code: error.code }, 'request failed')
  if (reply.sent || reply.raw.headersSent) {
    // Headers are out: the only honest signal left is to cut the connection.
    reply.raw.destroy()
    return
  }
  void reply.code(error.status).headers(API_VERSION).headers(error.headers).type('application/json').send(JSON.stringify(error.body()))
}

/**
 * fastify's `frameworkErrors`: a path with bad percent-encoding (`/v2/%zz/...`)
 * fails in the router, before any hook. Such a request gets its context here
 * and the same answer as any other bad name.
 */
export function onFrameworkError(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  beginRequest(request, reply)
  const path = (request.raw.url ?? '').split('?', 1)[0]
  const error = err.code === 'FST_ERR_BAD_URL'
    ? new RegistryError('NAME_INVALID', 'malformed path', { detail: { path } })
    : new RegistryError('UNSUPPORTED', err.message, { status: err.statusCode !== undefined && err.statusCode < 500 ? err.statusCode : 400, detail: { path } })
  sendError(request, reply, error)
}

/**
 * fastify's `clientErrorHandler`: node could not parse the request (a bad
 * request line, NUL or control bytes, bad framing), its headers overflowed,
 * or it came too slowly. Answered on the raw socket with the spec's body,
 * then the connection is closed, as node itself does.
 */
export function onClientError(this: { log: FastifyBaseLogger }, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  this.log.debug({ err }, 'unparsable request')
  const error = err.code === 'HPE_HEADER_OVERFLOW'
    ? new RegistryError('UNSUPPORTED', 'request line and headers are too large', { status: 431 })
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new RegistryError('UNSUPPORTED', 'request not received in time', { status: 408 })
      : new RegistryError('UNSUPPORTED', 'malformed HTTP request', { status: 400, detail: { reason: err.code ?? null } })
  // A response already under way on this socket (pipelining) must not get bytes of another in its body.
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage
  if (socket.writable && inFlight?.headersSent !== true) socket.write(rawResponse(error))
  socket.destroy()
}

/**
 * Requests node answers itself, before fastify sees them: CONNECT (node
 * would drop the connection without a word) and an Expect other than
 * 100-continue (node would answer a bare 417).
 */
export function answerOutsideFastify(server: Server): void {
  server.on('connect', (_request: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => undefined)
    if (socket.writable) socket.write(rawResponse(readOnly('CONNECT')))
    socket.destroy()
  })
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    const error = new RegistryError('UNSUPPORTED', 'unsupported expectation', { status: 417, detail: { expect: request.headers.expect ?? null } })
    const body = JSON.stringify(error.body())
    response.writeHead(error.status, { ...API_VERSION, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    response.end(body)
  })
}

function rawResponse(error: RegistryError): string {
  const body = JSON.stringify(error.body())
  const headers = { ...API_VERSION, ...error.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), connection: 'close' }
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
  return `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n${head}\r\n${body}`
}
