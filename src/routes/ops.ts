import type { FastifyInstance } from 'fastify'
import type { Mirror } from '../mirror.js'

/** Health, readiness and metrics, outside /v2/. */
export function registerOpsRoutes(app: FastifyInstance, mirror: Mirror): void {
  app.get('/healthz', async (request, reply) => {
    request.stevedore.kind = 'ops'
    return reply.type('text/plain').send('ok\n')
  })

  app.get('/readyz', async (request, reply) => {
    request.stevedore.kind = 'ops'
    const writable = mirror.storeReady && (await mirror.store.writable())
    if (!writable) return reply.code(503).type('text/plain').send('storage not writable\n')
    return reply.type('text/plain').send('ready\n')
  })

  app.get('/metrics', async (request, reply) => {
    request.stevedore.kind = 'ops'
    mirror.metrics.fillsInProgress.set(mirror.blobs.inflight)
    return reply.type(mirror.metrics.registry.contentType).send(await mirror.metrics.registry.metrics())
  })
}
