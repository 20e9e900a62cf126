// A stand-in InsightsView with fixture data built to the API's types, and
// the real app (buildApp, in this process) serving the status page and the
// insights API over it.
// Stand-in: the figures are made up, so tests can make them hostile, empty,
// or change them between two looks; tests of real pulls use a real mirror.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp } from '../../src/app.js'
import { ClientAuth } from '../../src/auth/client-auth.js'
import { validateConfig } from '../../src/config/schema.js'
import { statusPage, type StatusPageOptions } from '../../src/insights/page/routes.js'
import { insightsRoutes } from '../../src/insights/routes.js'
import type { ImageInsight, InsightsView, PullRecord, Summary, TimelinePoint } from '../../src/insights/types.js'
import { createMirror } from '../../src/mirror.js'
import { createLogger } from '../../src/observability/logger.js'
import { tempDir } from './tools.js'

export interface StandInData {
  summary: Summary
  images: ImageInsight[]
  pulls: PullRecord[]
  timeline: TimelinePoint[]
}

/** An image name no registry would accept, as a hostile client could still get one shown (defence in depth). */
export const HOSTILE_IMAGE = `127.0.0.1:5000/evil/<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">:1`
/** A user agent is the client's to choose: this one tries to close the title attribute it is shown in. */
export const HOSTILE_USER_AGENT = `curl/8 "><script>window.__pwned=3</script>`

const iso = (ms: number): string => new Date(ms).toISOString()
const MIB = 1024 * 1024

function durations(samples: number[]): ImageInsight['coldSeconds'] {
  if (samples.length === 0) return { count: 0, samples: [] }
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number
  return { count: samples.length, p50: at(0.5), p95: at(0.95), max: sorted.at(-1) as number, samples }
}

function image(name: string, opts: { pulls: number; cold: number[]; warm: number[]; layers: number[]; unique: number; lastPulled: string }): ImageInsight {
  const [ref, tag] = name.split(/:(?=[^:/]+$)/) as [string, string | undefined]
  const slash = ref.indexOf('/')
  const layers = opts.layers.map((size, i) => ({ digest: `sha256:${String(i).repeat(64).slice(0, 64)}`, size }))
  const largest = layers.reduce((a, b) => (b.size > a.size ? b : a))
  return {
    image: name,
    upstream: ref.slice(0, slash),
    repository: ref.slice(slash + 1),
    ...(tag !== undefined ? { tag } : {}),
    digest: `sha256:${'ab'.repeat(32)}`,
    platforms: ['linux/amd64'],
    pulls: opts.pulls,
    resolves: 3,
    cold: opts.cold.length,
    warm: opts.warm.length,
    partial: 0,
    failed: 0,
    coldSeconds: durations(opts.cold),
    warmSeconds: durations(opts.warm),
    size: opts.layers.reduce((a, b) => a + b, 0) + 1500,
    layerCount: layers.length,
    largestLayer: largest,
    uniqueBytes: opts.unique,
    layers,
    lastPulled: opts.lastPulled,
    pullSeconds: [...opts.cold, ...opts.warm].reduce((a, b) => a + b, 0),
  }
}

function pull(n: number, img: string, endedMs: number, opts: { seconds: number; cache: PullRecord['cache']; bytes: number; result?: PullRecord['result']; userAgent?: string; node?: string }): PullRecord {
  const [ref, tag] = img.split(/:(?=[^:/]+$)/) as [string, string | undefined]
  const slash = ref.indexOf('/')
  const fromUpstream = opts.cache === 'warm' ? 0 : opts.cache === 'cold' ? opts.bytes : Math.round(opts.bytes / 3)
  return {
    id: `stand-in-${n}`,
    image: img,
    upstream: ref.slice(0, slash),
    repository: ref.slice(slash + 1),
    ...(tag !== undefined ? { tag } : {}),
    digest: `sha256:${'cd'.repeat(32)}`,
    platform: 'linux/amd64',
    client: { address: `10.0.0.${n}`, userAgent: opts.userAgent ?? 'containerd/1.6.20~ds1', ...(opts.node !== undefined ? { node: opts.node } : {}) },
    startedAt: iso(endedMs - opts.seconds * 1000),
    endedAt: iso(endedMs),
    seconds: opts.seconds,
    firstLayerByteSeconds: Math.round(opts.seconds * 120) / 1000,
    layers: { total: 4, fetched: opts.cache === 'warm' ? 2 : 4 },
    bytes: opts.bytes,
    bytesFromCache: opts.bytes - fromUpstream,
    bytesFromUpstream: fromUpstream,
    cache: opts.cache,
    result: opts.result ?? 'ok',
  }
}

/** Six hours of minutes ending at `now`: a few pulls in some of them, as a quiet cluster has. */
function timeline(nowMs: number, minutes = 360): TimelinePoint[] {
  const start = Math.floor(nowMs / 60_000) * 60_000 - (minutes - 1) * 60_000
  const points: TimelinePoint[] = []
  for (let i = 0; i < minutes; i++) {
    // Deterministic: the same picture on every run.
    const busy = i % 17 === 3 || i % 29 === 11 || i > minutes - 6
    const cold = busy && i % 3 === 0 ? 1 + (i % 2) : 0
    const warm = busy ? 1 + (i % 4) : 0
    points.push({
      t: iso(start + i * 60_000),
      pulls: cold + warm,
      cold,
      warm,
      partial: 0,
      coldMeanSeconds: cold > 0 ? 6 + (i % 7) * 0.9 : null,
      warmMeanSeconds: warm > 0 ? 0.4 + (i % 5) * 0.15 : null,
      maxSeconds: cold > 0 ? 7 + (i % 7) : warm > 0 ? 1 + (i % 5) * 0.2 : null,
    })
  }
  return points
}

/** Figures of a mirror that has served a while; `hostile` adds an image and a client that try to inject markup. */
export function fixtureData(now = new Date(), opts: { hostile?: boolean } = {}): StandInData {
  const t = now.getTime()
  const images = [
    image('docker.io/library/postgres:16', { pulls: 41, cold: [14.2, 11.9, 12.4], warm: Array.from({ length: 38 }, (_, i) => 1.1 + (i % 5) * 0.1), layers: [29 * MIB, 95 * MIB, 4 * MIB, 1 * MIB], unique: 102 * MIB, lastPulled: iso(t - 95_000) }),
    image('ghcr.io/acme/api:2.14.1', { pulls: 63, cold: [8.1, 7.4], warm: Array.from({ length: 61 }, (_, i) => 0.6 + (i % 3) * 0.05), layers: [29 * MIB, 48 * MIB, 12 * MIB], unique: 60 * MIB, lastPulled: iso(t - 12_000) }),
    image('docker.io/library/nginx:1.27', { pulls: 22, cold: [3.3], warm: Array.from({ length: 21 }, () => 0.31), layers: [29 * MIB, 16 * MIB], unique: 16 * MIB, lastPulled: iso(t - 3_600_000) }),
  ]
  if (opts.hostile === true) images.push(image(HOSTILE_IMAGE, { pulls: 1, cold: [0.5], warm: [], layers: [1000], unique: 1000, lastPulled: iso(t - 30_000) }))
  images.sort((a, b) => b.pullSeconds - a.pullSeconds)
  const pulls = [
    pull(7, 'ghcr.io/acme/api:2.14.1', t - 12_000, { seconds: 0.62, cache: 'warm', bytes: 60 * MIB, node: 'node-a' }),
    pull(6, 'docker.io/library/postgres:16', t - 95_000, { seconds: 12.4, cache: 'cold', bytes: 129 * MIB, node: 'node-b' }),
    pull(5, 'docker.io/library/nginx:1.27', t - 240_000, { seconds: 2.05, cache: 'partial', bytes: 45 * MIB }),
    pull(4, 'ghcr.io/acme/api:2.14.1', t - 600_000, { seconds: 3.9, cache: 'cold', bytes: 89 * MIB, result: 'failed' }),
  ]
  if (opts.hostile === true) pulls.unshift(pull(8, HOSTILE_IMAGE, t - 30_000, { seconds: 0.5, cache: 'cold', bytes: 1000, userAgent: HOSTILE_USER_AGENT }))
  const served = 4_812_345_678
  const fromCache = 4_200_000_000
  return {
    summary: {
      instance: 'stevedore-0-5000',
      since: iso(t - 3 * 86_400_000),
      now: iso(t),
      requests: { total: 1325, hits: 1234, hitRatio: 1234 / 1325 },
      bytes: { served, fromCache, fromUpstream: served - fromCache, hitRatio: fromCache / served },
      upstreamSaved: { bytes: 3_900_000_000, requests: 1180 },
      pulls: { total: 212, cold: 31, warm: 170, partial: 6, failed: 5, resolves: 48 },
      fillsInProgress: 2,
      cache: { size: 18_400_000_000, quota: 50_000_000_000, usedRatio: 0.368 },
      upstreams: [
        { name: 'docker.io', url: 'https://registry-1.docker.io', requests: 420, errors: 3, rateLimitRemaining: 87, pausedSeconds: 0 },
        { name: 'ghcr.io', url: 'https://ghcr.io', requests: 96, errors: 0, rateLimitRemaining: null, pausedSeconds: 0 },
        { name: 'quay.io', url: 'https://quay.io', requests: 12, errors: 1, rateLimitRemaining: 0, pausedSeconds: 42 },
      ],
    },
    images,
    pulls,
    timeline: timeline(t),
  }
}

/** A mirror that has served nothing yet. */
export function emptyData(now = new Date()): StandInData {
  const t = iso(now.getTime())
  return {
    summary: {
      instance: 'stevedore-0-5000',
      since: t,
      now: t,
      requests: { total: 0, hits: 0, hitRatio: null },
      bytes: { served: 0, fromCache: 0, fromUpstream: 0, hitRatio: null },
      upstreamSaved: { bytes: 0, requests: 0 },
      pulls: { total: 0, cold: 0, warm: 0, partial: 0, failed: 0, resolves: 0 },
      fillsInProgress: 0,
      cache: { size: 0, quota: null, usedRatio: null },
      upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io', requests: 0, errors: 0, rateLimitRemaining: null, pausedSeconds: 0 }],
    },
    images: [],
    pulls: [],
    timeline: timeline(now.getTime()).map((p) => ({ ...p, pulls: 0, cold: 0, warm: 0, partial: 0, coldMeanSeconds: null, warmMeanSeconds: null, maxSeconds: null })),
  }
}

/** An InsightsView over `data`, which a test may replace or change at any time. */
export class StandInView implements InsightsView {
  readonly instance: string
  constructor(public data: StandInData) {
    this.instance = data.summary.instance
  }

  async summary(): Promise<Summary> {
    return this.data.summary
  }

  pulls(query: { readonly limit: number; readonly image?: string }): { instance: string; pulls: PullRecord[] } {
    const pulls = this.data.pulls.filter((p) => query.image === undefined || p.image === query.image || `${p.upstream}/${p.repository}` === query.image)
    return { instance: this.instance, pulls: pulls.slice(0, query.limit) }
  }

  images(query: { readonly limit: number }): { instance: string; images: ImageInsight[] } {
    return { instance: this.instance, images: this.data.images.slice(0, query.limit) }
  }

  layers(query: { readonly limit: number }): { instance: string; layers: Array<{ digest: string; size: number; images: string[] }> } {
    const layers = new Map<string, { digest: string; size: number; images: string[] }>()
    for (const img of this.data.images) {
      for (const l of img.layers) {
        const known = layers.get(l.digest) ?? { ...l, images: [] }
        known.images.push(img.image)
        layers.set(l.digest, known)
      }
    }
    return { instance: this.instance, layers: [...layers.values()].sort((a, b) => b.size - a.size).slice(0, query.limit) }
  }

  timeline(query: { readonly minutes: number }): { instance: string; minutes: TimelinePoint[] } {
    return { instance: this.instance, minutes: this.data.timeline.slice(-query.minutes) }
  }
}

export interface PageApp {
  readonly url: string
  readonly app: FastifyInstance
}

/**
 * The real app (buildApp over a real mirror object, in this process, on
 * 127.0.0.1) with the status page and the insights API over `view`;
 * with `auth`, client authentication on as `auth.htpasswd` configures it.
 */
export async function startPageApp(t: Test, view: InsightsView, opts: { auth?: { user: string; password: string }; page?: StatusPageOptions } = {}): Promise<PageApp> {
  const dir = await tempDir(t, 'stevedore-page')
  const config = validateConfig({ storage: { filesystem: { root: join(dir, 'cache') } }, upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } }, log: { level: 'silent' } }, { env: {} })
  const log = createLogger('silent')
  const mirror = await createMirror(config, log)
  let auth: ClientAuth | undefined
  if (opts.auth !== undefined) {
    const htpasswd = join(dir, 'htpasswd')
    await writeFile(htpasswd, `${opts.auth.user}:${bcrypt.hashSync(opts.auth.password, 4)}\n`)
    auth = new ClientAuth({ htpasswd, log, compare: (password, hash) => bcrypt.compare(password, hash) })
    await auth.start()
  }
  const app = buildApp(mirror, { ...(auth !== undefined ? { auth } : {}), api: insightsRoutes(view, { recentPulls: 1000, maxImages: 2000 }), pages: statusPage(view, opts.page) })
  t.teardown(async () => {
    await app.close()
    auth?.close()
    await mirror.close()
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { url: `http://127.0.0.1:${address.port}`, app }
}
