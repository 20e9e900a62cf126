import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify'
import { RegistryError } from '../oci/errors.js'

// A prefetch of the largest allowed job is a few hundred KiB of JSON.
export const API_BODY_LIMIT = 512 * 1024

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>

export interface ApiRoute {
  readonly url: string
  readonly GET?: Handler
  readonly POST?: { readonly handler: Handler; readonly options?: RouteShorthandOptions }
}

const OTHER_METHODS = ['HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const

/**
 * Routes under /api/v1 in their own fastify context: JSON bodies (bounded),
 * and a 405 naming the allowed methods for any other. Errors take the same
 * path as /v2/'s: the spec's JSON error body.
 */
export function registerApi(app: FastifyInstance, routes: readonly ApiRoute[]): void {
  void app.register(async (api) => {
    api.removeAllContentTypeParsers()
    api.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: API_BODY_LIMIT }, api.getDefaultJsonParser('error', 'error'))
    for (const route of routes) {
      const allowed = [route.GET !== undefined ? 'GET' : undefined, route.POST !== undefined ? 'POST' : undefined].filter((m) => m !== undefined)
      if (route.GET !== undefined) api.get(route.url, route.GET)
      if (route.POST !== undefined) api.post(route.url, { bodyLimit: API_BODY_LIMIT, ...route.POST.options }, route.POST.handler)
      const others = [...OTHER_METHODS, ...(route.GET === undefined ? ['GET'] : []), ...(route.POST === undefined ? ['POST'] : [])]
      api.route({
        method: others,
        url: route.url,
        handler: async () => {
          throw new RegistryError('UNSUPPORTED', 'method not allowed', { status: 405, headers: { allow: allowed.join(', ') } })
        },
      })
    }
  }, { prefix: '/api/v1' })
}
