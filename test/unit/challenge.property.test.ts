// Property tests of the WWW-Authenticate parser: never throws, and challenges
// written out the way registries write them parse back to what was written.
import fc from 'fast-check'
import t from 'tap'
import { parseChallenges, type Challenge } from '../../src/upstream/challenge.js'
import { holds, nasty } from './fakes/property.js'

const token = fc.oneof(fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}$/), fc.constantFrom('Bearer', 'Basic', 'realm', 'service', 'scope', 'error', '__proto__', 'constructor', 'toString', 'hasOwnProperty'))
const value = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('repository:reg.example:5000/a/b:pull,push', 'a"b', 'a\\b', '', ',', '="'))
const challenge = fc.record({
  scheme: token,
  params: fc.uniqueArray(fc.tuple(token, value), { selector: ([k]) => k.toLowerCase(), maxLength: 5 }),
})
const quote = (v: string): string => `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`
const write = (c: { scheme: string; params: Array<[string, string]> }): string => [c.scheme, c.params.map(([k, v]) => `${k}=${quote(v)}`).join(', ')].filter((x) => x !== '').join(' ')
// Own enumerable entries only: a parameter named __proto__ must be data, not a prototype.
const canonical = (c: Challenge): unknown => [c.scheme, Object.keys(c.params).map((k) => [k, c.params[k]])]
const expected = (c: { scheme: string; params: Array<[string, string]> }): Challenge => ({ scheme: c.scheme.toLowerCase(), params: Object.fromEntries(c.params.map(([k, v]) => [k.toLowerCase(), v])) as Record<string, string> })

t.test('any header value or list of them: challenges of strings, never a throw', async (t) => {
  holds(t, 'any input gives lowercase schemes and string params', fc.property(fc.oneof(nasty, fc.array(nasty, { maxLength: 4 })), (h) => {
    for (const c of parseChallenges(h)) {
      if (typeof c.scheme !== 'string' || c.scheme !== c.scheme.toLowerCase() || c.scheme === '') return false
      for (const [k, v] of Object.entries(c.params)) if (typeof v !== 'string' || k !== k.toLowerCase()) return false
    }
    return true
  }))
})

t.test('written challenges parse back, one header or several', async (t) => {
  holds(t, 'written challenges parse back', fc.property(fc.array(challenge, { minLength: 1, maxLength: 4 }), fc.boolean(), (cs, split) => {
    const parsed = parseChallenges(split ? cs.map(write) : cs.map(write).join(', '))
    return JSON.stringify(parsed.map(canonical)) === JSON.stringify(cs.map(expected).map(canonical))
  }))
})
