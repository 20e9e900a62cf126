import { roundSeconds } from './samples.js'
import type { PullRecord, TimelinePoint } from './types.js'

const MINUTE = 60_000
/** A day of minutes: what the status page can chart. */
export const TIMELINE_MINUTES = 24 * 60

/** One minute's pulls; also the persisted form. */
export interface MinuteBucket {
  t: number
  cold: number
  warm: number
  partial: number
  coldSum: number
  warmSum: number
  max: number
}

/** Pulls per minute over the last day, by the minute they ended in. */
export class Timeline {
  private readonly buckets = new Map<number, MinuteBucket>()

  add(p: PullRecord, endedAt: number): void {
    const t = endedAt - (endedAt % MINUTE)
    let b = this.buckets.get(t)
    if (b === undefined) {
      b = { t, cold: 0, warm: 0, partial: 0, coldSum: 0, warmSum: 0, max: 0 }
      this.buckets.set(t, b)
      this.prune(t)
    }
    b[p.cache]++
    if (p.cache === 'warm') b.warmSum += p.seconds
    else b.coldSum += p.seconds
    b.max = Math.max(b.max, p.seconds)
  }

  /** The last `minutes` minutes up to now, oldest first, empty minutes included. */
  points(minutes: number, now: number): TimelinePoint[] {
    const last = now - (now % MINUTE)
    const out: TimelinePoint[] = []
    for (let t = last - (Math.min(minutes, TIMELINE_MINUTES) - 1) * MINUTE; t <= last; t += MINUTE) {
      const b = this.buckets.get(t)
      const coldN = (b?.cold ?? 0) + (b?.partial ?? 0)
      out.push({
        t: new Date(t).toISOString(),
        pulls: coldN + (b?.warm ?? 0),
        cold: b?.cold ?? 0,
        warm: b?.warm ?? 0,
        partial: b?.partial ?? 0,
        coldMeanSeconds: b !== undefined && coldN > 0 ? roundSeconds(b.coldSum / coldN) : null,
        warmMeanSeconds: b !== undefined && b.warm > 0 ? roundSeconds(b.warmSum / b.warm) : null,
        maxSeconds: b !== undefined ? roundSeconds(b.max) : null,
      })
    }
    return out
  }

  snapshot(): MinuteBucket[] {
    return [...this.buckets.values()]
  }

  restore(buckets: readonly MinuteBucket[]): void {
    for (const b of buckets) this.buckets.set(b.t, { ...b })
    this.prune(Math.max(0, ...buckets.map((b) => b.t)))
  }

  private prune(newest: number): void {
    for (const t of this.buckets.keys()) if (t <= newest - TIMELINE_MINUTES * MINUTE) this.buckets.delete(t)
  }
}
