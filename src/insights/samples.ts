import type { DurationStats } from './types.js'

/** How many recent durations an image keeps for its percentiles. */
export const SAMPLES = 64

/** A count of every duration seen, and the most recent SAMPLES of them for p50/p95. */
export class DurationSamples {
  private ring: number[] = []
  private next = 0
  count = 0

  add(seconds: number): void {
    this.count++
    if (this.ring.length < SAMPLES) this.ring.push(seconds)
    else this.ring[this.next] = seconds
    this.next = (this.next + 1) % SAMPLES
  }

  /** Oldest first. */
  recent(): number[] {
    return this.ring.length < SAMPLES ? [...this.ring] : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)]
  }

  stats(): DurationStats {
    return durationStats(this.count, this.recent())
  }

  static from(count: number, samples: readonly number[]): DurationSamples {
    const s = new DurationSamples()
    for (const v of samples.slice(-SAMPLES)) s.add(v)
    s.count = Math.max(count, s.ring.length)
    return s
  }
}

/** p50, p95 and max of samples (nearest rank), with the overall count. */
export function durationStats(count: number, samples: readonly number[]): DurationStats {
  if (samples.length === 0) return { count, samples: [] }
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = (p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number
  return { count, p50: rank(0.5), p95: rank(0.95), max: sorted[sorted.length - 1] as number, samples }
}

/** Seconds to 3 decimals: what the API shows. */
export const roundSeconds = (s: number): number => Math.round(s * 1000) / 1000
