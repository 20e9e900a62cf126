// Property tests of what the edge checks before routing: the query string
// (`ns`, `n`, `last`, `artifactType`), registry hosts, the router, and how
// any thrown value becomes an answer.
import { parse as parseQueryString } from 'node:querystring'
import fc from 'fast-check'
import t from 'tap'
import { validateConfig } from '../../src/config/schema.js'
import { RegistryError } from '../../src/oci/errors.js'
import { isValidName, isValidRegistryHost, isValidTag } from '../../src/oci/names.js'
import { toRegistryError } from '../../src/routes/edge.js'
import { MAX_PAGE, parseQuery } from '../../src/routes/query.js'
import { Router } from '../../src/upstream/router.js'
import { holds, nasty, valueOrTyped } from './fakes/property.js'

const kinds = fc.constantFrom('base', 'manifest', 'blob', 'tags', 'referrers', 'upload') as fc.Arbitrary<'base' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload'>
const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?$/)
const host = fc.tuple(fc.array(label, { minLength: 1, maxLength: 4 }), fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined })).map(([ls, port]) => `${ls.join('.')}${port === undefined ? '' : `:${port}`}`)
const tag = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/)
const known = ['ns', 'n', 'last', 'artifactType'] as const
const value: fc.Arbitrary<unknown> = fc.oneof(nasty, fc.array(nasty, { minLength: 2, maxLength: 3 }), fc.constant(undefined), fc.integer(), fc.constant(null), fc.object({ maxDepth: 1 }))
const queryObject = fc.dictionary(fc.oneof(fc.constantFrom(...known, '__proto__', 'constructor', 'toString', 'NS'), nasty), value, { maxKeys: 6 })

t.test('any parsed query: checked values, or 400 UNSUPPORTED naming the parameter', async (t) => {
  holds(t, 'objects of any values', fc.property(fc.oneof(queryObject, fc.constantFrom(null, undefined, 'ns=x', 42)), kinds, (q, kind) => {
    const r = valueOrTyped(() => parseQuery(q, kind), ['UNSUPPORTED'])
    if ('error' in r) return r.error.status === 400 && known.includes((r.error.detail as { parameter: (typeof known)[number] }).parameter)
    const v = r.value
    return (v.ns === undefined || isValidRegistryHost(v.ns))
      && (v.n === undefined || (kind === 'tags' && Number.isInteger(v.n) && v.n >= 0 && v.n <= MAX_PAGE))
      && (v.last === undefined || (kind === 'tags' && isValidTag(v.last)))
      && (v.artifactType === undefined || kind === 'referrers')
  }))
  holds(t, 'query strings as the parser sees them, repeated keys included', fc.property(fc.array(fc.tuple(fc.constantFrom(...known), fc.oneof(nasty, host, tag)), { maxLength: 6 }), kinds, (pairs, kind) => {
    const qs = pairs.map(([k, v]) => `${k}=${v}`).join('&')
    valueOrTyped(() => parseQuery(parseQueryString(qs), kind), ['UNSUPPORTED'])
  }))
  holds(t, 'a known parameter given twice is refused', fc.property(fc.constantFrom(...known), fc.string(), fc.string(), (name, a, b) => {
    const kind = name === 'ns' ? 'manifest' : name === 'artifactType' ? 'referrers' : 'tags'
    const r = valueOrTyped(() => parseQuery(parseQueryString(`${name}=${encodeURIComponent(a)}&${name}=${encodeURIComponent(b)}`), kind), ['UNSUPPORTED'])
    return 'error' in r && r.error.status === 400
  }))
  holds(t, 'well-formed values round-trip', fc.property(host, fc.integer({ min: 0, max: MAX_PAGE }), tag, (ns, n, last) => {
    const q = parseQuery(parseQueryString(`ns=${encodeURIComponent(ns)}&n=${n}&last=${encodeURIComponent(last)}&other=x&other=y`), 'tags')
    return q.ns === ns && q.n === n && q.last === last
  }))
  holds(t, 'unknown parameters are ignored, whatever they hold', fc.property(fc.dictionary(fc.oneof(fc.constantFrom('__proto__', 'constructor', 'toString', 'NS', 'N'), fc.stringMatching(/^x[a-z]{0,5}$/)), value), kinds, (q, kind) => Object.keys(parseQuery(q, kind)).length === 0))
})

t.test('registry hosts', async (t) => {
  holds(t, 'DNS names with a port are hosts', fc.property(host, (h) => isValidRegistryHost(h)))
  holds(t, 'a host never contains a slash, space or percent sign, and is at most 255 long', fc.property(nasty, (s) => !isValidRegistryHost(s) || (!/[/ %]/.test(s) && s.length <= 255)))
})

const config = validateConfig({
  upstreams: {
    'docker.io': { url: 'https://registry-1.docker.io' },
    'ghcr.io': { url: 'https://ghcr.io', repositories: ['myorg/**'] },
    'reg.example:5443': { url: 'https://reg.example:5443' },
  },
  defaultUpstream: 'docker.io',
}, {})
const router = new Router(config.upstreams, config.defaultUpstream)

t.test('the router: a route to a valid repository, or DENIED / NAME_INVALID', async (t) => {
  const name = fc.oneof(nasty, fc.tuple(fc.constantFrom('docker.io/', 'ghcr.io/myorg/', 'reg.example:5443/', 'evil.example/', ''), fc.stringMatching(/^[a-z0-9]{1,300}$/)).map(([p, n]) => p + n))
  holds(t, 'any name and ns', fc.property(name, fc.option(fc.oneof(nasty, fc.constantFrom('docker.io', 'ghcr.io', 'reg.example:5443', 'DOCKER.IO')), { nil: undefined }), (n, ns) => {
    const r = valueOrTyped(() => router.route(n, ns), ['DENIED', 'NAME_INVALID'])
    return 'error' in r || (isValidName(r.value.repository) && r.value.repository.length <= 255)
  }))
})

t.test('anything thrown becomes a registry error: 4xx kept, the rest 500', async (t) => {
  const thrown = fc.oneof(
    fc.anything(),
    fc.record({ statusCode: fc.integer({ min: 400, max: 499 }), message: fc.anything(), code: fc.anything() }),
    fc.record({ statusCode: fc.oneof(fc.integer({ min: -1, max: 700 }), fc.constant(Number.NaN)), message: fc.string(), code: fc.string() }).map((o) => Object.assign(new Error(o.message), o)),
    fc.constantFrom(new RegistryError('DENIED', 'x'), new TypeError('boom'), null, undefined),
  )
  holds(t, 'any value', fc.property(thrown, (err) => {
    const e = toRegistryError(err)
    if (typeof e.body().errors[0]?.message !== 'string') return false
    const status = (err as { statusCode?: unknown } | null)?.statusCode
    if (err instanceof RegistryError) return e === err
    if (typeof status === 'number' && status >= 400 && status < 500) return e.status === status && e.body().errors[0]?.code === 'UNSUPPORTED'
    return e.status === 500 && e.code === 'UNKNOWN'
  }))
})
