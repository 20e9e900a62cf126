// What pulls cost: served requests in, pulls, per-image aggregates, a
// timeline and totals out, for the API, the status page, the metrics and
// the persisted history. Every structure here is bounded (see InsightsConfig).
import type { Logger } from 'pino'
import type { InsightsConfig } from '../config/schema.js'
import type { Metrics } from '../observability/metrics.js'
import type { BlobStarted, RequestListener, ServedRequest } from '../routes/served.js'
import { ImageTable, imageName, type ImageIdentity, type ImageState } from './images.js'
import { PullRing } from './ring.js'
import { roundSeconds } from './samples.js'
import { PullSessions, type EndedSession } from './sessions.js'
import { Timeline, type MinuteBucket } from './timeline.js'
import { countRequest, emptyTotals, type Totals } from './totals.js'
import type { ImagesResponse, InsightsView, KubeletPull, LayersResponse, PullCache, PullRecord, PullsResponse, Summary, TimelineResponse, UpstreamHealth } from './types.js'

/** What the summary needs from the rest of the mirror, read when asked. */
export interface MirrorState {
  readonly fillsInProgress: number
  readonly cacheSize: number
  readonly quota: number | undefined
  readonly upstreams: readonly UpstreamHealth[]
}

export interface InsightsDeps {
  readonly instance: string
  readonly config: InsightsConfig
  readonly metrics: Metrics
  readonly log: Logger
  /** The Kubernetes Node with this InternalIP, when pre-warming knows one. */
  nodeOf(address: string): string | undefined
  /** `os/architecture[/variant]` from a stored image config; undefined when it is not stored or not readable. */
  platformOfConfig(digest: string): Promise<string | undefined>
  /** Where a pull of this image reference goes; undefined when the mirror does not serve it. */
  route(image: string): ImageIdentity | undefined
  mirrorState(): Promise<MirrorState>
  readonly now?: () => number
}

/** The state that survives a restart. */
export interface InsightsHistory {
  readonly since: number
  readonly seq: number
  readonly totals: Totals
  /** Oldest first. */
  readonly pulls: readonly PullRecord[]
  readonly images: readonly ImageState[]
  readonly timeline: readonly MinuteBucket[]
}

export class Insights implements RequestListener, InsightsView {
  readonly instance: string
  private readonly sessions: PullSessions
  private readonly ring: PullRing
  private readonly table: ImageTable
  private readonly perMinute = new Timeline()
  private totals: Totals = emptyTotals()
  private since: number
  private seq = 0
  /** Something changed since the last save. */
  dirty = false
  private readonly now: () => number
  private readonly sweeper: NodeJS.Timeout
  /** Pull records waiting for their platform to be read from the store. */
  private readonly pending = new Set<Promise<void>>()

  constructor(private readonly deps: InsightsDeps) {
    this.instance = deps.instance
    this.now = deps.now ?? Date.now
    this.since = this.now()
    this.ring = new PullRing(deps.config.recentPulls)
    this.table = new ImageTable(deps.config.maxImages)
    this.sessions = new PullSessions({ idleMs: deps.config.sessionIdle, maxClients: deps.config.maxClients, onEnd: (s) => this.ended(s), now: this.now })
    this.sweeper = setInterval(() => this.sessions.sweep(), Math.min(1000, Math.max(50, deps.config.sessionIdle / 4)))
    this.sweeper.unref()
  }

  blobStarted(started: BlobStarted): void {
    this.sessions.blobStarted(started)
  }

  served(r: ServedRequest): void {
    const { savedBytes, savedRequest } = countRequest(this.totals, r)
    if (savedBytes > 0) this.deps.metrics.upstreamBytesSaved.inc(savedBytes)
    if (savedRequest) this.deps.metrics.upstreamRequestsSaved.inc()
    this.dirty = true
    this.sessions.served(r)
  }

  kubeletPulled(pull: KubeletPull): void {
    const id = this.deps.route(pull.image)
    if (id === undefined) return
    this.table.kubeletPulled(id, pull)
    this.dirty = true
  }

  /** Ends the open sessions (shutdown) and waits for their records. */
  async flush(): Promise<void> {
    this.sessions.endAll()
    await Promise.all([...this.pending])
  }

  stop(): void {
    clearInterval(this.sweeper)
  }

  /** Takes over a saved history (at start-up, before any request). */
  restore(history: InsightsHistory): void {
    this.since = history.since
    this.seq = history.seq
    this.totals = { ...history.totals }
    this.ring.restore(history.pulls)
    this.table.restore(history.images)
    this.perMinute.restore(history.timeline)
  }

  history(): InsightsHistory {
    return { since: this.since, seq: this.seq, totals: { ...this.totals }, pulls: this.ring.newestFirst().reverse(), images: [...this.table.states()], timeline: this.perMinute.snapshot() }
  }

  async summary(): Promise<Summary> {
    const state = await this.deps.mirrorState()
    const t = this.totals
    const ratio = (a: number, b: number): number | null => (b > 0 ? Math.round((a / b) * 10_000) / 10_000 : null)
    return {
      instance: this.instance,
      since: new Date(this.since).toISOString(),
      now: new Date(this.now()).toISOString(),
      requests: { total: t.requests, hits: t.hits, hitRatio: ratio(t.hits, t.requests) },
      bytes: { served: t.bytesServed, fromCache: t.bytesFromCache, fromUpstream: t.bytesFromUpstream, hitRatio: ratio(t.bytesFromCache, t.bytesServed) },
      upstreamSaved: { bytes: t.savedBytes, requests: t.savedRequests },
      pulls: { total: t.pulls, cold: t.cold, warm: t.warm, partial: t.partial, failed: t.failed, resolves: t.resolves },
      fillsInProgress: state.fillsInProgress,
      cache: { size: state.cacheSize, quota: state.quota ?? null, usedRatio: state.quota !== undefined ? ratio(state.cacheSize, state.quota) : null },
      upstreams: state.upstreams,
    }
  }

  pulls(query: { readonly limit: number; readonly image?: string }): PullsResponse {
    const { image } = query
    const all = this.ring.newestFirst()
    const matching = image === undefined ? all : all.filter((p) => p.image === image || `${p.upstream}/${p.repository}` === image)
    return { instance: this.instance, pulls: matching.slice(0, query.limit) }
  }

  images(query: { readonly limit: number }): ImagesResponse {
    return { instance: this.instance, images: this.table.top(query.limit) }
  }

  layers(query: { readonly limit: number }): LayersResponse {
    return { instance: this.instance, layers: this.table.largestLayers(query.limit) }
  }

  timeline(query: { readonly minutes: number }): TimelineResponse {
    return { instance: this.instance, minutes: this.perMinute.points(query.minutes, this.now()) }
  }

  private ended(s: EndedSession): void {
    this.dirty = true
    // Pulled by digest: named by the digest the client asked for (the index's), as the pod spec names it.
    const id: ImageIdentity = { image: imageName(s.upstream, s.repository, s.tag, s.index ?? s.digest), upstream: s.upstream, repository: s.repository, tag: s.tag }
    if (s.blobs.length === 0) {
      this.totals.resolves++
      this.deps.metrics.imageResolves.inc({ upstream: s.upstream })
      this.table.resolved(id, s.digest, s.layers, s.config?.size ?? 0, this.now())
      return
    }
    const done = this.pullOf(s, id).then(
      (record) => this.recordPull(record, s),
      (err: unknown) => this.deps.log.warn({ err }, 'insights: could not record a pull'),
    ).finally(() => this.pending.delete(done))
    this.pending.add(done)
  }

  private async pullOf(s: EndedSession, id: ImageIdentity): Promise<PullRecord> {
    const layerDigests = new Set((s.layers ?? []).map((l) => l.digest))
    const layerBlobs = s.blobs.filter((b) => layerDigests.has(b.digest))
    const judged = layerBlobs.length > 0 ? layerBlobs : s.blobs
    const coldCount = judged.filter((b) => b.cold).length
    const cache: PullCache = coldCount === 0 ? 'warm' : coldCount === judged.length ? 'cold' : 'partial'
    const endedAt = Math.max(...s.blobs.map((b) => b.endedAt))
    const firstByte = Math.min(...layerBlobs.map((b) => b.firstByteAt ?? Number.POSITIVE_INFINITY))
    const platform = s.platform ?? (s.config !== undefined ? await this.deps.platformOfConfig(s.config.digest) : undefined)
    const node = this.deps.nodeOf(s.address)
    const bytes = s.blobs.reduce((n, b) => n + b.bytes, 0)
    const fromUpstream = s.blobs.filter((b) => b.cold).reduce((n, b) => n + b.bytes, 0)
    return {
      id: `${this.instance}-${++this.seq}`,
      image: id.image,
      upstream: s.upstream,
      repository: s.repository,
      ...(s.tag !== undefined ? { tag: s.tag } : {}),
      digest: s.digest,
      ...(s.index !== undefined ? { index: s.index } : {}),
      ...(platform !== undefined ? { platform } : {}),
      client: { address: s.address, ...(s.userAgent !== undefined ? { userAgent: s.userAgent } : {}), ...(node !== undefined ? { node } : {}) },
      startedAt: new Date(s.startedAt).toISOString(),
      endedAt: new Date(endedAt).toISOString(),
      seconds: roundSeconds((endedAt - s.startedAt) / 1000),
      ...(Number.isFinite(firstByte) ? { firstLayerByteSeconds: roundSeconds((firstByte - s.startedAt) / 1000) } : {}),
      layers: { total: s.layers?.length ?? 0, fetched: layerBlobs.length },
      bytes,
      bytesFromCache: bytes - fromUpstream,
      bytesFromUpstream: fromUpstream,
      cache,
      result: s.blobs.some((b) => b.failed) ? 'failed' : 'ok',
      ...(s.blobs.some((b) => b.redirect) ? { redirected: true } : {}),
    }
  }

  private recordPull(p: PullRecord, s: EndedSession): void {
    this.ring.push(p)
    const endedAt = Date.parse(p.endedAt)
    this.table.pulled(p, s.layers ?? [], s.config?.size ?? 0, endedAt)
    // A redirected pull's time ends when its last download began, not when it ended: untimed.
    if (p.redirected !== true) this.perMinute.add(p, endedAt)
    const t = this.totals
    t.pulls++
    t[p.cache]++
    if (p.result === 'failed') t.failed++
    this.deps.metrics.imagePulls.inc({ upstream: p.upstream, cache: p.cache })
    if (p.redirected !== true) this.deps.metrics.imagePullDuration.observe({ upstream: p.upstream, cache: p.cache }, p.seconds)
    this.deps.log.info({ image: p.image, digest: p.digest, platform: p.platform, client: p.client.address, node: p.client.node, cache: p.cache, result: p.result, seconds: p.seconds, layers: p.layers, bytes: p.bytes }, 'pull')
    this.dirty = true
  }
}
