import { hostname } from 'node:os'
import type { ApiRoute } from '../api/plugin.js'
import type { Mirror } from '../mirror.js'
import { platformOfConfig } from '../oci/image-manifest.js'
import { parseImageReference } from '../oci/reference.js'
import { readSmallBlob } from '../storage/small-blob.js'
import { imageName } from './images.js'
import { Insights, type MirrorState } from './insights.js'
import { HistoryWriter, loadHistory } from './persist.js'
import { insightsRoutes } from './routes.js'
import type { UpstreamHealth } from './types.js'

const MAX_CONFIG_BYTES = 1024 * 1024

export interface RunningInsights {
  readonly insights: Insights
  readonly routes: ApiRoute[]
  /** Ends the open sessions and saves the history one last time. */
  stop(): Promise<void>
}

export interface InsightsWiring {
  /** The Node with this InternalIP (pre-warming's view of the cluster), if any. */
  nodeOf(address: string): string | undefined
}

/**
 * Insights over a mirror's requests. The history is read once the store is
 * reachable, and only then are requests heard: before that, /v2/ answers
 * 503 and there are no pulls to miss.
 */
export function startInsights(mirror: Mirror, wiring: InsightsWiring): RunningInsights {
  const { config, log, metrics } = mirror
  const instance = config.insights.instance ?? (config.storage.backend.kind === 'filesystem' ? 'local' : hostname())
  const insights = new Insights({
    instance,
    config: config.insights,
    metrics,
    log,
    nodeOf: (address) => wiring.nodeOf(address),
    platformOfConfig: async (digest) => {
      const bytes = await readSmallBlob(mirror.store, digest, MAX_CONFIG_BYTES).catch(() => undefined)
      return bytes === undefined ? undefined : platformOfConfig(bytes)
    },
    route: (image) => {
      const ref = parseImageReference(image)
      if (ref === undefined) return undefined
      try {
        const route = mirror.router.route(ref.repository, ref.registry)
        const upstream = route.upstream.name
        return { image: imageName(upstream, route.repository, ref.tag, ref.digest ?? ''), upstream, repository: route.repository, tag: ref.tag }
      } catch {
        return undefined
      }
    },
    mirrorState: () => mirrorState(mirror),
  })
  let writer: HistoryWriter | undefined
  let stopped = false
  const started = (async () => {
    while (!mirror.storeReady && !stopped) await new Promise((resolve) => setTimeout(resolve, 500).unref())
    if (stopped) return
    const history = await loadHistory(mirror.store, instance, log)
    if (history !== undefined) {
      insights.restore(history)
      log.info({ instance, pulls: history.pulls.length, images: history.images.length }, 'insights: history restored')
    }
    mirror.requestListeners.add(insights)
    writer = new HistoryWriter(mirror.store, insights, config.insights.persistInterval, log)
  })()
  return {
    insights,
    routes: insightsRoutes(insights, config.insights),
    stop: async () => {
      stopped = true
      await started
      mirror.requestListeners.delete(insights)
      insights.stop()
      await writer?.stop()
    },
  }
}

async function mirrorState(mirror: Mirror): Promise<MirrorState> {
  const { config, metrics, rateLimits } = mirror
  const requests = (await metrics.upstreamRequests.get()).values
  const errors = (await metrics.upstreamErrors.get()).values
  const upstreams: UpstreamHealth[] = [...config.upstreams.values()].map((u) => {
    const mine = (v: { labels: Record<string, unknown> }): boolean => v.labels['upstream'] === u.name
    const failed = requests.filter((v) => mine(v) && Number(v.labels['status']) >= 500).reduce((n, v) => n + v.value, 0)
    return {
      name: u.name,
      url: u.url.origin,
      requests: requests.filter(mine).reduce((n, v) => n + v.value, 0),
      errors: failed + errors.filter(mine).reduce((n, v) => n + v.value, 0),
      rateLimitRemaining: rateLimits.remaining(u.url.origin) ?? null,
      pausedSeconds: Math.ceil(rateLimits.refusedForMs(u.url.origin) / 1000),
    }
  })
  return { fillsInProgress: mirror.blobs.inflight, cacheSize: mirror.evictor.size, quota: config.storage.maxSize, upstreams }
}
