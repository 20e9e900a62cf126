// What the bench's tables are made of: the systems it compares, one row of
// the main table, and the few statistics and formats every section shares.
import type { FanOutResult } from './clients.js'

export const SYSTEMS = ['stevedore', 'distribution', 'nginx'] as const
export type SystemKey = (typeof SYSTEMS)[number]

/** One row of the main table; `met` undefined: a figure with no target. */
export interface Row {
  figure: string
  baseline: string
  cells: Record<SystemKey, string>
  target: string
  met: boolean | undefined
  /** a stretch goal beyond the target, judged too when set */
  moonshot?: boolean
}

export const col = <T,>(f: (k: SystemKey) => T): Record<SystemKey, T> => ({ stevedore: f('stevedore'), distribution: f('distribution'), nginx: f('nginx') })

export interface FanRound {
  wall: number
  /** busy cores of the whole machine (all processes and the kernel) during the round */
  machineCores: number
  /** CPU seconds the system's processes used per GB it served */
  cpuPerGB: number
  fullGets: number
  correct: boolean
  ttfbMedian: number
  ttfbMax: number
  result: FanOutResult
}

/** the rounds' wall times */
export const walls = (rs: readonly { wall: number }[]): number[] => rs.map((r) => r.wall)

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const mid = Math.floor(v.length / 2)
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2
}

/** median of the per-round ratios a[i] / b[i] */
export function ratio(a: number[], b: number[]): number {
  return median(a.map((x, i) => x / (b[i] ?? NaN)))
}

export const maxOf = (xs: number[]): number => xs.reduce((m, x) => (x > m ? x : m), -Infinity)

export function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '—'
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US')
  if (Math.abs(n) >= 100) return n.toFixed(0)
  return n.toFixed(digits)
}
export const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×` : '—')
