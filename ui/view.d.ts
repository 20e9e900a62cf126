// Types of view.js for the server's TypeScript (src/insights/page/).
import type { TimelinePoint } from '../src/insights/types.js'

/** How a value is shown; `data-format` on the page names one. */
export type FormatName = 'bytes' | 'seconds' | 'percent' | 'count' | 'ago' | 'utc' | 'text' | 'client' | 'layers' | 'cacheUse' | 'budget' | 'health'

/** `value` as the page shows it (an unknown name shows it as text); `now` (ISO) is what `ago` counts from. */
export function format(name: FormatName, value: unknown, now?: string): string

/** What colours a badge: `cache` (cold/warm/partial), `result` (ok/failed), `health` (an upstream). */
export type ToneName = 'cache' | 'result' | 'health'
export type Tone = '' | 'good' | 'warn' | 'bad' | 'cold'

/** The badge colour of a value shown with `name`, or '' for none. */
export function tone(name: ToneName | string, value: unknown): Tone

/** The value at a dotted path ("coldSeconds.p50"); '' is the object itself. Own properties only. */
export function get(object: unknown, path: string): unknown

export interface TimelineTotals {
  readonly pulls: number
  /** Cold and partial. */
  readonly cold: number
  readonly warm: number
  readonly maxSeconds: number | null
}

/** Totals over a timeline's minutes, for the chart's caption. */
export function timelineTotals(minutes: readonly TimelinePoint[]): TimelineTotals
