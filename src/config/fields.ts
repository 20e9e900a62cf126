// The field types every part of the schema is built from. Each carries its
// own bounds and the words for its failures (see Messages in errors.ts).
import { isIP } from 'node:net'
import { Kind, Type, TypeRegistry, type TLiteral, type TSchema } from '@sinclair/typebox'
import { ConfigError, Invalid, shown, type Messages } from './errors.js'
import { formatDuration, formatSize, measureDuration, measureSize } from './units.js'

/** The longest delay setTimeout honours; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1
export const DAY_MS = 86_400_000
export const MIB = 1024 * 1024
export const GIB = 1024 * MIB

const PARSED = 'Stevedore.Parsed'

/** A value read by a parser: a result, or the whole problem with it. */
type Parse<T> = (value: unknown) => { readonly value: T } | { readonly problem: string }

// One kind for every parsed scalar: the check and the decode run the same
// parser, so what is accepted is exactly what can be decoded.
TypeRegistry.Set<Messages>(PARSED, (schema, value) => schema.explain?.(value) === undefined)

interface FieldOptions {
  readonly default?: unknown
  readonly description?: string
}

function parsed<T>(parse: Parse<T>, encode: (value: T) => string | number, options: FieldOptions) {
  const explain = (value: unknown): string | undefined => {
    const r = parse(value)
    return 'problem' in r ? r.problem : undefined
  }
  const base = Type.Unsafe<string | number>({ ...options, [Kind]: PARSED, explain })
  return Type.Transform(base)
    .Decode((value): T => {
      const r = parse(value)
      if ('problem' in r) throw new Invalid('', r.problem)
      return r.value
    })
    .Encode(encode)
}

export interface DurationOptions extends FieldOptions {
  /** Inclusive, in ms; default 1: most durations back a timer, and 0 would mean "never wait". */
  readonly minMs?: number
  /** Inclusive, in ms; default MAX_TIMER_MS. */
  readonly maxMs?: number
}

/** `"30s"`, `"5m"`, `"24h"`, `"7d"` or a number of seconds, decoded to milliseconds within bounds. */
export function Duration(options: DurationOptions = {}) {
  const { minMs = 1, maxMs = MAX_TIMER_MS, ...rest } = options
  // 2^31-1 ms is 24d 20h 31m: say the whole days, which are honest and readable.
  const most = maxMs === MAX_TIMER_MS ? `${Math.floor(maxMs / DAY_MS)}d, the longest a timer can wait` : formatDuration(maxMs)
  return parsed<number>((value) => {
    // Bounds are checked on what was written, so "1000000d" is too long, not "no duration".
    const ms = measureDuration(value)
    if (ms === undefined) return { problem: `must be a duration such as "30s", "5m" or "24h" (got ${shown(value)})` }
    if (ms < minMs) return { problem: `${minMs === 1 ? 'must be greater than zero' : `must be at least ${formatDuration(minMs)}`} (got ${shown(value)})` }
    if (ms > maxMs) return { problem: `must be at most ${most} (got ${shown(value)})` }
    return { value: ms }
  }, formatDuration, rest)
}

export interface SizeOptions extends FieldOptions {
  readonly minBytes?: number
  readonly maxBytes?: number
}

/** `"50GiB"`, `"512MB"` or a number of bytes, decoded to bytes within bounds. */
export function Size(options: SizeOptions = {}) {
  const { minBytes = 0, maxBytes = Number.MAX_SAFE_INTEGER, ...rest } = options
  return parsed<number>((value) => {
    const bytes = measureSize(value)
    if (bytes === undefined) return { problem: `must be a size such as "50GiB" or "512MB" (got ${shown(value)})` }
    if (bytes < minBytes) return { problem: `must be at least ${formatSize(minBytes)} (got ${shown(value)})` }
    if (bytes > maxBytes) return { problem: `must be at most ${formatSize(maxBytes)} (got ${shown(value)})` }
    return { value: bytes }
  }, (bytes) => bytes, rest)
}

/** A whole number within [minimum, maximum]. */
export const Int = (minimum: number, maximum: number, options: FieldOptions = {}) =>
  Type.Integer({ ...options, minimum, maximum, showValue: true })

export const Bool = (fallback: boolean) => Type.Boolean({ default: fallback })

/** A non-empty string; its value is never quoted back (it may be a secret). */
export const Text = (options: FieldOptions = {}) => Type.String({ ...options, minLength: 1 })

/** A string matching `pattern`; `problem` says what it should look like. */
export const Pattern = (pattern: RegExp, problem: string, options: FieldOptions = {}) =>
  Type.String({ ...options, pattern: pattern.source, problem, showValue: true })

/** A non-empty list of `items`. */
export const List = <T extends TSchema>(items: T, problem: string) => Type.Array(items, { minItems: 1, problem })

/** One of `values`. */
export function OneOf<const V extends readonly string[]>(values: V, options: FieldOptions = {}) {
  return Type.Union(values.map((v) => Type.Literal(v)) as TLiteral<V[number]>[], {
    ...options,
    problem: `must be one of ${values.join(', ')}`,
    showValue: true,
  })
}

function listenOf(value: unknown): { value: { host: string; port: number } } | { problem: string } {
  const m = typeof value === 'string' ? /^(?:\[([^\]]+)\]|([^:\s]*)):(\d{1,5})$/.exec(value) : null
  const port = m === null ? NaN : Number(m[3])
  if (m === null || port > 65535) return { problem: `must be HOST:PORT (got ${shown(value)})` }
  const host = m[1] ?? m[2] ?? ''
  return { value: { host: host === '' ? '0.0.0.0' : host, port } }
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:5000`); `key` names where it came from. */
export function parseListen(value: string, key = 'listen'): { host: string; port: number } {
  const r = listenOf(value)
  if ('problem' in r) throw new ConfigError(key, r.problem)
  return r.value
}

/** `HOST:PORT`, decoded to `{ host, port }`; an empty host means every address. */
export const Listen = (options: FieldOptions = {}) =>
  parsed(listenOf, ({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`, options)

/** An http(s) origin with nothing after it, decoded to a URL. */
export const Origin = (options: FieldOptions = {}) => parsed<URL>((value) => {
  if (typeof value !== 'string' || value === '') return { problem: 'must be a non-empty string' }
  // Quoted only when unparseable: a parsed URL may carry credentials.
  if (!URL.canParse(value)) return { problem: `is not a URL (got ${shown(value)})` }
  const url = new URL(value)
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { problem: 'must be http:// or https://' }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return { problem: 'must be a bare origin such as https://registry.example.com (no path, query or credentials)' }
  }
  return { value: url }
}, (url) => url.origin, options)

/** Any URL, kept as the string given. */
export const UrlText = (options: FieldOptions = {}) => parsed<string>((value) => {
  if (typeof value !== 'string' || value === '') return { problem: 'must be a non-empty string' }
  return URL.canParse(value) ? { value } : { problem: `is not a URL (got ${shown(value)})` }
}, (text) => text, options)

const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?'
const HOST_PATTERN = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*$`)

/** A host name, `*.domain` or an IP literal (brackets optional), decoded lower-case without brackets. */
export const RedirectHost = () => parsed<string>((value) => {
  const host = typeof value === 'string' ? value.replace(/^\[(.*)\]$/, '$1').toLowerCase() : ''
  if (isIP(host) !== 0 || HOST_PATTERN.test(host)) return { value: host }
  return { problem: `must be a host name, "*.domain" or an IP address, without scheme or port (got ${shown(value)})` }
}, (host) => host, {})
