// Random and adversarial HTTP requests for a registry mirror, and the rules
// every answer must keep: no 5xx, an OCI error body on every 4xx, the API
// version header everywhere. Requests are raw bytes, so they can be anything
// a socket can carry, not only what an HTTP client agrees to send.
import fc from 'fast-check'
import type { RawAnswer } from './raw-http.js'

/** What the generated requests may name: the real repository, digests and upstream of a stack. */
export interface HostileTargets {
  repo: string
  /** host:port of the upstream, a valid `ns` and path prefix */
  upstreamHost: string
  /** digests of manifests: the references a manifests/ request may name */
  manifestDigests: readonly string[]
  /** digests of blobs (layers, configs, and manifests, which are blobs too) */
  blobDigests: readonly string[]
  tags: readonly string[]
}

export interface HostileRequest {
  /** raw bytes for the socket */
  bytes: string
  method: string
  /** true when a conforming HTTP/1.1 server must answer (not left waiting for more bytes) */
  mustAnswer: boolean
}

const ERROR_CODES = new Set(['BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'TAG_INVALID', 'RANGE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS', 'UNAVAILABLE', 'UNKNOWN'])

// Characters that break parsers: percent signs and bad escapes, separators, dots, NUL, controls, non-ASCII.
const junkChar = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('a', 'Z', '0', '-', '_', '.', '/', ':', '@', '+', '~') },
  { weight: 3, arbitrary: fc.constantFrom('%', '%zz', '%2F', '%2e', '%00', '%ff', '%', '%%', '%u00e9', '..', '//', '?', '#', ';', '=', '&', '[', ']', '\\', '"', "'", '<', '>', '{', '}', '|', '^', '`') },
  { weight: 1, arbitrary: fc.constantFrom('\0', '\t', ' ', '\x7f', '\x01', '\r', '\n', 'é', '\u{1f600}', '\u202e', '\uffff') },
)
const junk = (max: number): fc.Arbitrary<string> => fc.string({ unit: junkChar, maxLength: max })

const validName = fc.stringMatching(/^[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}(?:\/[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}){0,3}$/)
const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n })
const bigNumber = fc.oneof(fc.integer({ min: -5, max: 20_000 }).map(String), fc.constantFrom('', '-0', '1e3', '0x10', '9'.repeat(30), '9'.repeat(400), 'NaN', 'Infinity', ' 1', '1 '))

function nameArb(t: HostileTargets): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(t.repo, `${t.upstreamHost}/${t.repo}`, 'library/alpine', 'alpine', 'docker.io/library/alpine', 'ghcr.io/a/b', 'localhost/x', `${t.upstreamHost}`) },
    { weight: 3, arbitrary: validName },
    { weight: 3, arbitrary: junk(16).filter((s) => s.length > 0) },
    { weight: 1, arbitrary: fc.integer({ min: 250, max: 3000 }).map((n) => 'a'.repeat(n)) },
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 2500 }).map((n) => 'a/'.repeat(n) + 'a') },
  )
}

function digestArb(known: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...known) },
    { weight: 2, arbitrary: hex(64).map((h) => `sha256:${h}`) },
    { weight: 1, arbitrary: hex(128).map((h) => `sha512:${h}`) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('sha256', 'SHA256', 'sha512', 'md5', 'sha256+b64', '', 'a'.repeat(300)), junk(70)).map(([a, h]) => `${a}:${h}`) },
    { weight: 1, arbitrary: junk(40) },
  )
}

function referenceArb(t: HostileTargets): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...t.tags) },
    { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/) },
    // Not a layer's digest: distribution answers 500 for manifests/<blob digest>, which the mirror
    // relays as 502; that is the upstream's failure, not the input's.
    { weight: 2, arbitrary: digestArb(t.manifestDigests) },
    { weight: 2, arbitrary: junk(16) },
    { weight: 1, arbitrary: fc.integer({ min: 120, max: 10_000 }).map((n) => 'x'.repeat(n)) },
  )
}

function pathArb(t: HostileTargets): fc.Arbitrary<string> {
  const endpoint = fc.oneof(
    { weight: 4, arbitrary: referenceArb(t).map((r) => `manifests/${r}`) },
    { weight: 4, arbitrary: digestArb(t.blobDigests).map((d) => `blobs/${d}`) },
    { weight: 2, arbitrary: fc.constant('tags/list') },
    { weight: 1, arbitrary: digestArb(t.manifestDigests).map((d) => `referrers/${d}`) },
    { weight: 1, arbitrary: junk(20).map((j) => `blobs/uploads/${j}`) },
    { weight: 1, arbitrary: junk(20) },
  )
  return fc.oneof(
    { weight: 16, arbitrary: fc.tuple(nameArb(t), endpoint).map(([n, e]) => `/v2/${n}/${e}`) },
    { weight: 1, arbitrary: fc.constantFrom('/v2/', '/v2', '/v2//', '/v2/_catalog', '/', '*', '/healthz', '/metrics', '/readyz', '/v1/_ping') },
    { weight: 1, arbitrary: fc.constantFrom('/api/v1/prefetch', '/api/v1/prefetch/', '/api/v1/prepull', '/api/', '/api/v1', '/api/v2/prefetch') },
    { weight: 1, arbitrary: junk(40).map((j) => `/api/v1/prefetch/${j}`) },
    { weight: 2, arbitrary: junk(60).map((j) => `/v2/${j}`) },
    { weight: 1, arbitrary: junk(30).map((j) => `/${j}`) },
    { weight: 1, arbitrary: fc.integer({ min: 8_000, max: 12_000 }).map((n) => `/v2/${'a'.repeat(n)}/manifests/x`) },
    { weight: 1, arbitrary: fc.tuple(nameArb(t), referenceArb(t)).map(([n, r]) => `http://mirror.invalid/v2/${n}/manifests/${r}`) },
  )
}

function queryArb(t: HostileTargets): fc.Arbitrary<string> {
  const key = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('ns', 'n', 'last', 'artifactType') },
    { weight: 1, arbitrary: fc.constantFrom('ns[]', 'ns[a]', '__proto__', 'constructor', 'toString', 'NS', '', 'ns%00', '%zz') },
    { weight: 1, arbitrary: junk(10) },
  )
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(t.upstreamHost, 'docker.io', 'ghcr.io', 'evil.example', 'localhost:5000', '[::1]:5000', '127.0.0.1', '') },
    { weight: 2, arbitrary: bigNumber },
    { weight: 2, arbitrary: fc.constantFrom(...t.tags, 'application/vnd.oci.image.manifest.v1+json', 'a/b') },
    { weight: 1, arbitrary: junk(40) },
    { weight: 1, arbitrary: fc.integer({ min: 256, max: 4000 }).map((n) => 'b'.repeat(n)) },
  )
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom('', '?', '??', '?&&=', '?ns', '?ns&ns', `?ns=${t.upstreamHost}`) },
    { weight: 3, arbitrary: fc.array(fc.tuple(key, value), { minLength: 1, maxLength: 5 }).map((kv) => `?${kv.map(([k, v]) => `${k}=${v}`).join('&')}`) },
  )
}

const rangeArb = fc.oneof(
  fc.tuple(bigNumber, bigNumber).map(([a, b]) => `bytes=${a}-${b}`),
  bigNumber.map((a) => `bytes=${a}-`),
  bigNumber.map((n) => `bytes=-${n}`),
  fc.constantFrom('bytes=0-1,5-6', 'bytes=', 'bytes', 'items=0-1', 'bytes=--1', 'bytes=1-0', 'BYTES = 0 - 0', 'bytes=0-0, bytes=1-1'),
  junk(30),
)

// Header values: printable, or (rarely) with controls a parser must refuse.
const headerValue = fc.oneof({ weight: 15, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 80 }) }, { weight: 1, arbitrary: junk(20) })

/** A header present in about `percent` of requests. */
const sometimes = (name: string, percent: number, value: fc.Arbitrary<string>): fc.Arbitrary<string | undefined> =>
  fc.oneof({ weight: 100 - percent, arbitrary: fc.constant(undefined) }, { weight: percent, arbitrary: value.map((v) => `${name}: ${v}`) })

function headersArb(): fc.Arbitrary<string[]> {
  return fc
    .tuple(
      sometimes('range', 40, rangeArb),
      sometimes('accept', 30, fc.oneof(fc.constantFrom('application/vnd.oci.image.index.v1+json', '*/*', 'application/json;q=0.5, */*;q=abc', ''), headerValue)),
      sometimes('authorization', 20, fc.oneof(fc.constantFrom('Bearer', 'Bearer ', 'Basic !!!', 'Basic Og==', 'Negotiate x', `Bearer ${'t'.repeat(4000)}`), headerValue)),
      sometimes('expect', 5, fc.constantFrom('100-continue', 'bogus')),
      sometimes('if-none-match', 5, headerValue),
      sometimes('x-junk', 10, headerValue),
      sometimes('content-type', 5, fc.constantFrom('application/json', ';;;', 'text/plain; charset=', '')),
      sometimes('upgrade', 3, fc.constantFrom('websocket', 'h2c')),
    )
    .map((hs) => hs.filter((h): h is string => h !== undefined))
}

const methodArb = fc.oneof(
  { weight: 10, arbitrary: fc.constant('GET') },
  { weight: 5, arbitrary: fc.constant('HEAD') },
  { weight: 4, arbitrary: fc.constantFrom('POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'CONNECT', 'MKCOL', 'SEARCH', 'FOO', 'get') },
)

/** Requests shaped like HTTP/1.1 with random parts; the connection closes after each. */
export function requestArb(t: HostileTargets): fc.Arbitrary<HostileRequest> {
  return fc.tuple(methodArb, pathArb(t), queryArb(t), headersArb()).map(([method, path, query, headers]) => ({
    method,
    bytes: `${method} ${path}${query} HTTP/1.1\r\nhost: mirror.test\r\nconnection: close\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`,
    mustAnswer: true,
  }))
}

/** JSON API requests with bodies: valid-looking jobs, wrong shapes, and junk. */
export function apiRequestArb(t: HostileTargets): fc.Arbitrary<HostileRequest> {
  const image = fc.oneof(
    fc.constantFrom(`${t.upstreamHost}/${t.repo}:${t.tags[0] ?? 'latest'}`, 'nginx', 'quay.io/x/y:1', '', 'A B', `${t.upstreamHost}/${t.repo}@sha256:${'0'.repeat(64)}`),
    junk(30),
  )
  const body = fc.oneof(
    { weight: 3, arbitrary: fc.record({ images: fc.array(image, { maxLength: 4 }), platforms: fc.option(fc.array(fc.constantFrom('linux/amd64', 'linux', '', 'a/b/c/d'), { maxLength: 3 }), { nil: undefined }) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)) },
    { weight: 2, arbitrary: fc.json({ maxDepth: 3 }) },
    { weight: 1, arbitrary: junk(60) },
  )
  const type = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', '')
  return fc.tuple(fc.constantFrom('POST', 'POST', 'PUT', 'GET'), fc.constantFrom('/api/v1/prefetch', '/api/v1/prepull', '/api/v1/prefetch/x'), type, body).map(([method, path, ctype, text]) => {
    const bytes = Buffer.from(text, 'utf8')
    return {
      method,
      bytes: `${method} ${path} HTTP/1.1\r\nhost: mirror.test\r\nconnection: close\r\n${ctype !== '' ? `content-type: ${ctype}\r\n` : ''}content-length: ${bytes.byteLength}\r\n\r\n${text}`,
      mustAnswer: true,
    }
  })
}

/** GETs of the insights API and the status page with random query strings. */
export function insightsQueryArb(t: HostileTargets): fc.Arbitrary<HostileRequest> {
  const value = fc.oneof(fc.constantFrom('1', '0', '-1', '50', '99999999', '1e3', '', '%00', '%ZZ', `${t.upstreamHost}/${t.repo}:${t.tags[0] ?? 'latest'}`), junk(20).map(encodeURIComponent))
  const param = fc.tuple(fc.constantFrom('limit', 'image', 'minutes', 'refresh', '__proto__', 'constructor', 'x'), value).map(([k, v]) => `${k}=${v}`)
  const query = fc.array(param, { maxLength: 4 }).map((ps) => (ps.length === 0 ? '' : `?${ps.join('&')}`))
  const path = fc.constantFrom('/api/v1/pulls', '/api/v1/images', '/api/v1/layers', '/api/v1/summary', '/api/v1/timeline', '/', '/ui/status.js')
  return fc.tuple(fc.constantFrom('GET', 'GET', 'HEAD'), path, query).map(([method, p, q]) => ({
    method,
    bytes: `${method} ${p}${q} HTTP/1.1\r\nhost: mirror.test\r\nconnection: close\r\n\r\n`,
    mustAnswer: true,
  }))
}

/** Malformed request lines and framing; a server may also wait for more bytes on some of these. */
export function rawArb(t: HostileTargets): fc.Arbitrary<HostileRequest> {
  const line = fc.oneof(
    fc.constantFrom(
      `GET /v2/%zz/manifests/x HTTP/1.1`,
      `GET /v2/${t.repo}/manifests/%zz HTTP/1.1`,
      `GET /v2/a\0b/manifests/x HTTP/1.1`,
      `GET /v2/${t.repo}/manifests/oci HTTP/9.9`,
      `GET /v2/${t.repo}/manifests/oci HTTP/1.1 extra`,
      `GET  /v2/ HTTP/1.1`,
      `GET /v2/`,
      `GET`,
      `\0\0\0\0`,
      `PRI * HTTP/2.0`,
      `GET /v2/ HTTP/1.1\r\nbad header line`,
      `GET /v2/ HTTP/1.1\r\nx: a\r\n folded`,
      `GET /v2/ HTTP/1.1\r\nhost: a\r\nhost: b`,
      `GET /v2/ HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2`,
      `GET /v2/ HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3`,
      `GET /v2/ HTTP/1.1\r\nx-big: ${'h'.repeat(20_000)}`,
      `GET /v2/${'p'.repeat(70_000)} HTTP/1.1`,
    ),
    fc.string({ unit: 'binary', maxLength: 120 }),
    fc.tuple(methodArb, junk(80)).map(([m, p]) => `${m} /v2/${p} HTTP/1.1`),
  )
  return line.map((l) => ({ method: l.split(' ', 1)[0] ?? '', bytes: `${l}\r\nconnection: close\r\n\r\n`, mustAnswer: false }))
}

/** Everything wrong with one answer (empty when it keeps the rules). */
export function problems(req: HostileRequest, a: RawAnswer | undefined): string[] {
  if (a === undefined || a.status === 0) return req.mustAnswer ? ['no answer'] : []
  const out: string[] = []
  if (!(a.status >= 200 && a.status < 600)) out.push(`status line ${a.status}`)
  if (a.status >= 500) out.push(`status ${a.status}: ${a.body.subarray(0, 200).toString('latin1')}`)
  if (a.headers['docker-distribution-api-version'] !== 'registry/2.0') out.push(`status ${a.status} without docker-distribution-api-version`)
  if (a.status >= 400 && a.status < 500 && req.method !== 'HEAD') {
    const type = a.headers['content-type'] ?? ''
    if (!type.startsWith('application/json')) out.push(`status ${a.status} with content-type ${JSON.stringify(type)}`)
    const err = ociError(a.body)
    if (err !== undefined) out.push(`status ${a.status}: ${err}: ${a.body.subarray(0, 200).toString('latin1')}`)
  }
  return out
}

function ociError(body: Buffer): string | undefined {
  let doc: unknown
  try {
    doc = JSON.parse(body.toString('utf8'))
  } catch {
    return 'body is not JSON'
  }
  const errors = (doc as { errors?: unknown } | null)?.errors
  if (!Array.isArray(errors) || errors.length === 0) return 'no errors array'
  for (const e of errors as Array<Record<string, unknown>>) {
    if (typeof e['code'] !== 'string' || !ERROR_CODES.has(e['code'])) return `error code ${JSON.stringify(e['code'])}`
    if (typeof e['message'] !== 'string') return 'error without message'
    if (!('detail' in e)) return 'error without detail'
  }
  return undefined
}
