import type { SecureContextOptions } from 'node:tls'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { registerApi, type ApiRoute } from './api/plugin.js'
import { requireClientAuth } from './auth/hook.js'
import type { ClientAuth } from './auth/client-auth.js'
import { RegistryError } from './oci/errors.js'
import type { Mirror } from './mirror.js'
import './routes/context.js'
import { answerOutsideFastify, beginRequest, checkRequest, onClientError, onFrameworkError, sendError } from './routes/edge.js'
import { registerOpsRoutes } from './routes/ops.js'
import { recordResponse } from './routes/record.js'
import { registerRegistryRoutes } from './routes/registry.js'

export interface AppOptions {
  /** Client authentication; every client is served without it. */
  readonly auth?: ClientAuth
  /** HTTPS: the listener's certificate and key (PEM). */
  readonly tls?: SecureContextOptions
  /** Routes under /api/v1 (prefetch, the pre-pull list). */
  readonly api?: readonly ApiRoute[]
  /** Pages outside /v2/ and /api/ (the status page at /); registered last, protected like /v2/. */
  readonly pages?: (app: FastifyInstance) => void
  /** Routes other replicas call (src/cluster): under their own prefix, authenticated by their own signatures, not client auth. */
  readonly internal?: { readonly prefix: string; readonly register: (app: FastifyInstance) => void }
}

/** Builds the HTTP(S) server around a mirror; never listens. */
export function buildApp(mirror: Mirror, options: AppOptions = {}): FastifyInstance {
  const { limits } = mirror.config
  const server = {
    headersTimeout: limits.idleTimeoutMs,
    // How often node checks those deadlines: often enough for the timeout to mean what it says.
    connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(limits.idleTimeoutMs / 4))),
    // checkRequest refuses a missing Host itself, with the spec's error body.
    requireHostHeader: false,
  }
  // fastify hands `http` only to a plain server: an HTTPS one gets the same settings beside its certificate.
  // A TLS handshake never finished holds a connection too: it gets the idle bound (node's default is 120 s).
  const listener = options.tls !== undefined ? { https: { ...server, ...options.tls, handshakeTimeout: limits.idleTimeoutMs } } : { http: server }
  const app = Fastify({
    // A client that sends nothing (no request, or an idle keep-alive) is closed after limits.idleTimeout.
    keepAliveTimeout: limits.idleTimeoutMs,
    requestTimeout: limits.idleTimeoutMs,
    ...listener,
    loggerInstance: mirror.log as FastifyBaseLogger,
    // One line per request, written in onResponse below, instead of fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    return503OnClosing: true,
    // Digests and long repository names make long URLs; distribution accepts them too.
    routerOptions: { maxParamLength: 1024 },
    requestIdHeader: false,
    // Requests fastify or node cannot route or parse still get the spec's error body.
    frameworkErrors: onFrameworkError,
    // A key the API does not know is the client's mistake, said back to it: not dropped silently.
    ajv: { customOptions: { removeAdditional: false } },
    clientErrorHandler: onClientError,
  })
  answerOutsideFastify(app.server)

  // Beyond this, new connections are refused at once: a flood costs sockets, not memory.
  app.server.maxConnections = limits.connections

  app.decorateRequest('stevedore', null as never)
  // Write methods are refused before their bodies matter; never parse one.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => done(null))

  app.addHook('onRequest', async (request, reply) => {
    beginRequest(request, reply)
    checkRequest(request)
  })

  if (options.auth !== undefined) requireClientAuth(app, options.auth, options.internal?.prefix)

  app.addHook('onResponse', async (request, reply) => recordResponse(mirror, request, reply))

  app.setErrorHandler((err, request, reply) => sendError(request, reply, err))

  app.setNotFoundHandler((request, reply) => {
    sendError(request, reply, new RegistryError('NAME_UNKNOWN', 'not found', { status: 404, detail: { path: (request.raw.url ?? '').split('?', 1)[0] } }))
  })

  registerOpsRoutes(app, mirror)
  registerRegistryRoutes(app, mirror)
  if (options.api !== undefined) registerApi(app, options.api)
  options.internal?.register(app)
  options.pages?.(app)
  return app
}
