import type { Logger } from 'pino'
import { RegistryError } from '../oci/errors.js'

/** The longest pause a rate limit may impose; a longer Retry-After is capped (and logged). */
export const MAX_PAUSE_MS = 6 * 3_600_000

export interface RateLimitOptions {
  /** The pause after a 429 that says nothing of when to come back (cache.rateLimitBackoff). */
  readonly backoffMs: number
  readonly maxPauseMs?: number
  readonly log?: Logger
  readonly now?: () => number
}

interface State {
  /** A 429 said: nothing is sent before this. */
  refusedUntil: number
  /** ratelimit-remaining reached 0: manifest GETs wait until this (HEADs are free on Docker Hub). */
  exhaustedUntil: number
  remaining: number | undefined
}

/**
 * Rate limits per registry (upstreams with the same URL share one). A 429's
 * Retry-After (seconds or a date) or RateLimit-Reset is kept whole: a later
 * answer, a token service or a CDN hop can lengthen a pause, never shorten
 * it. While a registry refuses, the mirror sends it nothing; while its pull
 * budget is spent (`ratelimit-remaining: 0`), only manifest GETs wait.
 */
export class RateLimitTracker {
  private readonly states = new Map<string, State>()
  private readonly now: () => number

  constructor(private readonly options: RateLimitOptions) {
    this.now = options.now ?? Date.now
  }

  observe(registry: string, status: number, headers: Record<string, string | string[] | undefined>): void {
    const state = this.state(registry)
    const remaining = first(headers['ratelimit-remaining'])
    if (remaining !== undefined) {
      const n = Number.parseInt(remaining, 10)
      if (Number.isFinite(n)) state.remaining = n
    }
    const now = this.now()
    const said = parseRetryAfter(first(headers['retry-after']), now) ?? parseReset(first(headers['ratelimit-reset']), now)
    if (status === 429) state.refusedUntil = Math.max(state.refusedUntil, now + this.bounded(registry, said ?? this.options.backoffMs))
    else if (state.remaining === 0) state.exhaustedUntil = Math.max(state.exhaustedUntil, now + this.bounded(registry, said ?? this.options.backoffMs))
  }

  /** Milliseconds until the registry may be asked anything again; 0 when it may now. */
  refusedForMs(registry: string): number {
    return Math.max(0, (this.states.get(registry)?.refusedUntil ?? 0) - this.now())
  }

  /** True while manifest GETs to the registry must wait (refused, or its pull budget spent). */
  getsPaused(registry: string): boolean {
    const s = this.states.get(registry)
    if (s === undefined) return false
    return Math.max(s.refusedUntil, s.exhaustedUntil) > this.now()
  }

  /** Last `ratelimit-remaining` seen. */
  remaining(registry: string): number | undefined {
    return this.states.get(registry)?.remaining
  }

  /** The error for a request that is not sent because the registry refuses: 429 with the time left. */
  refusal(upstream: string, registry: string): RegistryError {
    const seconds = Math.max(1, Math.ceil(this.refusedForMs(registry) / 1000))
    return new RegistryError('TOOMANYREQUESTS', `upstream ${upstream} is rate-limiting; not asked again for ${seconds} s`, {
      headers: { 'retry-after': String(seconds) },
      detail: { upstream, retryAfterSeconds: seconds },
    })
  }

  private bounded(registry: string, ms: number): number {
    const max = this.options.maxPauseMs ?? MAX_PAUSE_MS
    if (ms <= max) return Math.max(0, ms)
    this.options.log?.warn({ registry, askedMs: ms, cappedMs: max }, 'rate limit: the upstream asked for a longer pause than the cap; capped')
    return max
  }

  private state(registry: string): State {
    let s = this.states.get(registry)
    if (s === undefined) {
      s = { refusedUntil: 0, exhaustedUntil: 0, remaining: undefined }
      this.states.set(registry, s)
    }
    return s
  }
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v)

/** Retry-After: delta seconds, or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined || value.trim() === '') return undefined
  const v = value.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  // An HTTP date has a weekday and a month name; Date.parse takes "-5" for a year.
  if (!/[a-z]{3}/i.test(v)) return undefined
  const date = Date.parse(v)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** RateLimit-Reset: delta seconds (the IETF draft), or epoch seconds (as GitHub's x-ratelimit-reset). */
export function parseReset(value: string | undefined, now: number): number | undefined {
  if (value === undefined || !/^\s*\d+\s*$/.test(value)) return undefined
  const n = Number(value)
  return n > 1e9 ? Math.max(0, n * 1000 - now) : n * 1000
}
