// What `stevedore report --json` prints: the merged insights of every
// replica that answered, which ones did not, and the size advice.
import type { ImageInsight, LayerInsight, PullRecord } from '../types.js'
import { sizeAdvice, type SizeAdvice } from './advice.js'
import { mergeReplicas, type MergedSummary, type ReplicaInsights } from './merge.js'

/**
 * One --mirror, in the order given. merged: its figures are in the report;
 * duplicate: it answered as an instance already merged from `of` (two
 * addresses of one replica), so it counts once; missing: it is left out, and
 * `error` says why.
 */
export type ReportMirror =
  | { readonly url: string; readonly state: 'merged'; readonly instance: string }
  | { readonly url: string; readonly state: 'duplicate'; readonly instance: string; readonly of: string }
  | { readonly url: string; readonly state: 'missing'; readonly error: string }

/** The JSON document of `stevedore report --json` (the whole merged data: --top bounds the tables only). */
export interface ReportDocument {
  /** When the report was made (ISO 8601). */
  readonly generatedAt: string
  readonly mirrors: readonly ReportMirror[]
  /** Counters summed over the replicas, ratios of the sums; see MergedSummary for the cache size (a max) and rate limits (a min). */
  readonly summary: MergedSummary
  /** By image: counts and pull-seconds summed, samples pooled, the manifest of the latest pull, uniqueBytes over this set. By pullSeconds, highest first. */
  readonly images: readonly ImageInsight[]
  /** By digest, images unioned; largest first. */
  readonly layers: readonly LayerInsight[]
  /** Every replica's recent pulls, newest first. */
  readonly pulls: readonly PullRecord[]
  readonly advice: SizeAdvice
}

/** The report of the replicas that answered (at least one), with every --mirror's state. */
export function buildReport(mirrors: readonly ReportMirror[], replicas: readonly ReplicaInsights[], now: Date): ReportDocument {
  const merged = mergeReplicas(replicas)
  return { generatedAt: now.toISOString(), mirrors, ...merged, advice: sizeAdvice(merged.images) }
}
