import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify'
import { RegistryError } from './oci/errors.js'
import type { Mirror } from './mirror.js'
import './routes/context.js'
import { registerOpsRoutes } from './routes/ops.js'
import { recordResponse } from './routes/record.js'
import { registerRegistryRoutes } from './routes/registry.js'

/** Builds the HTTP server around a mirror; never listens. */
export function buildApp(mirror: Mirror): FastifyInstance {
  const app = Fastify({
    loggerInstance: mirror.log as FastifyBaseLogger,
    // One line per request, written in onResponse below, instead of fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    return503OnClosing: true,
    // Digests and long repository names make long URLs; distribution accepts them too.
    routerOptions: { maxParamLength: 1024 },
    requestIdHeader: false,
  })

  app.decorateRequest('stevedore', null as never)
  // Write methods are refused before their bodies matter; never parse one.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => done(null))

  app.addHook('onRequest', async (request, reply) => {
    request.stevedore = { kind: 'other', startedAt: process.hrtime.bigint() }
    reply.header('docker-distribution-api-version', 'registry/2.0')
  })

  app.addHook('onResponse', async (request, reply) => recordResponse(mirror, request, reply))

  app.setErrorHandler((err: FastifyError | RegistryError, request, reply) => {
    const error = toRegistryError(err)
    if (error.status >= 500) request.log.warn({ err, code: error.code }, 'request failed')
    if (reply.sent || reply.raw.headersSent) {
      // Headers are out: the only honest signal left is to cut the connection.
      reply.raw.destroy()
      return
    }
    void reply.code(error.status).headers(error.headers).type('application/json').send(JSON.stringify(error.body()))
  })

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).type('application/json').send(JSON.stringify(new RegistryError('NAME_UNKNOWN', 'not found', { status: 404, detail: { path: (request.raw.url ?? '').split('?', 1)[0] } }).body()))
  })

  registerOpsRoutes(app, mirror)
  registerRegistryRoutes(app, mirror)
  return app
}

function toRegistryError(err: FastifyError | RegistryError): RegistryError {
  if (err instanceof RegistryError) return err
  const status = (err as FastifyError).statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    return new RegistryError('UNSUPPORTED', err.message, { status })
  }
  return new RegistryError('UNKNOWN', 'internal error')
}
