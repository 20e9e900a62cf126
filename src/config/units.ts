const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3, ti: 1024 ** 4, tib: 1024 ** 4,
}

// A long enough digit string parses to Infinity and a product can pass 2^53:
// neither is a number of milliseconds or bytes anything can use.
const usable = (n: number | undefined): number | undefined => (n !== undefined && Number.isSafeInteger(n) && n >= 0 ? n : undefined)

/** What a duration says in milliseconds, however large (Infinity included); undefined when it is not one. */
export function measureDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : undefined
  if (typeof value !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value)
  return m === null ? undefined : Math.round(Number(m[1]) * (DURATION_UNITS[m[2] ?? 's'] as number))
}

/** What a size says in bytes, however large (Infinity included); undefined when it is not one. */
export function measureSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value)
  const unit = m === null ? undefined : SIZE_UNITS[(m[2] as string).toLowerCase()]
  return unit === undefined ? undefined : Math.floor(Number((m as RegExpExecArray)[1]) * unit)
}

/** `"90s"`, `"5m"`, `"24h"`, `"250ms"`, or a bare number of seconds, to whole milliseconds; undefined when not one. */
export const parseDuration = (value: unknown): number | undefined => usable(measureDuration(value))

/** `"50GiB"`, `"512MB"`, `"1.5Gi"`, or a bare number of bytes, to whole bytes; undefined when not one. */
export const parseSize = (value: unknown): number | undefined => usable(measureSize(value))

/** Milliseconds as the largest unit that divides them ("24h", "1500ms"), for messages. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

/** Bytes as the largest binary unit that divides them ("16GiB"), for messages. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`
  }
  return `${bytes} bytes`
}
