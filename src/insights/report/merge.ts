// Several replicas' insights as one: each replica reports only the pulls it
// served, so counts add up, percentiles are recomputed from the pooled
// samples, and what describes one store (the cache on a shared bucket) is
// not counted once per replica.
import type { DurationStats, ImageInsight, LayerInsight, LayerRef, PullRecord, Summary, UpstreamHealth } from '../types.js'

/** The replicas' summaries as one. */
export interface MergedSummary {
  /** The replicas' instance names, in the order of --mirror. */
  readonly instances: readonly string[]
  /** The earliest replica's. */
  readonly since: string
  /** The latest replica's. */
  readonly now: string
  /** Summed; hitRatio = hits / total of the sums (null when no request). */
  readonly requests: Summary['requests']
  /** Summed; hitRatio = fromCache / served of the sums (null when nothing was served). */
  readonly bytes: Summary['bytes']
  readonly upstreamSaved: Summary['upstreamSaved']
  readonly pulls: Summary['pulls']
  readonly fillsInProgress: number
  /**
   * The largest size and quota any replica reports, not their sum: replicas
   * on one shared bucket each report the same store. usedRatio = size / quota.
   */
  readonly cache: Summary['cache']
  /**
   * By upstream name: requests and errors summed, rateLimitRemaining the
   * lowest any replica was told (null when none was told one), pausedSeconds
   * the longest; the url of the first replica naming it.
   */
  readonly upstreams: readonly UpstreamHealth[]
}

/** What the report merges from each replica. */
export interface ReplicaInsights {
  readonly summary: Summary
  readonly images: readonly ImageInsight[]
  readonly layers: readonly LayerInsight[]
  readonly pulls: readonly PullRecord[]
}

export interface MergedInsights {
  readonly summary: MergedSummary
  /** By pullSeconds, highest first (then by name). */
  readonly images: readonly ImageInsight[]
  /** Largest first (then by digest). */
  readonly layers: readonly LayerInsight[]
  /** Newest first: by endedAt, then startedAt, then id. */
  readonly pulls: readonly PullRecord[]
}

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0)
const ratio = (part: number, whole: number): number | null => (whole > 0 ? part / whole : null)
const latest = (a: string, b: string): string => (Date.parse(b) > Date.parse(a) ? b : a)
const earliest = (a: string, b: string): string => (Date.parse(b) < Date.parse(a) ? b : a)
const sortedUnion = (lists: ReadonlyArray<readonly string[]>): string[] => [...new Set(lists.flat())].sort()

/** The items of every list by key, in the order met. */
function group<T>(lists: ReadonlyArray<readonly T[]>, key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>()
  for (const list of lists) {
    for (const item of list) {
      const k = key(item)
      const g = groups.get(k)
      if (g === undefined) groups.set(k, [item])
      else g.push(item)
    }
  }
  return groups
}

/** The nearest-rank percentile (p in 0..1) of sorted values. */
export function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]
}

/**
 * Durations of one kind from several replicas: counts summed, samples
 * pooled, p50/p95 of the pooled samples; max the largest any replica saw
 * (its max covers pulls older than its samples). One replica with pulls of
 * this kind: its own figures, unchanged.
 */
export function mergeDurations(stats: readonly DurationStats[]): DurationStats {
  const seen = stats.filter((s) => s.count > 0 || s.samples.length > 0)
  if (seen.length === 1 && seen[0] !== undefined) return seen[0]
  const samples = seen.flatMap((s) => s.samples)
  const sorted = [...samples].sort((a, b) => a - b)
  const maxes = [...seen.flatMap((s) => (s.max !== undefined ? [s.max] : [])), ...samples]
  const p50 = percentile(sorted, 0.5)
  const p95 = percentile(sorted, 0.95)
  return {
    count: sum(seen.map((s) => s.count)),
    ...(p50 !== undefined ? { p50 } : {}),
    ...(p95 !== undefined ? { p95 } : {}),
    ...(maxes.length > 0 ? { max: Math.max(...maxes) } : {}),
    samples,
  }
}

type Kubelet = NonNullable<ImageInsight['kubelet']>

function mergeKubelet(all: ReadonlyArray<Kubelet | undefined>): Kubelet | undefined {
  const known = all.filter((k): k is Kubelet => k !== undefined)
  if (known.length === 0) return undefined
  return {
    pulls: sum(known.map((k) => k.pulls)),
    pullSeconds: mergeDurations(known.map((k) => k.pullSeconds)),
    includingWaitingSeconds: mergeDurations(known.map((k) => k.includingWaitingSeconds)),
  }
}

/** One image seen by several replicas; its manifest (digest, size, layers) is that of the most recent pull. */
function mergeImage(copies: readonly ImageInsight[]): ImageInsight {
  if (copies.length === 1 && copies[0] !== undefined) return copies[0]
  const newest = copies.reduce((a, b) => (Date.parse(b.lastPulled) > Date.parse(a.lastPulled) ? b : a))
  const kubelet = mergeKubelet(copies.map((c) => c.kubelet))
  const { kubelet: _drop, ...rest } = newest
  return {
    ...rest,
    platforms: sortedUnion(copies.map((c) => c.platforms)),
    pulls: sum(copies.map((c) => c.pulls)),
    resolves: sum(copies.map((c) => c.resolves)),
    cold: sum(copies.map((c) => c.cold)),
    warm: sum(copies.map((c) => c.warm)),
    partial: sum(copies.map((c) => c.partial)),
    failed: sum(copies.map((c) => c.failed)),
    coldSeconds: mergeDurations(copies.map((c) => c.coldSeconds)),
    warmSeconds: mergeDurations(copies.map((c) => c.warmSeconds)),
    pullSeconds: sum(copies.map((c) => c.pullSeconds)),
    ...(kubelet !== undefined ? { kubelet } : {}),
  }
}

/** Bytes of each image's layers that no other image of the set lists (a layer listed twice by one image counts once). */
export function withUniqueBytes(images: readonly ImageInsight[]): ImageInsight[] {
  const holders = group(images.map((i) => [...new Set(i.layers.map((l) => l.digest))]), (digest) => digest)
  return images.map((i) => {
    const own = new Map<string, LayerRef>()
    for (const l of i.layers) if (holders.get(l.digest)?.length === 1) own.set(l.digest, l)
    return { ...i, uniqueBytes: sum([...own.values()].map((l) => l.size)) }
  })
}

function mergeImages(lists: ReadonlyArray<readonly ImageInsight[]>): ImageInsight[] {
  const merged = withUniqueBytes([...group(lists, (i) => i.image).values()].map(mergeImage))
  return merged.sort((a, b) => b.pullSeconds - a.pullSeconds || a.image.localeCompare(b.image))
}

function mergeLayers(lists: ReadonlyArray<readonly LayerInsight[]>): LayerInsight[] {
  const merged = [...group(lists, (l) => l.digest).entries()].map(([digest, copies]) => ({
    digest,
    size: Math.max(...copies.map((c) => c.size)),
    images: sortedUnion(copies.map((c) => c.images)),
  }))
  return merged.sort((a, b) => b.size - a.size || a.digest.localeCompare(b.digest))
}

function mergePulls(lists: ReadonlyArray<readonly PullRecord[]>): PullRecord[] {
  const time = (s: string): number => Date.parse(s)
  return lists.flat().sort((a, b) => time(b.endedAt) - time(a.endedAt) || time(b.startedAt) - time(a.startedAt) || a.id.localeCompare(b.id))
}

function mergeUpstreams(lists: ReadonlyArray<readonly UpstreamHealth[]>): UpstreamHealth[] {
  return [...group(lists, (u) => u.name).values()].map((copies) => {
    const told = copies.flatMap((c) => (c.rateLimitRemaining !== null ? [c.rateLimitRemaining] : []))
    const first = copies[0] as UpstreamHealth
    return {
      name: first.name,
      url: first.url,
      requests: sum(copies.map((c) => c.requests)),
      errors: sum(copies.map((c) => c.errors)),
      rateLimitRemaining: told.length > 0 ? Math.min(...told) : null,
      pausedSeconds: Math.max(...copies.map((c) => c.pausedSeconds)),
    }
  })
}

/** The replicas' summaries as one (see MergedSummary for each rule); at least one summary. */
export function mergeSummaries(all: readonly Summary[]): MergedSummary {
  const first = all[0]
  if (first === undefined) throw new RangeError('mergeSummaries: no summary')
  const total = (pick: (s: Summary) => number): number => sum(all.map(pick))
  const requests = { total: total((s) => s.requests.total), hits: total((s) => s.requests.hits) }
  const bytes = { served: total((s) => s.bytes.served), fromCache: total((s) => s.bytes.fromCache), fromUpstream: total((s) => s.bytes.fromUpstream) }
  const quotas = all.flatMap((s) => (s.cache.quota !== null ? [s.cache.quota] : []))
  const size = Math.max(...all.map((s) => s.cache.size))
  const quota = quotas.length > 0 ? Math.max(...quotas) : null
  return {
    instances: all.map((s) => s.instance),
    since: all.map((s) => s.since).reduce(earliest),
    now: all.map((s) => s.now).reduce(latest),
    requests: { ...requests, hitRatio: ratio(requests.hits, requests.total) },
    bytes: { ...bytes, hitRatio: ratio(bytes.fromCache, bytes.served) },
    upstreamSaved: { bytes: total((s) => s.upstreamSaved.bytes), requests: total((s) => s.upstreamSaved.requests) },
    pulls: {
      total: total((s) => s.pulls.total),
      cold: total((s) => s.pulls.cold),
      warm: total((s) => s.pulls.warm),
      partial: total((s) => s.pulls.partial),
      failed: total((s) => s.pulls.failed),
      resolves: total((s) => s.pulls.resolves),
    },
    fillsInProgress: total((s) => s.fillsInProgress),
    cache: { size, quota, usedRatio: quota !== null ? ratio(size, quota) : null },
    upstreams: mergeUpstreams(all.map((s) => s.upstreams)),
  }
}

/** The insights of every replica that answered, as one; at least one replica. */
export function mergeReplicas(replicas: readonly ReplicaInsights[]): MergedInsights {
  return {
    summary: mergeSummaries(replicas.map((r) => r.summary)),
    images: mergeImages(replicas.map((r) => r.images)),
    layers: mergeLayers(replicas.map((r) => r.layers)),
    pulls: mergePulls(replicas.map((r) => r.pulls)),
  }
}
