// Two replicas' insights, built to the API's types (src/insights/types.ts),
// for the report's merge, advice, render and command tests. The figures are
// chosen so that every merge rule shows:
// - docker.io/library/app:1 is pulled on both; its manifest changed (layer
//   A0 on mirror-a, A1 on mirror-b, pulled later there); its base layer BASE
//   is shared with web:1, which only mirror-a served: so app:1's unique bytes
//   are A1 only, though mirror-b alone sees no other image with BASE.
// - ghcr.io/org/ml:2 (mirror-b) has one layer of 95% and shares nothing;
//   ghcr.io/org/tool:1 (mirror-a) shares nothing, its largest layer is 43%.
// - both replicas report one shared bucket (5.0 GB and, a fill later, 5.2 GB).
import type { DurationStats, ImageInsight, ImagesResponse, LayerInsight, LayerRef, LayersResponse, PullRecord, PullsResponse, Summary } from '../../src/insights/types.js'

export const digest = (c: string): string => `sha256:${c.repeat(64).slice(0, 64)}`

export const L = {
  BASE: { digest: digest('ba'), size: 30_000_000 },
  A0: { digest: digest('a0'), size: 4_000_000 },
  A1: { digest: digest('a1'), size: 5_000_000 },
  W: { digest: digest('ee'), size: 2_000_000 },
  M0: { digest: digest('d0'), size: 20_000_000 },
  M1: { digest: digest('d1'), size: 400_000_000 },
  T0: { digest: digest('70'), size: 3_000_000 },
  T1: { digest: digest('71'), size: 2_000_000 },
  T2: { digest: digest('72'), size: 2_000_000 },
} satisfies Record<string, LayerRef>

export const APP = 'docker.io/library/app:1'
export const WEB = 'docker.io/library/web:1'
export const ML = 'ghcr.io/org/ml:2'
export const TOOL = 'ghcr.io/org/tool:1'

const CONFIG = 10_000

/** Stats as a replica would report them: nearest-rank percentiles of its samples. */
export function stats(samples: number[], count = samples.length): DurationStats {
  if (samples.length === 0) return { count, samples: [] }
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = (p: number): number => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] as number
  return { count, p50: rank(0.5), p95: rank(0.95), max: sorted[sorted.length - 1] as number, samples }
}

function image(name: string, layers: LayerRef[], rest: Partial<ImageInsight> & Pick<ImageInsight, 'lastPulled' | 'pulls' | 'pullSeconds'>): ImageInsight {
  const [upstream, ...path] = name.split('/')
  const [repository, tag] = path.join('/').split(':')
  const largest = layers.reduce((a, l) => (l.size > a.size ? l : a))
  return {
    image: name,
    upstream: upstream as string,
    repository: repository as string,
    tag: tag as string,
    digest: digest(layers.map((l) => l.digest.slice(7, 9)).join('')),
    platforms: ['linux/amd64'],
    resolves: 0,
    cold: 0,
    warm: 0,
    partial: 0,
    failed: 0,
    coldSeconds: stats([]),
    warmSeconds: stats([]),
    size: CONFIG + layers.reduce((a, l) => a + l.size, 0),
    layerCount: layers.length,
    largestLayer: largest,
    uniqueBytes: 0,
    layers,
    ...rest,
  }
}

function pull(id: string, name: string, o: { cache: PullRecord['cache']; seconds: number; bytes: number; endedAt: string; node?: string; result?: PullRecord['result'] }): PullRecord {
  const [upstream, ...path] = name.split('/')
  const [repository, tag] = path.join('/').split(':')
  const end = Date.parse(o.endedAt)
  return {
    id,
    image: name,
    upstream: upstream as string,
    repository: repository as string,
    tag: tag as string,
    digest: digest('d'),
    platform: 'linux/amd64',
    client: { address: `10.0.0.${id.length}${id.slice(-1)}`, userAgent: 'containerd/1.7.24', ...(o.node !== undefined ? { node: o.node } : {}) },
    startedAt: new Date(end - o.seconds * 1000).toISOString(),
    endedAt: o.endedAt,
    seconds: o.seconds,
    firstLayerByteSeconds: 0.1,
    layers: { total: 2, fetched: 2 },
    bytes: o.bytes,
    bytesFromCache: o.cache === 'warm' ? o.bytes : 0,
    bytesFromUpstream: o.cache === 'warm' ? 0 : o.bytes,
    cache: o.cache,
    result: o.result ?? 'ok',
  }
}

export interface ReplicaFixture {
  readonly summary: Summary
  readonly images: ImagesResponse
  readonly layers: LayersResponse
  readonly pulls: PullsResponse
}

const layer = (l: LayerRef, images: string[]): LayerInsight => ({ ...l, images })

export function replicaA(): ReplicaFixture {
  const instance = 'mirror-a'
  return {
    summary: {
      instance,
      since: '2026-12-01T08:00:00.000Z',
      now: '2026-12-02T12:00:00.000Z',
      requests: { total: 100, hits: 80, hitRatio: 0.8 },
      bytes: { served: 1_000_000_000, fromCache: 600_000_000, fromUpstream: 400_000_000, hitRatio: 0.6 },
      upstreamSaved: { bytes: 600_000_000, requests: 80 },
      pulls: { total: 8, cold: 3, warm: 4, partial: 1, failed: 0, resolves: 10 },
      fillsInProgress: 1,
      cache: { size: 5_000_000_000, quota: 20_000_000_000, usedRatio: 0.25 },
      upstreams: [
        { name: 'docker.io', url: 'https://registry-1.docker.io', requests: 20, errors: 1, rateLimitRemaining: 90, pausedSeconds: 0 },
        { name: 'ghcr.io', url: 'https://ghcr.io', requests: 5, errors: 0, rateLimitRemaining: null, pausedSeconds: 0 },
      ],
    },
    images: {
      instance,
      images: [
        image(APP, [L.BASE, L.A0], {
          lastPulled: '2026-12-02T10:00:00.000Z', pulls: 3, cold: 1, partial: 1, warm: 1, resolves: 5, pullSeconds: 10.5,
          coldSeconds: stats([4, 6]), warmSeconds: stats([0.5]), uniqueBytes: L.A0.size,
          kubelet: { pulls: 1, pullSeconds: stats([5]), includingWaitingSeconds: stats([6]) },
        }),
        image(WEB, [L.BASE, L.W], { lastPulled: '2026-12-02T09:00:00.000Z', pulls: 2, cold: 1, warm: 1, pullSeconds: 5, coldSeconds: stats([4]), warmSeconds: stats([1]), uniqueBytes: L.W.size }),
        image(TOOL, [L.T0, L.T1, L.T2], { lastPulled: '2026-12-02T08:00:00.000Z', pulls: 1, cold: 1, pullSeconds: 3, coldSeconds: stats([3]), uniqueBytes: 7_000_000 }),
      ],
    },
    layers: {
      instance,
      layers: [layer(L.BASE, [APP, WEB]), layer(L.A0, [APP]), layer(L.T0, [TOOL]), layer(L.W, [WEB]), layer(L.T1, [TOOL]), layer(L.T2, [TOOL])],
    },
    pulls: {
      instance,
      pulls: [
        pull('mirror-a-3', APP, { cache: 'warm', seconds: 0.5, bytes: 35_010_000, endedAt: '2026-12-02T10:00:00.000Z' }),
        pull('mirror-a-2', TOOL, { cache: 'cold', seconds: 3, bytes: 7_010_000, endedAt: '2026-12-02T08:00:00.000Z' }),
        pull('mirror-a-1', APP, { cache: 'cold', seconds: 6, bytes: 34_010_000, endedAt: '2026-12-02T07:30:00.000Z', node: 'node-1' }),
      ],
    },
  }
}

export function replicaB(): ReplicaFixture {
  const instance = 'mirror-b'
  return {
    summary: {
      instance,
      since: '2026-12-01T09:00:00.000Z',
      now: '2026-12-02T12:00:05.000Z',
      requests: { total: 300, hits: 270, hitRatio: 0.9 },
      bytes: { served: 3_000_000_000, fromCache: 2_700_000_000, fromUpstream: 300_000_000, hitRatio: 0.9 },
      upstreamSaved: { bytes: 2_700_000_000, requests: 270 },
      pulls: { total: 5, cold: 4, warm: 0, partial: 1, failed: 1, resolves: 2 },
      fillsInProgress: 2,
      cache: { size: 5_200_000_000, quota: 20_000_000_000, usedRatio: 0.26 },
      upstreams: [
        { name: 'docker.io', url: 'https://registry-1.docker.io', requests: 30, errors: 0, rateLimitRemaining: 75, pausedSeconds: 12 },
        { name: 'ghcr.io', url: 'https://ghcr.io', requests: 10, errors: 2, rateLimitRemaining: null, pausedSeconds: 0 },
      ],
    },
    images: {
      instance,
      images: [
        image(ML, [L.M0, L.M1], { lastPulled: '2026-12-02T11:00:00.000Z', pulls: 1, cold: 1, pullSeconds: 40, coldSeconds: stats([40]), uniqueBytes: 420_000_000 }),
        image(APP, [L.BASE, L.A1], {
          lastPulled: '2026-12-02T11:30:00.000Z', pulls: 3, cold: 3, failed: 1, resolves: 2, pullSeconds: 15,
          platforms: ['linux/arm64', 'linux/amd64'], coldSeconds: stats([2, 3, 10]), uniqueBytes: 35_000_000,
          kubelet: { pulls: 2, pullSeconds: stats([3, 7]), includingWaitingSeconds: stats([4, 9]) },
        }),
      ],
    },
    layers: {
      instance,
      layers: [layer(L.M1, [ML]), layer(L.BASE, [APP]), layer(L.M0, [ML]), layer(L.A1, [APP])],
    },
    pulls: {
      instance,
      pulls: [
        pull('mirror-b-3', APP, { cache: 'partial', seconds: 2, bytes: 5_010_000, endedAt: '2026-12-02T11:30:00.000Z', result: 'failed' }),
        pull('mirror-b-2', ML, { cache: 'cold', seconds: 40, bytes: 420_010_000, endedAt: '2026-12-02T11:00:00.000Z', node: 'node-7' }),
        pull('mirror-b-1', APP, { cache: 'cold', seconds: 10, bytes: 35_010_000, endedAt: '2026-12-02T09:00:00.000Z' }),
      ],
    },
  }
}

/** A fixture as mergeReplicas takes it. */
export const insightsOf = (r: ReplicaFixture) => ({ summary: r.summary, images: r.images.images, layers: r.layers.layers, pulls: r.pulls.pulls })
