// Property tests of the pure OCI parsers: repository names, tags, digests and
// /v2 paths, driven by random and adversarial text.
import fc from 'fast-check'
import t from 'tap'
import { digestOf, isDigestReference, parseDigest, requireDigest } from '../../src/oci/digest.js'
import { isValidName, isValidTag, requireName, requireTag } from '../../src/oci/names.js'
import { parseV2Path } from '../../src/routes/v2-path.js'
import { holds, nasty, valueOrTyped } from './fakes/property.js'

const component = fc.stringMatching(/^[a-z0-9]{1,10}(?:(?:\.|_|__|-{1,3})[a-z0-9]{1,10}){0,3}$/)
const validName = fc.array(component, { minLength: 1, maxLength: 6 }).map((parts) => parts.join('/'))
const validTag = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/)
const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n })
const validDigest = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(128).map((h) => `sha512:${h}`))

t.test('repository names: a boolean for any text; the spec grammar within 255 characters is valid', async (t) => {
  holds(t, 'isValidName agrees with requireName, which throws only NAME_INVALID', fc.property(nasty, (s) => {
    const valid = isValidName(s)
    const r = valueOrTyped(() => requireName(s), ['NAME_INVALID'])
    return valid === 'value' in r && (!valid || (s.length <= 255 && s === s.toLowerCase()))
  }))
  holds(t, 'grammar names are valid up to 255 characters', fc.property(validName, (n) => isValidName(n) === n.length <= 255))
  holds(t, 'a stray separator or capital makes a name invalid', fc.property(validName, fc.constantFrom('/', '//', '.', '-', '_', 'A', ' ', '%2F', ':'), fc.boolean(), (n, junk, atEnd) => !isValidName(atEnd ? n + junk : junk + n)))
  holds(t, 'names over 255 characters are invalid', fc.property(fc.integer({ min: 256, max: 5000 }), (len) => !isValidName('a'.repeat(len))))
})

t.test('tags: the spec grammar is valid, anything else TAG_INVALID', async (t) => {
  holds(t, 'grammar tags are valid and never digests', fc.property(validTag, (tag) => isValidTag(tag) && requireTag(tag) === tag && !isDigestReference(tag)))
  holds(t, 'requireTag accepts exactly the tag grammar, else TAG_INVALID', fc.property(nasty, (s) => {
    const r = valueOrTyped(() => requireTag(s), ['TAG_INVALID'])
    return 'value' in r ? /^[\w][\w.-]{0,127}$/.test(s) : !isValidTag(s)
  }))
})

t.test('digests: parse round-trips, anything else is undefined or DIGEST_INVALID', async (t) => {
  holds(t, 'digests round-trip', fc.property(validDigest, (d) => {
    const p = parseDigest(d)
    return p !== undefined && p.value === d && `${p.algorithm}:${p.hex}` === d && requireDigest(d).value === d && isDigestReference(d)
  }))
  holds(t, 'digestOf output parses', fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom('sha256', 'sha512') as fc.Arbitrary<'sha256' | 'sha512'>, (bytes, alg) => parseDigest(digestOf(bytes, alg))?.algorithm === alg))
  holds(t, 'parseDigest accepts exactly sha256/sha512 lowercase hex, else DIGEST_INVALID', fc.property(fc.oneof(nasty, fc.tuple(fc.constantFrom('sha256', 'sha512', 'SHA256', 'md5', 'sha256+b64u', ''), nasty).map(([a, h]) => `${a}:${h}`)), (s) => {
    const p = parseDigest(s)
    const r = valueOrTyped(() => requireDigest(s), ['DIGEST_INVALID'])
    if (p === undefined) return 'error' in r
    return 'value' in r && /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(s) && p.value === s
  }))
})

t.test('/v2 paths: a target or a typed error; built paths parse back', async (t) => {
  holds(t, 'any path is a target or NAME_UNKNOWN, NAME_INVALID, TAG_INVALID, DIGEST_INVALID', fc.property(fc.oneof(nasty.map((s) => `/v2/${s}`), nasty), (path) => {
    valueOrTyped(() => parseV2Path(path), ['NAME_UNKNOWN', 'NAME_INVALID', 'TAG_INVALID', 'DIGEST_INVALID'])
  }))
  holds(t, 'manifest paths round-trip', fc.property(validName, fc.oneof(validTag, validDigest), (name, ref) => {
    const p = parseV2Path(`/v2/${name}/manifests/${encodeURIComponent(ref)}`)
    return p.kind === 'manifest' && p.name === name && p.reference === ref
  }))
  holds(t, 'blob and referrers paths round-trip', fc.property(validName, validDigest, fc.constantFrom('blobs', 'referrers'), (name, digest, kind) => {
    const p = parseV2Path(`/v2/${name}/${kind}/${digest}`)
    return p.kind === (kind === 'blobs' ? 'blob' : 'referrers') && p.name === name && 'digest' in p && p.digest === digest
  }))
  holds(t, 'tags/list paths round-trip', fc.property(validName, (name) => {
    const p = parseV2Path(`/v2/${name}/tags/list`)
    return p.kind === 'tags' && p.name === name
  }))
})
