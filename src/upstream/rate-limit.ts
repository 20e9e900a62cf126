/**
 * Tracks Docker Hub style rate limits per upstream: `ratelimit-remaining`
 * (e.g. `76;w=21600`) from every answer, and 429s. While an upstream is out of
 * pulls, manifest GETs to it pause until Retry-After (or the back-off) has
 * passed; HEADs go on, since Docker Hub does not count them.
 */
export class RateLimitTracker {
  private readonly pausedUntil = new Map<string, number>()
  private readonly remaining = new Map<string, number>()

  constructor(private readonly backoffMs: number, private readonly now: () => number = Date.now) {}

  observe(upstream: string, status: number, headers: Record<string, string | string[] | undefined>): void {
    const remainingHeader = headers['ratelimit-remaining']
    if (typeof remainingHeader === 'string') {
      const n = Number.parseInt(remainingHeader, 10)
      if (Number.isFinite(n)) this.remaining.set(upstream, n)
    }
    const exhausted = status === 429 || this.remaining.get(upstream) === 0
    if (!exhausted) return
    const retryAfter = parseRetryAfter(headers['retry-after'], this.now())
    this.pausedUntil.set(upstream, this.now() + (retryAfter ?? this.backoffMs))
  }

  /** True while manifest GETs to upstream should not be sent. */
  paused(upstream: string): boolean {
    const until = this.pausedUntil.get(upstream)
    if (until === undefined) return false
    if (until <= this.now()) {
      this.pausedUntil.delete(upstream)
      return false
    }
    return true
  }

  /** Last `ratelimit-remaining` seen per upstream. */
  snapshot(): ReadonlyMap<string, number> {
    return this.remaining
  }
}

function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  if (typeof value !== 'string') return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}
