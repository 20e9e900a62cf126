import type { CacheResult } from '../cache/blobs.js'
import type { StoredManifest } from '../cache/manifest-store.js'

/** What a request touched, for its one log line and its metrics. */
export interface RequestContext {
  kind: 'base' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'ops' | 'api' | 'page' | 'peer' | 'other'
  upstream?: string
  repository?: string
  digest?: string
  tag?: string
  cache?: CacheResult
  /** Body bytes the answer carries (Content-Length), when known. */
  bytes?: number
  /** The manifest answered, for the request listeners (insights). */
  manifest?: StoredManifest
  /** A blob answered with a redirect to the store. */
  redirect?: boolean
  /** When the first body byte was written (ms since the epoch). */
  firstByteAt?: number
  /** Set once the request's log line and metrics are written. */
  recorded?: boolean
  readonly startedAt: bigint
  /** Numbers requests, for the request listeners. */
  readonly seq: number
}

declare module 'fastify' {
  interface FastifyRequest {
    stevedore: RequestContext
  }
}
