import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../mirror.js'
import { announceServed } from './served.js'

/**
 * The one log line and the metrics of a finished request. Called by the
 * onResponse hook, and by handlers that write the response themselves
 * (fastify's hook never runs for those when the client leaves early); each
 * request is recorded once, by whichever comes first.
 */
export function recordResponse(mirror: Mirror, request: FastifyRequest, reply: FastifyReply): void {
  const ctx = request.stevedore
  if (ctx.recorded === true) return
  ctx.recorded = true
  const seconds = Number(process.hrtime.bigint() - ctx.startedAt) / 1e9
  const finished = reply.raw.writableFinished
  const status = reply.raw.statusCode
  mirror.metrics.requests.inc({ route: ctx.kind, method: request.method, status: String(status) })
  if (ctx.kind === 'ops') return
  announceServed(mirror, request, reply, seconds)
  if ((ctx.kind === 'blob' || ctx.kind === 'manifest') && ctx.cache !== undefined) {
    mirror.metrics.requestDuration.observe({ kind: ctx.kind, result: ctx.cache }, seconds)
    if (finished && ctx.bytes !== undefined && ctx.bytes > 0) {
      const fromFill = ctx.kind === 'blob' && (ctx.cache === 'miss' || ctx.cache === 'joined')
      mirror.metrics.bytesServed.inc({ source: fromFill ? 'upstream' : 'cache' }, ctx.bytes)
    }
  }
  request.log.info({
    method: request.method,
    path: (request.raw.url ?? '').split('?', 1)[0],
    status,
    upstream: ctx.upstream,
    repository: ctx.repository,
    digest: ctx.digest,
    tag: ctx.tag,
    cache: ctx.cache,
    bytes: finished ? ctx.bytes : undefined,
    aborted: finished ? undefined : true,
    ms: Math.round(seconds * 1000),
    ua: request.headers['user-agent'],
  }, 'request')
}
