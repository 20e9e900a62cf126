import t from 'tap'
import { BusyError, Slots } from '../../src/limits/slots.js'
import { SingleFlight } from '../../src/lib/single-flight.js'

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

t.test('slots: up to capacity at once, then waiters in order', async (t) => {
  const slots = new Slots({ what: 'fills', key: 'limits.fills', capacity: 2, queue: 10, timeoutMs: 5000 })
  const a = await slots.acquire()
  const b = await slots.acquire()
  t.equal(slots.inUse, 2)
  const order: string[] = []
  const c = slots.acquire().then((r) => (order.push('c'), r))
  const d = slots.acquire().then((r) => (order.push('d'), r))
  await tick()
  t.equal(slots.waiting, 2, 'two wait')
  a()
  a() // twice is harmless
  const rc = await c
  t.same(order, ['c'], 'the first waiter got the freed slot, once')
  b()
  const rd = await d
  t.same(order, ['c', 'd'])
  rc()
  rd()
  t.equal(slots.inUse, 0)
})

t.test('slots: live work keeps the reserved slots; background work waits for them', async (t) => {
  const slots = new Slots({ what: 'fills', key: 'limits.fills', capacity: 3, reservedForLive: 2, queue: 10, timeoutMs: 5000 })
  const bg1 = await slots.acquire('background')
  let bg2Got = false
  const bg2 = slots.acquire('background').then((r) => {
    bg2Got = true
    return r
  })
  await tick()
  t.notOk(bg2Got, 'a second background job does not get a reserved slot')
  const live1 = await slots.acquire('live')
  const live2 = await slots.acquire('live')
  t.equal(slots.inUse, 3, 'live work got both reserved slots at once')
  let live3Got = false
  const live3 = slots.acquire('live').then((r) => {
    live3Got = true
    return r
  })
  await tick()
  bg1()
  await tick()
  t.ok(live3Got, 'a freed slot goes to the waiting live request before the earlier background one')
  t.notOk(bg2Got)
  ;(await live3)()
  live1()
  live2()
  ;(await bg2)()
  t.equal(slots.inUse, 0)
})

t.test('slots: past the queue bound, or the wait, a 503 with Retry-After', async (t) => {
  const slots = new Slots({ what: 'blob responses', key: 'limits.responses', capacity: 1, queue: 1, timeoutMs: 100, retryAfterSeconds: 3 })
  const held = await slots.acquire()
  const waiting = slots.acquire()
  const refused = await slots.acquire().then(() => undefined, (err: unknown) => err)
  t.ok(refused instanceof BusyError, 'the queue is full: refused at once')
  const e = refused as BusyError
  t.equal(e.status, 503)
  t.equal(e.code, 'UNAVAILABLE')
  t.equal(e.headers['retry-after'], '3')
  t.match(JSON.stringify(e.detail), /limits\.responses/, 'names the limit to raise')
  const timedOut = await waiting.then(() => undefined, (err: unknown) => err)
  t.ok(timedOut instanceof BusyError, 'the waiter gave up after the wait bound')
  t.equal(slots.waiting, 0)
  held()
})

t.test('slots: an aborted wait leaves the queue', async (t) => {
  const slots = new Slots({ what: 'x', key: 'limits.x', capacity: 1, queue: 5, timeoutMs: 5000 })
  const held = await slots.acquire()
  const ac = new AbortController()
  const p = slots.acquire('live', ac.signal)
  ac.abort(new Error('client went away'))
  await t.rejects(p, /client went away/)
  t.equal(slots.waiting, 0)
  held()
  t.equal(slots.inUse, 0, 'nothing granted to the aborted waiter')
})

t.test('single flight: joiners share one run; a new run starts after it ends', async (t) => {
  const flights = new SingleFlight<string, Promise<number>>()
  let runs = 0
  let finish!: (n: number) => void
  const work = (): Promise<number> => {
    runs++
    return new Promise((resolve) => {
      finish = resolve
    })
  }
  const a = flights.run('k', work)
  const b = flights.run('k', work)
  t.notOk(a.joined)
  t.ok(b.joined)
  t.equal(a.value, b.value)
  finish(7)
  t.equal(await b.value, 7)
  await tick()
  t.equal(flights.size, 0, 'ended')
  const c = flights.run('k', work)
  t.notOk(c.joined)
  t.equal(runs, 2)
  finish(8)
  await c.value
  const failing = flights.run('f', () => Promise.reject(new Error('boom')))
  await t.rejects(failing.value, /boom/)
  await tick()
  t.equal(flights.get('f'), undefined, 'a failed flight ends too')
})
