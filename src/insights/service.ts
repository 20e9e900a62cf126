import { hostname } from 'node:os'
import { LRUCache } from 'lru-cache'
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
import type { BlobStarted, RequestListener, ServedRequest } from '../routes/served.js'

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
 * reachable; the requests answered meanwhile are held and heard after it.
 */
export function startInsights(mirror: Mirror, wiring: InsightsWiring): RunningInsights {
  const { config, log, metrics } = mirror
  const instance = config.insights.instance ?? (config.storage.backend.kind === 'filesystem' ? 'local' : hostname())
  const platforms = new LRUCache<string, string>({ max: 4096 })
  const insights = new Insights({
    instance,
    config: config.insights,
    metrics,
    log,
    nodeOf: (address) => wiring.nodeOf(address),
    platformOfConfig: async (digest) => {
      // A config never changes: read each once, not once per node pulling it.
      const known = platforms.get(digest)
      if (known !== undefined) return known
      const bytes = await readSmallBlob(mirror.store, digest, MAX_CONFIG_BYTES).catch(() => undefined)
      const platform = bytes === undefined ? undefined : platformOfConfig(bytes)
      if (platform !== undefined) platforms.set(digest, platform)
      return platform
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
  // Requests answered before the history is read are held (bounded) and heard after it.
  const early = new EarlyRequests(insights)
  mirror.requestListeners.add(early)
  const started = (async () => {
    while (!mirror.storeReady && !stopped) await new Promise((resolve) => setTimeout(resolve, 200).unref())
    if (stopped) return
    const history = await loadHistory(mirror.store, instance, log, () => stopped)
    if (history !== undefined) {
      try {
        insights.restore(history)
        log.info({ instance, pulls: history.pulls.length, images: history.images.length }, 'insights: history restored')
      } catch (err) {
        log.warn({ err, instance }, 'insights: the saved history could not be restored; starting a new one')
      }
    }
    mirror.requestListeners.delete(early)
    mirror.requestListeners.add(insights)
    early.replay()
    if (early.dropped > 0) log.warn({ dropped: early.dropped }, 'insights: requests answered before the history was read were not all counted')
    writer = new HistoryWriter(mirror.store, insights, config.insights.persistInterval, log)
  })()
  return {
    insights,
    routes: insightsRoutes(insights, config.insights),
    stop: async () => {
      stopped = true
      await started
      mirror.requestListeners.delete(early)
      mirror.requestListeners.delete(insights)
      insights.stop()
      await writer?.stop()
    },
  }
}

// A start-up's worth of requests; the store is usually read in milliseconds.
const MAX_EARLY = 10_000

/** Holds the requests answered before the history is read, so restoring it does not erase them. */
class EarlyRequests implements RequestListener {
  private readonly held: Array<{ started: BlobStarted } | { served: ServedRequest }> = []
  dropped = 0

  constructor(private readonly to: RequestListener) {}

  blobStarted(started: BlobStarted): void {
    this.hold({ started })
  }

  served(served: ServedRequest): void {
    this.hold({ served })
  }

  replay(): void {
    for (const e of this.held.splice(0)) {
      if ('started' in e) this.to.blobStarted(e.started)
      else this.to.served(e.served)
    }
  }

  private hold(e: { started: BlobStarted } | { served: ServedRequest }): void {
    if (this.held.length < MAX_EARLY) this.held.push(e)
    else this.dropped++
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
