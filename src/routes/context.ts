import type { CacheResult } from '../cache/blobs.js'

/** What a request touched, for its one log line and its metrics. */
export interface RequestContext {
  kind: 'base' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'ops' | 'api' | 'page' | 'other'
  upstream?: string
  repository?: string
  digest?: string
  tag?: string
  cache?: CacheResult
  /** Body bytes the answer carries (Content-Length), when known. */
  bytes?: number
  /** Set once the request's log line and metrics are written. */
  recorded?: boolean
  readonly startedAt: bigint
}

declare module 'fastify' {
  interface FastifyRequest {
    stevedore: RequestContext
  }
}
