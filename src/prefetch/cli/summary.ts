import { formatBytes, shortDigest } from '../../cli/format.js'
import type { ImageStatus } from '../warm-image.js'

/** `0.4s`, `12s`, `3m05s`; `-` when the image never ran (refused at once). */
export function formatSeconds(seconds: number | undefined): string {
  if (seconds === undefined) return '-'
  if (seconds < 10) return `${seconds.toFixed(1)}s`
  if (seconds < 60) return `${Math.round(seconds)}s`
  const m = Math.floor(seconds / 60)
  return `${m}m${String(Math.round(seconds - m * 60)).padStart(2, '0')}s`
}

const HEADER = ['IMAGE', 'STATE', 'DIGEST', 'PLATFORMS', 'LAYERS F/C/T', 'BYTES FETCHED/TOTAL', 'TIME']

/**
 * The table printed when every job has ended: per image, its state, what it
 * resolved to, the platforms fetched, layers fetched/cached/total, bytes and
 * the time it took; then one line of totals by state.
 */
export function formatSummary(images: readonly ImageStatus[], seconds: ReadonlyArray<number | undefined>): string {
  const rows = images.map((s, i) => [
    s.image,
    s.state,
    shortDigest(s.digest),
    s.platforms.length > 0 ? s.platforms.join(',') : '-',
    `${s.layers.fetched}/${s.layers.cached}/${s.layers.total}`,
    `${formatBytes(s.bytes.fetched)}/${formatBytes(s.bytes.total)}`,
    formatSeconds(seconds[i]),
  ])
  const widths = HEADER.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)))
  const line = (cells: readonly string[]): string => cells.map((cell, c) => (c === cells.length - 1 ? cell : cell.padEnd(widths[c] ?? 0))).join('  ').trimEnd()
  const counts = new Map<string, number>()
  for (const s of images) counts.set(s.state, (counts.get(s.state) ?? 0) + 1)
  const byState = ['done', 'failed', 'refused', 'running', 'queued'].filter((st) => counts.has(st)).map((st) => `${counts.get(st)} ${st}`).join(', ')
  return `${[line(HEADER), ...rows.map(line)].join('\n')}\n${images.length} image${images.length === 1 ? '' : 's'}: ${byState}\n`
}

/** The stderr line for an image that is not warm: what went wrong, and the first blob that failed. */
export function failureLine(s: ImageStatus): string {
  const first = s.failures[0]
  const blob = first !== undefined ? `; ${shortDigest(first.digest)}: ${first.reason}${s.failures.length > 1 ? ` (and ${s.failures.length - 1} more)` : ''}` : ''
  return `${s.image}: ${s.state}: ${s.error ?? 'no reason given'}${blob}`
}
