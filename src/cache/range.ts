import { RegistryError } from '../oci/errors.js'
import type { ByteRange } from '../storage/blob-store.js'

/**
 * Parses a single `Range: bytes=...` header against a size. Returns undefined
 * when the header is absent or not a single byte range we honour (the full
 * body is then a valid answer); throws RANGE_INVALID (416) when unsatisfiable.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  // Multi-range and other units: a plain 200 with the whole blob is allowed by RFC 9110.
  if (m === null) return undefined
  const [, first, last] = m as unknown as [string, string, string]
  if (first === '' && last === '') return undefined
  let start: number
  let end: number
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0) throw unsatisfiable(size)
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(first)
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
    if (last !== '' && Number(last) < start) return undefined
  }
  if (start >= size || !Number.isSafeInteger(start)) throw unsatisfiable(size)
  return { start, end }
}

function unsatisfiable(size: number): RegistryError {
  return new RegistryError('RANGE_INVALID', 'requested range not satisfiable', { headers: { 'content-range': `bytes */${size}` }, detail: { size } })
}
