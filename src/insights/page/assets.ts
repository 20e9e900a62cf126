// The status page's static files: uPlot from its package, the page's own
// script, styles and icon from the package's ui/ folder. Read once, when the
// page is set up (a missing file stops start-up, not a browser later), and
// served from memory.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { FastifyReply, FastifyRequest } from 'fastify'

export interface Asset {
  /** Its name under /ui/. */
  readonly name: string
  readonly type: string
  readonly body: Buffer
  /** The first 12 hex digits of its sha256: the `?v=` of the page's links, and the ETag. */
  readonly version: string
}

const JS = 'text/javascript; charset=utf-8'
const CSS = 'text/css; charset=utf-8'

// From dist/insights/page/ (and src/insights/page/ under tsx): the package root is three up.
const UI = new URL('../../../ui/', import.meta.url)

const require = createRequire(import.meta.url)

const SOURCES: ReadonlyArray<{ readonly name: string; readonly type: string; readonly path: () => string | URL }> = [
  { name: 'uplot.min.js', type: JS, path: () => require.resolve('uplot/dist/uPlot.iife.min.js') },
  { name: 'uplot.min.css', type: CSS, path: () => require.resolve('uplot/dist/uPlot.min.css') },
  { name: 'status.js', type: JS, path: () => new URL('status.js', UI) },
  { name: 'view.js', type: JS, path: () => new URL('view.js', UI) },
  { name: 'status.css', type: CSS, path: () => new URL('status.css', UI) },
  { name: 'favicon.svg', type: 'image/svg+xml', path: () => new URL('favicon.svg', UI) },
]

/** Every asset the page links, read now. */
export function loadAssets(): readonly Asset[] {
  return SOURCES.map(({ name, type, path }) => {
    const body = readFileSync(path())
    return { name, type, body, version: createHash('sha256').update(body).digest('hex').slice(0, 12) }
  })
}

/** The page's link to an asset: relative (the page may sit behind a path prefix), versioned by content. */
export function assetUrl(asset: Asset): string {
  return `ui/${asset.name}?v=${asset.version}`
}

/**
 * An asset, cached by the browser for a year when asked for by the page's
 * versioned link (a new build links a new version), revalidated by ETag
 * otherwise (the script's own imports carry no version).
 */
export function sendAsset(request: FastifyRequest, reply: FastifyReply, asset: Asset): FastifyReply {
  const etag = `"${asset.version}"`
  const query = request.query as Record<string, unknown> | null
  const versioned = query !== null && typeof query === 'object' && query['v'] === asset.version
  void reply.headers({
    'cache-control': versioned ? 'max-age=31536000, immutable' : 'no-cache',
    etag,
    'x-content-type-options': 'nosniff',
  })
  const match = request.headers['if-none-match']
  if (match !== undefined && match.split(',').some((tag) => tag.trim() === etag || tag.trim() === `W/${etag}`)) return reply.code(304).send()
  return reply.type(asset.type).send(asset.body)
}
