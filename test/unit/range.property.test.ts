// Property tests of the Range header parser: any header against any size is
// a range inside the blob, "ignore it" (undefined), or 416 RANGE_INVALID.
import fc from 'fast-check'
import t from 'tap'
import { parseRange } from '../../src/cache/range.js'
import { holds, nasty, valueOrTyped } from './fakes/property.js'

const size = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }))
const digits = fc.oneof(fc.nat().map(String), fc.bigInt({ min: 0n, max: 10n ** 40n }).map(String), fc.constantFrom('', '0', '00', '9'.repeat(400)))
const space = fc.constantFrom('', ' ', '  ', '\t')
const header = fc.oneof(
  nasty,
  fc.tuple(space, fc.constantFrom('bytes', 'BYTES', 'Bytes', 'items', ''), space, digits, space, digits, fc.constantFrom('', ',0-1', ', 5-', ',')).map(([s1, unit, s2, a, s3, b, tail]) => `${s1}${unit}${s2}=${a}${s3}-${b}${tail}`),
)

t.test('any header: a range within the blob, undefined, or 416 with the size', async (t) => {
  holds(t, 'any header: inside the blob, ignored, or 416', fc.property(fc.option(header, { nil: undefined }), size, (h, n) => {
    const r = valueOrTyped(() => parseRange(h, n), ['RANGE_INVALID'])
    if ('error' in r) return r.error.status === 416 && r.error.headers['content-range'] === `bytes */${n}`
    const range = r.value
    if (range === undefined) return true
    return Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.start <= range.end && range.end < n
  }))
})

t.test('well-formed single ranges round-trip', async (t) => {
  const inside = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }).chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 })).chain(([n, a]) => fc.tuple(fc.constant(n), fc.constant(a), fc.integer({ min: a, max: n - 1 }))))
  holds(t, 'closed and open ranges round-trip', fc.property(inside, ([n, a, b]) => {
    const closed = parseRange(`bytes=${a}-${b}`, n)
    const open = parseRange(`bytes=${a}-`, n)
    return closed?.start === a && closed.end === b && open?.start === a && open.end === n - 1
  }))
  holds(t, 'suffix ranges give the last bytes', fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.integer({ min: 1, max: 2_000_000 }), (n, suffix) => {
    const r = parseRange(`bytes=-${suffix}`, n)
    return r?.start === Math.max(0, n - suffix) && r.end === n - 1
  }))
  holds(t, 'a start at or past the end is 416', fc.property(size, fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n, extra) => {
    const r = valueOrTyped(() => parseRange(`bytes=${n + (extra % 1000)}-`, n), ['RANGE_INVALID'])
    return 'error' in r
  }))
})
