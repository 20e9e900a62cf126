import { RegistryError } from '../oci/errors.js'
import { isValidRegistryHost, isValidTag } from '../oci/names.js'
import type { V2Path } from './v2-path.js'

/** The query parameters of a /v2 request, each checked; unknown ones are dropped, never forwarded. */
export interface V2Query {
  /** containerd's registry of the image reference (`docker.io`, `reg:5000`); absent when empty. */
  readonly ns?: string
  /** tags/list: page size. */
  readonly n?: number
  /** tags/list: the last tag of the previous page. */
  readonly last?: string
  /** referrers: only artifacts of this media type. */
  readonly artifactType?: string
}

/** Largest tags/list page we pass on; upstreams cap pages far below this anyway. */
export const MAX_PAGE = 10_000

// RFC 6838 type/subtype, as the image spec requires of media types.
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/

type Kind = V2Path['kind']

/**
 * Checks the parsed query string of a request to `kind`: `ns` everywhere,
 * `n` and `last` on tags/list, `artifactType` on referrers. A known parameter
 * given twice (a parser's array) or malformed is the client's 400: routing
 * on one of two values, or passing junk on, would only fail later as a 5xx.
 */
export function parseQuery(query: unknown, kind: Kind): V2Query {
  const ns = singleParam(query, 'ns')
  const out: { -readonly [K in keyof V2Query]: V2Query[K] } = {}
  if (ns !== undefined && ns !== '') {
    if (!isValidRegistryHost(ns)) throw invalidParam('ns', 'is not a registry host', ns)
    out.ns = ns
  }
  if (kind === 'tags') {
    const n = singleParam(query, 'n')
    if (n !== undefined && n !== '') {
      const value = /^[0-9]{1,6}$/.test(n) ? Number(n) : Number.NaN
      if (!(value <= MAX_PAGE)) throw invalidParam('n', `is not a whole number from 0 to ${MAX_PAGE}`, n)
      out.n = value
    }
    const last = singleParam(query, 'last')
    if (last !== undefined && last !== '') {
      if (!isValidTag(last)) throw invalidParam('last', 'is not a tag', last)
      out.last = last
    }
  }
  if (kind === 'referrers') {
    const type = singleParam(query, 'artifactType')
    if (type !== undefined && type !== '') {
      if (!MEDIA_TYPE.test(type)) throw invalidParam('artifactType', 'is not a media type', type)
      out.artifactType = type
    }
  }
  return out
}

/** One parameter's value: undefined when absent; only an own property counts (never `toString` and kin). A repeated one is the client's 400. */
export function singleParam(query: unknown, name: string): string | undefined {
  if (query === null || typeof query !== 'object' || !Object.hasOwn(query, name)) return undefined
  const value: unknown = (query as Record<string, unknown>)[name]
  if (typeof value === 'string') return value
  if (Array.isArray(value)) throw new RegistryError('UNSUPPORTED', `query parameter ${name} is given more than once`, { status: 400, detail: { parameter: name, count: value.length } })
  if (value === undefined) return undefined
  throw invalidParam(name, 'is not a string', String(value))
}

export function invalidParam(name: string, reason: string, value: string): RegistryError {
  // Echo a bounded prefix: the detail is for a human, not a second copy of a 16 KB URL.
  return new RegistryError('UNSUPPORTED', `query parameter ${name} ${reason}`, { status: 400, detail: { parameter: name, value: value.slice(0, 256) } })
}
