import t from 'tap'
import { pino } from 'pino'
import { RateLimitTracker, parseRetryAfter, parseReset } from '../../src/upstream/rate-limit.js'
import { retryCallback, METADATA_RETRIES, BLOB_RETRIES } from '../../src/upstream/retry.js'

const H = 3_600_000

t.test('a 429 pause is kept whole: later answers, token services and CDN hops never shorten it', async (t) => {
  let now = 1_000_000
  const rl = new RateLimitTracker({ backoffMs: 60_000, now: () => now })
  rl.observe('hub', 429, { 'retry-after': '3600' })
  t.equal(rl.refusedForMs('hub'), H)
  now += 1000
  rl.observe('hub', 429, {}) // a token service's 429 without Retry-After: the backoff, shorter
  rl.observe('hub', 200, { 'ratelimit-remaining': '50' }) // a CDN hop that says all is well
  t.equal(rl.refusedForMs('hub'), H - 1000, 'still the hour, less the second that passed')
  t.ok(rl.getsPaused('hub'))
  t.equal(rl.refusedForMs('other'), 0, 'per registry')
  const e = rl.refusal('docker.io', 'hub')
  t.equal(e.status, 429)
  t.equal(e.code, 'TOOMANYREQUESTS')
  t.equal(e.headers['retry-after'], '3599', 'the remaining time, whole seconds')
  now += H
  t.equal(rl.refusedForMs('hub'), 0, 'over once its time is up')
  t.notOk(rl.getsPaused('hub'))
})

t.test('Retry-After as a date, RateLimit-Reset, the cap of 6 h (logged)', async (t) => {
  const now = Date.parse('2026-12-02T10:00:00Z')
  t.equal(parseRetryAfter('Wed, 02 Dec 2026 10:30:00 GMT', now), 30 * 60_000)
  t.equal(parseRetryAfter('120', now), 120_000)
  t.equal(parseRetryAfter('soon', now), undefined)
  t.equal(parseRetryAfter('-5', now), undefined)
  t.equal(parseReset('30', now), 30_000, 'delta seconds (the IETF draft)')
  t.equal(parseReset(String(now / 1000 + 90), now), 90_000, 'epoch seconds')
  const lines: string[] = []
  const log = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) })
  const rl = new RateLimitTracker({ backoffMs: 60_000, log, now: () => now })
  rl.observe('q', 429, { 'retry-after': String(48 * 3600) })
  t.equal(rl.refusedForMs('q'), 6 * H, 'capped at 6 h')
  t.ok(lines.some((l) => l.includes('capped')), 'and logged')
  rl.observe('r', 429, { 'ratelimit-reset': '45' })
  t.equal(rl.refusedForMs('r'), 45_000, 'RateLimit-Reset when there is no Retry-After')
})

t.test('a spent pull budget pauses manifest GETs only; the registry is not refused', async (t) => {
  let now = 0
  const rl = new RateLimitTracker({ backoffMs: 60_000, now: () => now })
  rl.observe('hub', 200, { 'ratelimit-remaining': '0;w=21600' })
  t.ok(rl.getsPaused('hub'))
  t.equal(rl.refusedForMs('hub'), 0, 'HEADs may still go (Docker Hub does not count them)')
  t.equal(rl.remaining('hub'), 0)
  now += 60_001
  t.notOk(rl.getsPaused('hub'))
})

t.test('retry schedules: transient failures only, never 429, bounded, with jitter', async (t) => {
  const decide = (policy: typeof METADATA_RETRIES, err: Error & { statusCode?: number; code?: string }, counter: number, random = 0.5): Promise<{ retried: boolean; ms: number }> =>
    new Promise((resolve) => {
      const started = Date.now()
      retryCallback(policy, undefined, () => random)(err, { state: { counter }, opts: { method: 'GET', path: '/' } }, (e) => resolve({ retried: e == null, ms: Date.now() - started }))
    })
  const status = (n: number): Error & { statusCode: number } => Object.assign(new Error(`HTTP ${n}`), { statusCode: n })
  const code = (c: string): Error & { code: string } => Object.assign(new Error(c), { code: c })
  t.ok((await decide(METADATA_RETRIES, status(503), 1)).retried, '503 retried')
  t.notOk((await decide(METADATA_RETRIES, status(429), 1)).retried, '429 never')
  t.notOk((await decide(METADATA_RETRIES, status(404), 1)).retried, '404 never')
  t.ok((await decide(METADATA_RETRIES, code('ECONNREFUSED'), 1)).retried)
  t.notOk((await decide(METADATA_RETRIES, code('ECONNREFUSED'), 4)).retried, 'three retries at most')
  t.ok((await decide(BLOB_RETRIES, code('UND_ERR_SOCKET'), 5)).retried, 'a cut body: five resumes')
  t.notOk((await decide(BLOB_RETRIES, code('UND_ERR_SOCKET'), 6)).retried)
  t.notOk((await decide(BLOB_RETRIES, code('ECONNREFUSED'), 4)).retried, 'a refused connection gets the quick schedule even for blobs')
  const fast = await decide(METADATA_RETRIES, status(502), 1, 0)
  const slow = await decide(METADATA_RETRIES, status(502), 1, 0.999)
  t.ok(fast.ms < slow.ms, `jitter (${fast.ms} ms vs ${slow.ms} ms)`)
  t.ok(slow.ms < 200)
})
