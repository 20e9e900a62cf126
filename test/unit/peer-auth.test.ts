// Peer request signatures: what verifies, and why each wrong one does not.
import fc from 'fast-check'
import t from 'tap'
import { PEER_SIGNATURE_HEADER, PEER_TIME_HEADER, signPeerRequest, verifyPeerRequest } from '../../src/cluster/peer-auth.js'

const secret = Buffer.from('0123456789abcdef0123456789abcdef')
const path = '/_stevedore/peer/blobs/sha256:abc?ns=docker.io&repo=library%2Falpine'
const now = 1_767_000_000_000

t.test('a signed request verifies', async (t) => {
  const headers = signPeerRequest(secret, 'GET', path, now)
  t.same(Object.keys(headers).sort(), [PEER_SIGNATURE_HEADER, PEER_TIME_HEADER].sort())
  t.equal(headers[PEER_TIME_HEADER], '1767000000', 'unix seconds, decimal')
  t.match(headers[PEER_SIGNATURE_HEADER], /^[0-9a-f]{64}$/, 'hex HMAC-SHA256')
  t.same(verifyPeerRequest(secret, 'GET', path, headers, now), { ok: true })
  t.same(verifyPeerRequest(secret, 'get', path, headers, now), { ok: true }, 'the method is compared upper-case')
  t.same(verifyPeerRequest(secret, 'GET', path, { ...headers, [PEER_SIGNATURE_HEADER]: headers[PEER_SIGNATURE_HEADER]?.toUpperCase() }, now), { ok: true }, 'hex in either case')
  t.same(verifyPeerRequest(secret, 'GET', path, headers, now + 59_000), { ok: true }, 'within the window')
  t.same(verifyPeerRequest(secret, 'GET', path, signPeerRequest(secret, 'GET', path)), { ok: true }, 'the clocks default to now')
})

t.test('what is signed is exactly METHOD, path with query and time', async (t) => {
  const headers = signPeerRequest(secret, 'GET', path, now)
  const bad = { ok: false, reason: 'bad_signature' }
  t.same(verifyPeerRequest(Buffer.from('another secret of some length!!'), 'GET', path, headers, now), bad, 'wrong secret')
  t.same(verifyPeerRequest(secret, 'HEAD', path, headers, now), bad, 'other method')
  t.same(verifyPeerRequest(secret, 'GET', '/_stevedore/peer/blobs/sha256:abd?ns=docker.io&repo=library%2Falpine', headers, now), bad, 'other path')
  t.same(verifyPeerRequest(secret, 'GET', '/_stevedore/peer/blobs/sha256:abc?ns=ghcr.io&repo=library%2Falpine', headers, now), bad, 'other query')
  t.same(verifyPeerRequest(secret, 'GET', path, { ...headers, [PEER_TIME_HEADER]: '1767000001' }, now), bad, 'time changed after signing')
})

t.test('a time more than the window away either way is expired', async (t) => {
  const expired = { ok: false, reason: 'expired' }
  t.same(verifyPeerRequest(secret, 'GET', path, signPeerRequest(secret, 'GET', path, now - 61_000), now), expired, '61 s old')
  t.same(verifyPeerRequest(secret, 'GET', path, signPeerRequest(secret, 'GET', path, now + 61_000), now), expired, '61 s in the future')
  t.same(verifyPeerRequest(secret, 'GET', path, signPeerRequest(secret, 'GET', path, now - 5_000), now, 4_000), expired, 'a narrower window')
  t.same(verifyPeerRequest(secret, 'GET', path, signPeerRequest(secret, 'GET', path, now - 61_000), now, 120_000), { ok: true }, 'a wider one')
})

t.test('missing and malformed headers', async (t) => {
  const headers = signPeerRequest(secret, 'GET', path, now)
  const time = headers[PEER_TIME_HEADER] ?? ''
  const signature = headers[PEER_SIGNATURE_HEADER] ?? ''
  const missing = { ok: false, reason: 'missing' }
  const malformed = { ok: false, reason: 'malformed' }
  t.same(verifyPeerRequest(secret, 'GET', path, {}, now), missing, 'none')
  t.same(verifyPeerRequest(secret, 'GET', path, { [PEER_TIME_HEADER]: time }, now), missing, 'no signature')
  t.same(verifyPeerRequest(secret, 'GET', path, { [PEER_SIGNATURE_HEADER]: signature, [PEER_TIME_HEADER]: undefined }, now), missing, 'no time')
  for (const [what, h] of [
    ['non-numeric time', { [PEER_TIME_HEADER]: 'soon', [PEER_SIGNATURE_HEADER]: signature }],
    ['negative time', { [PEER_TIME_HEADER]: '-1767000000', [PEER_SIGNATURE_HEADER]: signature }],
    ['fractional time', { [PEER_TIME_HEADER]: '1767000000.5', [PEER_SIGNATURE_HEADER]: signature }],
    ['empty time', { [PEER_TIME_HEADER]: '', [PEER_SIGNATURE_HEADER]: signature }],
    ['time in ms', { [PEER_TIME_HEADER]: `${now}0000`, [PEER_SIGNATURE_HEADER]: signature }],
    ['hex that is not hex', { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: `${signature.slice(0, 63)}g` }],
    ['short signature', { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: signature.slice(0, 62) }],
    ['long signature', { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: `${signature}00` }],
    ['base64 signature', { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: Buffer.from(signature, 'hex').toString('base64') }],
    ['repeated time', { [PEER_TIME_HEADER]: [time, time], [PEER_SIGNATURE_HEADER]: signature }],
    ['repeated signature', { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: [signature, signature] }],
    ['an empty list', { [PEER_TIME_HEADER]: [], [PEER_SIGNATURE_HEADER]: signature }],
  ] as Array<[string, Record<string, string | string[] | undefined>]>) t.same(verifyPeerRequest(secret, 'GET', path, h, now), malformed, what)
})

t.test('any header values: a verdict, never an exception; ok only for the real signature', async (t) => {
  const good = signPeerRequest(secret, 'GET', path, now)
  const hex = fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 64, maxLength: 64 })
  const value = (real: string | undefined): fc.Arbitrary<string | string[] | undefined> =>
    fc.oneof(fc.constant(real), fc.constant(undefined), fc.string(), fc.array(fc.string(), { maxLength: 3 }), hex, fc.nat().map(String))
  let accepted = 0
  fc.assert(fc.property(value(good[PEER_TIME_HEADER]), value(good[PEER_SIGNATURE_HEADER]), (time, signature) => {
    const r = verifyPeerRequest(secret, 'GET', path, { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: signature }, now)
    const real = time === good[PEER_TIME_HEADER] && signature === good[PEER_SIGNATURE_HEADER]
    if (r.ok) accepted++
    return r.ok === real
  }), { numRuns: 2000 })
  t.ok(accepted > 0, `the real pair was drawn and accepted (${accepted} times)`)
})
