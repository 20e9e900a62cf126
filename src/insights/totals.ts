import type { ServedRequest } from '../routes/served.js'

/** Counters over every manifest and blob request; also their persisted form. */
export interface Totals {
  requests: number
  hits: number
  bytesServed: number
  bytesFromCache: number
  bytesFromUpstream: number
  savedBytes: number
  savedRequests: number
  pulls: number
  cold: number
  warm: number
  partial: number
  failed: number
  resolves: number
}

export const emptyTotals = (): Totals => ({ requests: 0, hits: 0, bytesServed: 0, bytesFromCache: 0, bytesFromUpstream: 0, savedBytes: 0, savedRequests: 0, pulls: 0, cold: 0, warm: 0, partial: 0, failed: 0, resolves: 0 })

/** What one request adds: a hit was answered from the cache; a saved request asked the upstream nothing. */
export function countRequest(t: Totals, r: ServedRequest): { savedBytes: number; savedRequest: boolean } {
  if (r.cache === undefined || r.status >= 400) return { savedBytes: 0, savedRequest: false }
  t.requests++
  const fromCache = r.cache === 'hit' || r.cache === 'stale' || r.cache === 'revalidated'
  if (fromCache) t.hits++
  t.bytesServed += r.bytes
  if (fromCache) t.bytesFromCache += r.bytes
  else t.bytesFromUpstream += r.bytes
  // A joiner's bytes crossed the link once, for the client that started the fill.
  const savedBytes = fromCache || r.cache === 'joined' ? r.bytes : 0
  // revalidated asked the upstream (a conditional HEAD), if not for the body.
  const savedRequest = r.cache === 'hit' || r.cache === 'stale' || r.cache === 'joined'
  t.savedBytes += savedBytes
  if (savedRequest) t.savedRequests++
  return { savedBytes, savedRequest }
}
