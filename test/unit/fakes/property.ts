// Shared pieces of the property tests: adversarial strings, and the rule that
// a parser returns a value or throws our typed error, never anything else.
import fc from 'fast-check'
import type { Test } from 'tap'
import { RegistryError, type ErrorCode } from '../../../src/oci/errors.js'

/** One seed for every property run, so a failure replays; override with FC_SEED. */
export const FC_OPTIONS = { seed: Number(process.env['FC_SEED'] ?? 20261203), numRuns: 1000 }

/** Characters parsers trip on: separators, escapes, quotes, controls, non-ASCII. */
export const nastyChar = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...'aZ09-_.:/@+~%=;,"\\ \t?#&[]') },
  { weight: 2, arbitrary: fc.constantFrom('%zz', '%00', '%2F', '..', '//', '__', '--', 'sha256:', 'bytes=', '\u0000', '\r\n', '\x7f', 'é', '\u{1f600}', '\u202e', '\ud800', '__proto__', 'constructor') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
)

/** Random and adversarial text, now and then very long. */
export const nasty = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: nastyChar, maxLength: 60 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('a', 'a/', '-', '9', '"', '\\', '=', ','), fc.integer({ min: 100, max: 20_000 })).map(([s, n]) => s.repeat(n)) },
)

/**
 * Runs fn: a value, or a RegistryError with one of `codes`. Anything else
 * thrown (a TypeError, a RangeError) is rethrown and fails the property.
 */
export function valueOrTyped<T>(fn: () => T, codes: readonly ErrorCode[]): { value: T } | { error: RegistryError } {
  try {
    return { value: fn() }
  } catch (err) {
    if (err instanceof RegistryError && codes.includes(err.code) && err.status >= 400 && err.status < 500) return { error: err }
    throw err
  }
}

/** fc.assert with the shared seed, recorded as one passing assertion (fast-check's message names seed and path on failure). */
export function holds<Ts extends [unknown, ...unknown[]]>(t: Test, name: string, property: fc.IProperty<Ts>, runs?: number): void {
  fc.assert(property, { ...FC_OPTIONS, ...(runs !== undefined ? { numRuns: runs } : {}) })
  t.pass(name)
}
