import type { ApiRoute } from '../api/plugin.js'
import { invalidParam, singleParam } from '../routes/query.js'
import type { InsightsView } from './types.js'
import { TIMELINE_MINUTES } from './timeline.js'

/**
 * A whole number from 1, or the default when the parameter is absent. Above
 * what is kept it means "all of them": the caller need not know this
 * replica's bounds (`stevedore report` asks every replica for everything).
 */
function count(query: unknown, name: string, fallback: number, max: number): number {
  const raw = singleParam(query, name)
  if (raw === undefined || raw === '') return Math.min(fallback, max)
  const n = /^[0-9]{1,9}$/.test(raw) ? Number(raw) : Number.NaN
  if (!(n >= 1)) throw invalidParam(name, 'is not a whole number from 1', raw)
  return Math.min(n, max)
}

/** The insights API: `GET /api/v1/pulls`, `images`, `layers`, `summary`, `timeline` (shapes in types.ts). */
export function insightsRoutes(view: InsightsView, limits: { readonly recentPulls: number; readonly maxImages: number }): ApiRoute[] {
  return [
    {
      url: '/pulls',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        const limit = count(request.query, 'limit', 50, limits.recentPulls)
        const image = singleParam(request.query, 'image')
        if (image !== undefined && image.length > 1024) throw invalidParam('image', 'is longer than 1024 characters', image)
        return reply.send(view.pulls({ limit, ...(image !== undefined && image !== '' ? { image } : {}) }))
      },
    },
    {
      url: '/images',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        return reply.send(view.images({ limit: count(request.query, 'limit', 100, limits.maxImages) }))
      },
    },
    {
      url: '/layers',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        return reply.send(view.layers({ limit: count(request.query, 'limit', 50, 10_000) }))
      },
    },
    {
      url: '/summary',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        return reply.send(await view.summary())
      },
    },
    {
      url: '/timeline',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        return reply.send(view.timeline({ minutes: count(request.query, 'minutes', 360, TIMELINE_MINUTES) }))
      },
    },
  ]
}
