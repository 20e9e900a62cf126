import t from 'tap'
import { abortableSleep, Backoff, WATCH_BACKOFF } from '../../src/prewarm/backoff.js'

t.test('backoff: doubles from the initial delay up to the cap, jittered between half and all of it', async (t) => {
  const low = new Backoff({ initialMs: 100, maxMs: 1000, healthyMs: 5000, random: () => 0 })
  const high = new Backoff({ initialMs: 100, maxMs: 1000, healthyMs: 5000, random: () => 0.999999 })
  t.same(Array.from({ length: 7 }, () => low.next()), [50, 100, 200, 400, 500, 500, 500], 'half of each ceiling')
  t.same(Array.from({ length: 7 }, () => high.next()), [100, 200, 400, 800, 1000, 1000, 1000], 'all of it')
  const real = new Backoff({ initialMs: 100, maxMs: 1000, healthyMs: 5000 })
  for (let i = 0; i < 50; i++) {
    const d = real.next()
    const ceiling = Math.min(1000, 100 * 2 ** i)
    t.ok(d >= ceiling / 2 && d <= ceiling, `attempt ${i}: ${d} within [${ceiling / 2}, ${ceiling}]`)
  }
  t.ok(Number.isFinite(real.next()), 'no overflow after many failures')
})

t.test('backoff: a connection that stayed up the healthy period resets it; a short one does not', async (t) => {
  const b = new Backoff({ initialMs: 100, maxMs: 10_000, healthyMs: 5000, random: () => 0.999999 })
  b.next()
  b.next()
  b.next()
  b.connected(4999)
  t.equal(b.next(), 800, 'short-lived: still growing')
  b.connected(5000)
  t.equal(b.attempts, 0)
  t.equal(b.next(), 100, 'healthy: back to the initial delay')
  t.ok(WATCH_BACKOFF.initialMs < WATCH_BACKOFF.maxMs && WATCH_BACKOFF.healthyMs > WATCH_BACKOFF.maxMs, 'the defaults are coherent')
})

t.test('abortableSleep: ends at once on abort and leaves no timer behind', async (t) => {
  const ac = new AbortController()
  const started = Date.now()
  const sleeping = abortableSleep(60_000, ac.signal)
  ac.abort()
  await sleeping
  t.ok(Date.now() - started < 1000)
  await abortableSleep(60_000, ac.signal) // already aborted: returns at once
  t.pass('returned')
})
