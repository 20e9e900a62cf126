/** How long to wait before the next reconnect, and when to forget earlier failures. */
export interface BackoffOptions {
  readonly initialMs: number
  readonly maxMs: number
  /** A connection that stayed up this long resets the delay. */
  readonly healthyMs: number
  /** [0, 1): defaults to Math.random. */
  readonly random?: () => number
}

// client-go's reflector uses about these (800 ms, 30 s cap, reset after 2 min):
// short enough that a rollout started during a blip is still warmed in time,
// long enough that an API server in trouble is not hammered by every replica.
export const WATCH_BACKOFF: BackoffOptions = { initialMs: 800, maxMs: 30_000, healthyMs: 120_000 }

/**
 * Exponential backoff with "equal jitter": each delay is between half and all
 * of min(max, initial * 2^failures), so watchers that failed together do not
 * come back together, and none retries at once.
 */
export class Backoff {
  private failures = 0
  private readonly random: () => number

  constructor(private readonly options: BackoffOptions) {
    this.random = options.random ?? Math.random
  }

  /** The delay before the next attempt; counts one more failure. */
  next(): number {
    const { initialMs, maxMs } = this.options
    const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures, 30))
    this.failures++
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2))
  }

  /** Told how long the last connection stayed up: a healthy one forgets the failures before it. */
  connected(upMs: number): void {
    if (upMs >= this.options.healthyMs) this.failures = 0
  }

  reset(): void {
    this.failures = 0
  }

  get attempts(): number {
    return this.failures
  }
}

/** Resolves after ms, or at once when the signal aborts (the timer is cleared, so nothing is left pending). */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
