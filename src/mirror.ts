import { hostname } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { BlobService, type FillRouter } from './cache/blobs.js'
import { Evictor } from './cache/eviction.js'
import { ManifestStore } from './cache/manifest-store.js'
import { ManifestService } from './cache/manifests.js'
import { ContentScopes } from './cache/scopes.js'
import type { Config } from './config/schema.js'
import { Slots } from './limits/slots.js'
import { Metrics } from './observability/metrics.js'
import { SendBuffers, type SendOptions } from './routes/send-blob.js'
import { SendQueueProbe } from './io/send-queue.js'
import type { BlobStore } from './storage/blob-store.js'
import { createBlobStore } from './storage/create.js'
import { LayoutError } from './storage/filesystem.js'
import { UpstreamClient } from './upstream/client.js'
import { RateLimitTracker } from './upstream/rate-limit.js'
import type { RequestListener } from './routes/served.js'
import { Router } from './upstream/router.js'

/** Everything a request needs, wired once from the configuration. */
export interface Mirror {
  readonly config: Config
  readonly log: Logger
  readonly store: BlobStore
  readonly router: Router
  readonly clients: ReadonlyMap<string, UpstreamClient>
  readonly manifests: ManifestService
  readonly blobs: BlobService
  /** Blob responses sending at once (limits.responses). */
  readonly responseSlots: Slots
  /** How blob bodies are written: shared buffers, the write timeout. */
  readonly send: SendOptions
  readonly metrics: Metrics
  readonly rateLimits: RateLimitTracker
  /** Present when storage.maxSize is set. */
  readonly evictor: Evictor
  /** Responses written outside fastify's reply (blobs sent from files and fills), for shutdown to wait on. */
  readonly transfers: Set<Promise<void>>
  /** Hear every manifest and blob request answered (insights). */
  readonly requestListeners: Set<RequestListener>
  /** True once the store has been initialised (for /readyz). */
  storeReady: boolean
  /** Writes what must survive (access times) and closes upstream connections once their requests end. */
  close(): Promise<void>
  /** Destroys upstream connections now, whatever runs on them (shutdown past its deadline). */
  destroyUpstreams(): void
}

export interface MirrorOptions {
  /** Overrides the store the config names (tests). */
  readonly store?: BlobStore
  readonly metrics?: Metrics
  /** Owners for fills, when replicas share the fetching (src/cluster). */
  readonly router?: FillRouter
}

/** Builds the mirror's services. The store is not initialised yet: see initStore. */
export async function createMirror(config: Config, log: Logger, options: MirrorOptions = {}): Promise<Mirror> {
  const metrics = options.metrics ?? new Metrics()
  const store = options.store ?? (await createBlobStore(config.storage, log))
  // Without a quota the evictor still tracks sizes, so the cache size is always exported.
  const maxSize = config.storage.maxSize
  const evictor = new Evictor(store, {
    maxSize: maxSize ?? Number.POSITIVE_INFINITY,
    evict: maxSize !== undefined && config.storage.evict,
    log,
    metrics,
    instance: `${hostname()}-${config.listen.port}`,
  })
  const rateLimits = new RateLimitTracker({ backoffMs: config.cache.rateLimitBackoffMs, log })
  const clients = new Map<string, UpstreamClient>()
  for (const [name, upstream] of config.upstreams) {
    clients.set(name, new UpstreamClient(upstream, {
      connectTimeoutMs: config.timeouts.connectMs,
      readTimeoutMs: config.timeouts.readMs,
      userAgent: 'stevedore/0.1',
      onResponse: ({ method, status, headers, seconds }) => {
        metrics.upstreamRequests.inc({ upstream: name, method, status: String(status) })
        metrics.upstreamLatency.observe({ upstream: name, status: String(status) }, seconds)
        // Upstreams with the same URL are one registry: they share its limits.
        rateLimits.observe(upstream.url.origin, status, headers)
        const remaining = rateLimits.remaining(upstream.url.origin)
        if (remaining !== undefined) metrics.rateLimitRemaining.set({ upstream: name }, remaining)
      },
      onError: (reason) => metrics.upstreamErrors.inc({ upstream: name, reason }),
      refusal: () => (rateLimits.refusedForMs(upstream.url.origin) > 0 ? rateLimits.refusal(name, upstream.url.origin) : undefined),
      onRetry: ({ attempt, delayMs, reason }) => {
        metrics.upstreamRetries.inc({ upstream: name, reason: reason.startsWith('HTTP ') ? reason.replace(' ', '_') : reason })
        log.info({ upstream: name, attempt, delayMs, reason }, 'upstream request failed; retrying')
      },
    }))
  }
  const scopes = new ContentScopes(store, log)
  const manifestStore = new ManifestStore(evictor.track(store), config.cache.memoryBytes, (key, bytes) => evictor.onAccess(key, bytes))
  const manifests = new ManifestService(manifestStore, {
    policy: config.cache,
    log,
    scopes,
    getsPaused: (upstream) => {
      const origin = config.upstreams.get(upstream)?.url.origin
      return origin !== undefined && rateLimits.getsPaused(origin)
    },
  })
  const { limits } = config
  const fillSlots = new Slots({
    what: 'blob fills',
    key: 'limits.fills',
    capacity: limits.fills,
    reservedForLive: limits.fillsReservedForPulls,
    queue: limits.fillQueue,
    timeoutMs: limits.queueTimeoutMs,
  })
  const responseSlots = new Slots({ what: 'blob responses', key: 'limits.responses', capacity: limits.responses, queue: limits.responseQueue, timeoutMs: limits.queueTimeoutMs })
  const blobs = new BlobService(store, {
    ...(config.timeouts.fillMs !== undefined ? { maxFillMs: config.timeouts.fillMs } : {}),
    spoolDir: config.storage.backend.kind === 's3' ? config.storage.backend.spoolDir : join(config.storage.backend.root, 'tmp'),
    log,
    fillSlots,
    scopes,
    onAccess: (digest: string, size: number) => evictor.onAccess(digest, size),
    pin: (digest: string) => evictor.pin(digest),
    ...(options.router !== undefined ? { router: options.router } : {}),
    events: {
      onUpstreamBytes: (n) => metrics.upstreamBytes.inc(n),
      onEnd: (fill, failure) => {
        metrics.fills.inc({ outcome: fill.stored ? 'published' : 'failed' })
        if (failure !== undefined) metrics.upstreamErrors.inc({ upstream: fill.upstream, reason: failure })
      },
    },
  })
  return {
    config,
    log,
    store,
    router: new Router(config.upstreams, config.defaultUpstream),
    clients,
    manifests,
    blobs,
    responseSlots,
    send: { buffers: new SendBuffers(limits.sendBuffers), writeTimeoutMs: limits.writeTimeoutMs, sendQueue: new SendQueueProbe(Math.min(1000, limits.writeTimeoutMs / 8)) },
    metrics,
    rateLimits,
    evictor,
    transfers: new Set(),
    requestListeners: new Set(),
    storeReady: false,
    async close() {
      await evictor.stop()
      await Promise.all([...clients.values()].map((c) => c.close()))
    },
    destroyUpstreams() {
      for (const c of clients.values()) c.destroy()
    },
  }
}

/**
 * Initialises the store, then starts eviction. A store that cannot be reached
 * yet (S3 down, a bucket not created yet) is retried in the background while
 * /readyz and /v2/ answer 503; a store that refuses (a layout version we do
 * not read) stops start-up.
 */
export async function initStore(mirror: Mirror, retryMs = 2000): Promise<void> {
  const { log, store } = mirror
  const attempt = async (): Promise<boolean> => {
    try {
      await store.init()
    } catch (err) {
      if (err instanceof LayoutError) throw err
      log.error({ storage: store.kind, err }, `storage not reachable: ${(err as Error).message}; retrying every ${retryMs / 1000} s, not ready until then`)
      return false
    }
    mirror.storeReady = true
    // Not awaited: listing a large bucket must not hold up serving; eviction waits for it.
    mirror.evictor.start().catch((err: unknown) => log.error({ err }, 'eviction: could not list the store'))
    return true
  }
  if (await attempt()) return
  const retry = (): void => {
    const timer = setTimeout(() => {
      attempt().then(
        (ok) => {
          if (ok) log.info({ storage: store.kind }, 'storage reachable: ready')
          else retry()
        },
        (err: unknown) => {
          log.fatal({ err }, 'storage refused: stopping')
          process.kill(process.pid, 'SIGTERM')
        },
      )
    }, retryMs)
    timer.unref()
  }
  retry()
}
