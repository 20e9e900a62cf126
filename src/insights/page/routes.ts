import type { FastifyInstance } from 'fastify'
import { RegistryError } from '../../oci/errors.js'
import type { InsightsView } from '../types.js'
import { TIMELINE_MINUTES } from '../timeline.js'
import { assetUrl, loadAssets, sendAsset } from './assets.js'
import { renderPage } from './render.js'

export interface StatusPageOptions {
  /** Seconds between the page's refreshes, unless the URL's `?refresh=` says otherwise; default 10. */
  readonly refreshSeconds?: number
  /** Minutes of pull times the chart shows; default 360 (6 hours). */
  readonly timelineMinutes?: number
  /** Rows of the top images table; default 10. */
  readonly topImages?: number
  /** Rows of the recent pulls table; default 20. */
  readonly recentPulls?: number
}

/** The bounds of `?refresh=`: at least a second apart, at most an hour. */
export const REFRESH_BOUNDS = { min: 1, max: 3600 } as const

const PAGE_HEADERS = {
  // Live figures: never from a cache.
  'cache-control': 'no-store',
  // Image names come from clients; should one slip past escaping, it still cannot run or load anything.
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
}

function whole(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  const v = value ?? fallback
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`statusPage: ${name} must be a whole number from ${min} to ${max}, not ${v}`)
  return v
}

/** `?refresh=N`: seconds between refreshes; anything but a whole number in bounds is the client's 400. */
export function refreshFromQuery(query: unknown, fallback: number): number {
  const raw: unknown = query !== null && typeof query === 'object' && Object.hasOwn(query, 'refresh') ? (query as Record<string, unknown>)['refresh'] : undefined
  if (raw === undefined || raw === '') return fallback
  const n = typeof raw === 'string' && /^[0-9]{1,4}$/.test(raw) ? Number(raw) : Number.NaN
  if (!(n >= REFRESH_BOUNDS.min && n <= REFRESH_BOUNDS.max)) {
    const value = Array.isArray(raw) ? raw.map(String).join(',') : String(raw)
    throw new RegistryError('UNSUPPORTED', `query parameter refresh is not a whole number of seconds from ${REFRESH_BOUNDS.min} to ${REFRESH_BOUNDS.max}`, {
      status: 400,
      detail: { parameter: 'refresh', value: value.slice(0, 256) },
    })
  }
  return n
}

/**
 * The status page at `/` and its files under `/ui/`, for buildApp's `pages`:
 * server-rendered from the view, then refreshed by ui/status.js from the
 * insights API (which must be served beside it, under /api/v1/).
 */
export function statusPage(view: InsightsView, options: StatusPageOptions = {}): (app: FastifyInstance) => void {
  const refreshSeconds = whole('refreshSeconds', options.refreshSeconds, 10, REFRESH_BOUNDS.min, REFRESH_BOUNDS.max)
  const timelineMinutes = whole('timelineMinutes', options.timelineMinutes, 360, 1, TIMELINE_MINUTES)
  const topImages = whole('topImages', options.topImages, 10, 1, 1000)
  const recentPulls = whole('recentPulls', options.recentPulls, 20, 1, 1000)
  const assets = loadAssets()
  const links = Object.fromEntries(assets.map((a) => [a.name, assetUrl(a)]))

  return (app) => {
    app.get('/', async (request, reply) => {
      request.stevedore.kind = 'page'
      const refresh = refreshFromQuery(request.query, refreshSeconds)
      const summary = await view.summary()
      const page = renderPage({
        summary,
        images: view.images({ limit: topImages }).images,
        pulls: view.pulls({ limit: recentPulls }).pulls,
        timeline: view.timeline({ minutes: timelineMinutes }).minutes,
      }, { refreshSeconds: refresh, timelineMinutes, topImages, recentPulls, assets: links })
      return reply.headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(page)
    })
    for (const asset of assets) {
      app.get(`/ui/${asset.name}`, async (request, reply) => {
        request.stevedore.kind = 'page'
        return sendAsset(request, reply, asset)
      })
    }
  }
}
