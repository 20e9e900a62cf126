// How the commands print sizes and digests in their tables.

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']

/** Decimal units, as registries and `docker images` show sizes. */
export function formatBytes(n: number): string {
  let value = n
  let unit = 0
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000
    unit++
  }
  return unit === 0 ? `${value} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`
}

/** `sha256:` and the first 12 hex digits: enough to tell images apart, short enough for a table. */
export function shortDigest(digest: string | undefined): string {
  if (digest === undefined) return '-'
  const colon = digest.indexOf(':')
  return colon < 0 ? digest.slice(0, 12) : digest.slice(0, colon + 13)
}
