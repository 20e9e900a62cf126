// Bounded resources against the real upstream (distribution) and the real
// mirror process: the response cap and its queue, the fill cap, the write
// timeout for readers that stop, idle timeouts, the connection cap. Where an
// upstream must stall on cue, the fault injector (test/harness/fault-proxy.ts)
// sits in front of the real registry.
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { pushBlob, randomBytesFile } from '../harness/images.js'
import { startFaultProxy } from '../harness/fault-proxy.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { rawRequest, type RawExchange } from '../harness/raw-http.js'
import { startRegistry, type Registry } from '../harness/registry.js'
import { requireTools, sleep, tempDir } from '../harness/tools.js'

const MB = 1024 * 1024

async function seeded(t: Test, sizes: number[]): Promise<{ registry: Registry; dir: string; digests: string[] }> {
  const dir = await tempDir(t, 'stevedore-limits')
  const registry = await startRegistry(t)
  const digests: string[] = []
  for (const [i, size] of sizes.entries()) {
    const path = join(dir, `blob${i}`)
    const digest = await randomBytesFile(path, size)
    await pushBlob(registry, 'lim/blob', path, digest)
    digests.push(digest)
  }
  return { registry, dir, digests }
}

/** A mirror with limits.writeTimeout set, holding one blob of `size` bytes in its cache. */
async function mirrorWithCachedBlob(t: Test, size: number, writeTimeout: string): Promise<{ mirror: Mirror; digest: string; path: string }> {
  const { registry, dir, digests } = await seeded(t, [size])
  const digest = digests[0] as string
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(dir, 'cache') } },
      upstreams: { [registry.host]: { url: registry.url } },
      defaultUpstream: registry.host,
      limits: { writeTimeout },
    },
  })
  const path = `/v2/lim/blob/blobs/${digest}`
  t.equal((await fetchHashed(`${mirror.url}${path}`)).digest, digest, 'cached')
  return { mirror, digest, path }
}

/** True once the exchange has received `bytes` of body, false if the connection closes first. */
async function readsAll(exchange: RawExchange, bytes: number): Promise<boolean> {
  let closed = false
  void exchange.closed.then(() => (closed = true))
  while (!closed && exchange.bodyBytes() < bytes) await sleep(50)
  return exchange.bodyBytes() >= bytes
}

const errorCode = (body: Buffer): string | undefined => (JSON.parse(body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code

t.test('the response cap: past it requests wait, past the queue a 503 with Retry-After; a freed slot serves the waiter', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { registry, dir, digests } = await seeded(t, [40 * MB])
  const digest = digests[0] as string
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(dir, 'cache') } },
      upstreams: { [registry.host]: { url: registry.url } },
      defaultUpstream: registry.host,
      limits: { responses: 2, responseQueue: 1, queueTimeout: '20s' },
    },
  })
  const path = `/v2/lim/blob/blobs/${digest}`
  t.equal((await fetchHashed(`${mirror.url}${path}`)).digest, digest, 'cached')
  // Two readers that take their headers and then stop reading hold both slots.
  const holders = [rawRequest(mirror.port, path), rawRequest(mirror.port, path)]
  for (const h of holders) t.equal((await h.head).status, 200)
  for (const h of holders) h.socket.pause()
  const waiter = rawRequest(mirror.port, path)
  let waiterAnswered = false
  void waiter.head.then(() => {
    waiterAnswered = true
  }, () => undefined)
  await sleep(500)
  t.notOk(waiterAnswered, 'the third request waits for a slot')
  const refused = await fetchAll(`${mirror.url}${path}`)
  t.equal(refused.status, 503, 'the fourth finds the queue full: 503 at once')
  t.equal(refused.headers['retry-after'], '2', 'with Retry-After')
  t.equal(errorCode(refused.body), 'UNAVAILABLE')
  t.match(refused.body.toString(), /limits\.responses/, 'naming the limit')
  t.equal((await fetchAll(`${mirror.url}/v2/lim/blob/blobs/${digest}`, { method: 'HEAD' })).status, 200, 'HEADs need no slot')
  holders[0]?.close()
  t.equal((await waiter.head).status, 200, 'the waiter got the freed slot')
  waiter.close()
  holders[1]?.close()
  await sleep(200)
  const after = await fetchHashed(`${mirror.url}${path}`)
  t.equal(after.digest, digest, 'slots come back when clients leave')
})

t.test('the fill cap: one fill at a time, one waiting, the next refused with 503; the waiter runs once the first ends (a stalled body resumes after timeouts.read)', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { registry, dir, digests } = await seeded(t, [4 * MB, 300_000, 300_000])
  const [stalled, second, third] = digests as [string, string, string]
  const faults = await startFaultProxy(t, registry.url)
  faults.add({ method: 'GET', pathIncludes: `/blobs/${stalled}`, fault: { kind: 'stall', afterBytes: 1000 }, times: 1 })
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(dir, 'cache') } },
      upstreams: { [faults.host]: { url: faults.url } },
      defaultUpstream: faults.host,
      timeouts: { read: '3s' },
      limits: { fills: 1, fillsReservedForPulls: 0, fillQueue: 1, queueTimeout: '20s' },
    },
  })
  const base = `${mirror.url}/v2/lim/blob/blobs`
  const first = fetchHashed(`${base}/${stalled}`)
  await sleep(300)
  const queued = fetchHashed(`${base}/${second}`)
  await sleep(300)
  const refused = await fetchAll(`${base}/${third}`)
  t.equal(refused.status, 503, 'a third fill finds the queue full')
  t.ok(refused.headers['retry-after'] !== undefined, 'with Retry-After')
  t.match(refused.body.toString(), /limits\.fills/)
  const a = await first
  t.equal(a.digest, stalled, 'the stalled body was given up after timeouts.read and resumed from the byte reached')
  const gets = faults.requests().filter((q) => q.method === 'GET' && q.path.includes(stalled))
  t.equal(gets.length, 2, 'one stalled GET, one resumed')
  // undici's RetryHandler names the end it already knows from Content-Length.
  t.match(gets[1]?.range ?? '', new RegExp(`^bytes=[1-9]\\d*-(${4 * MB - 1})?$`), 'the second asks for the rest, from the byte reached')
  const b = await queued
  t.equal(b.digest, second, 'the queued fill ran once the slot was free')
  t.equal((await fetchHashed(`${base}/${third}`)).digest, third, 'and later ones go through')
})

t.test('write timeout: a reader that stops is dropped; a slow one is served to the end', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  // A reader at 1 MB/s sees the kernel take its bytes in bursts about a second apart.
  const { mirror, digest, path } = await mirrorWithCachedBlob(t, 40 * MB, '3s')

  const stopped = rawRequest(mirror.port, path)
  await stopped.head
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (stopped.bodyBytes() >= 12 * MB) {
        stopped.socket.pause()
        resolve()
      } else setTimeout(check, 5)
    }
    check()
  })
  const pausedAt = Date.now()
  // The mirror cuts it (3 s, and an eighth more, once the kernel's buffers are full; more on a loaded
  // machine); we read the rest of what the kernel holds to see the end.
  await sleep(8000)
  stopped.socket.resume()
  const end = await stopped.closed
  t.ok(end.closedByPeer, 'the mirror closed the connection')
  t.ok(end.body.byteLength < 40 * MB, `without a clean end (${end.body.byteLength} of ${40 * MB} bytes)`)
  t.ok(Date.now() - pausedAt < 20_000)
  await mirror.settle()
  t.ok(mirror.logs().some((l) => l['msg'] === 'client stopped reading: dropped'), 'logged as dropped')

  // About 1 MB/s: slow, but it keeps reading, so it is served.
  const slow = rawRequest(mirror.port, `/v2/lim/blob/blobs/${digest}`, { headers: { range: 'bytes=0-9999999' } })
  slow.throttle(1_000_000)
  t.equal((await slow.head).status, 206)
  const done = await readsAll(slow, 10_000_000)
  t.ok(done, 'the slow reader was not dropped')
  t.equal(slow.bodyBytes(), 10_000_000, 'the slow reader got its whole range')
  slow.close()
  t.equal(mirror.exitStatus(), null, 'the mirror is up')
})

t.test('write timeout: a reader slower than the kernel wakes the writer is served past the timeout, judged by the socket send queue', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  // At 300 KB/s the kernel frees room for the next write only every few
  // seconds (it wakes a writer once a third of its buffer has drained):
  // longer than this timeout, though the reader never stops.
  const { mirror, path } = await mirrorWithCachedBlob(t, 12 * MB, '2s')
  const length = 6_000_000
  const slow = rawRequest(mirror.port, path, { headers: { range: `bytes=0-${length - 1}` } })
  slow.throttle(300_000)
  t.equal((await slow.head).status, 206)
  const served = await readsAll(slow, length)
  t.ok(served, `the slow reader was not dropped (${slow.bodyBytes()} of ${length} bytes)`)
  slow.close()
  await mirror.settle()
  t.notOk(mirror.logs().some((l) => l['msg'] === 'client stopped reading: dropped'), 'nothing logged as dropped')
})

t.test('idle timeout and the connection cap: silent connections are closed; past the cap connections are refused', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { registry, dir } = await seeded(t, [])
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(dir, 'cache') } },
      upstreams: { [registry.host]: { url: registry.url } },
      defaultUpstream: registry.host,
      limits: { idleTimeout: '1s', connections: 4 },
    },
  })
  const silent = rawRequest(mirror.port, '/', { send: false })
  const started = Date.now()
  const closed = await silent.closed
  t.ok(closed.closedByPeer, 'a connection that sends nothing is closed by the mirror')
  t.ok(Date.now() - started < 5000, `within a few seconds (${Date.now() - started} ms)`)

  const kept = rawRequest(mirror.port, '/v2/')
  t.equal((await kept.head).status, 200)
  const idleSince = Date.now()
  t.ok((await kept.closed).closedByPeer, 'an idle keep-alive connection is closed too')
  t.ok(Date.now() - idleSince < 5000)

  const open = [0, 1, 2, 3].map(() => rawRequest(mirror.port, '/', { send: false }))
  await sleep(200)
  const extra = rawRequest(mirror.port, '/v2/')
  const refused = await Promise.race([extra.closed.then(() => 'closed'), extra.head.then(() => 'answered', () => 'closed')])
  t.equal(refused, 'closed', 'the fifth connection is refused at once')
  for (const o of open) o.close()
  await sleep(200)
  t.equal((await fetchAll(`${mirror.url}/v2/`)).status, 200, 'room again once they are gone')
})
