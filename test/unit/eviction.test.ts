// The evictor over a real filesystem store: LRU order, pins, watermarks,
// persistence of access times across restarts and replicas, manifests.
import t, { type Test } from 'tap'
import { Evictor, HIGH_WATERMARK, LOW_WATERMARK, MANIFEST_SIZE_ESTIMATE, type EvictorOptions } from '../../src/cache/eviction.js'
import { Metrics } from '../../src/observability/metrics.js'
import type { BlobStore } from '../../src/storage/blob-store.js'
import { FilesystemBlobStore } from '../../src/storage/filesystem.js'
import { tempDir } from '../harness/tools.js'
import { putBlob, testBlob, type TestBlob } from '../storage/conformance.js'
import { captureLogger } from '../storage/s3-helpers.js'

// high = 996 147 bytes, low = 891 289: four blobs of 250 000 cross high, evicting one gets below low.
const MAX = 1024 * 1024
const SIZE = 250_000

async function freshStore(tt: Test): Promise<FilesystemBlobStore> {
  const store = new FilesystemBlobStore(await tempDir(tt, 'stevedore-evict'))
  await store.init()
  return store
}

function evictor(store: BlobStore, options: Partial<EvictorOptions> = {}): { ev: Evictor; metrics: Metrics; lines: Array<Record<string, unknown>> } {
  const { log, lines } = captureLogger('info')
  const metrics = new Metrics()
  const ev = new Evictor(store, { maxSize: MAX, evict: true, log, metrics, instance: 'test-a', flushIntervalMs: 3_600_000, ...options })
  return { ev, metrics, lines }
}

async function stored(store: BlobStore, n: number): Promise<TestBlob[]> {
  const blobs: TestBlob[] = []
  for (let i = 0; i < n; i++) {
    const b = testBlob(SIZE)
    await putBlob(store, b)
    blobs.push(b)
  }
  return blobs
}

const present = async (store: BlobStore, blobs: TestBlob[]): Promise<boolean[]> => Promise.all(blobs.map(async (b) => (await store.stat(b.digest)) !== undefined))

async function metricValue(metrics: Metrics, name: string): Promise<number | undefined> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name)
  return m?.values[0]?.value
}

t.test('watermarks are 95% and 85% of maxSize', async (t) => {
  const { ev } = evictor(await freshStore(t))
  t.equal(ev.high, Math.floor(MAX * HIGH_WATERMARK))
  t.equal(ev.low, Math.floor(MAX * LOW_WATERMARK))
  t.equal(HIGH_WATERMARK, 0.95)
  t.equal(LOW_WATERMARK, 0.85)
})

t.test('the least recently used blob goes first, down to the low watermark', async (t) => {
  const store = await freshStore(t)
  const { ev, metrics, lines } = evictor(store)
  await ev.start()
  const [a, b, c, d] = await stored(store, 4) as [TestBlob, TestBlob, TestBlob, TestBlob]
  ev.onStored(a.digest, SIZE)
  ev.onStored(b.digest, SIZE)
  ev.onStored(c.digest, SIZE)
  ev.onAccess(a.digest, SIZE) // order now b, c, a
  t.equal(ev.size, 3 * SIZE)
  t.same(await ev.runOnce(), { evicted: 0, bytes: 0, ids: [] }, 'below the high watermark nothing goes')
  ev.onStored(d.digest, SIZE)
  const result = await ev.runOnce()
  t.same(result, { evicted: 1, bytes: SIZE, ids: [b.digest] }, 'b, the least recently used, is evicted, and only b')
  t.same(await present(store, [a, b, c, d]), [true, false, true, true], 'the store agrees')
  t.equal(ev.size, 3 * SIZE)
  t.equal(await metricValue(metrics, 'stevedore_evictions_total'), 1, 'evictions metric')
  t.equal(await metricValue(metrics, 'stevedore_evicted_bytes_total'), SIZE, 'evicted bytes metric')
  t.equal(await metricValue(metrics, 'stevedore_cache_size_bytes'), 3 * SIZE, 'cache size gauge')
  const pass = lines.find((l) => l.msg === 'eviction pass')
  t.match(pass, { level: 30, evicted: 1, bytes: SIZE, sizeBefore: 4 * SIZE, sizeAfter: 3 * SIZE, ids: [b.digest] }, 'one info line per pass')
  await ev.stop()
})

t.test('a pass starts by itself when a stored blob crosses the high watermark', async (t) => {
  const store = await freshStore(t)
  const { ev, lines } = evictor(store)
  await ev.start()
  const blobs = await stored(store, 4)
  for (const b of blobs) ev.onStored(b.digest, SIZE)
  const deadline = Date.now() + 5000
  while (!lines.some((l) => l.msg === 'eviction pass') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  t.same(await present(store, blobs), [false, true, true, true], 'the oldest went without runOnce')
  await ev.stop()
})

t.test('a pinned blob is never evicted; once unpinned it can be', async (t) => {
  const store = await freshStore(t)
  const { ev } = evictor(store)
  await ev.start()
  const [a, b, c, d, e] = await stored(store, 5) as [TestBlob, TestBlob, TestBlob, TestBlob, TestBlob]
  for (const x of [a, b, c]) ev.onStored(x.digest, SIZE)
  const unpin = ev.pin(a.digest)
  const unpinAgain = ev.pin(a.digest) // two readers
  ev.onStored(d.digest, SIZE)
  t.same((await ev.runOnce()).ids, [b.digest], 'a is the oldest but pinned: b goes instead')
  unpin()
  unpin() // idempotent: the second reader still holds it
  ev.onStored(e.digest, SIZE)
  t.same((await ev.runOnce()).ids, [c.digest], 'still pinned by the second reader: c goes')
  unpinAgain()
  await putBlob(store, b)
  ev.onStored(b.digest, SIZE)
  t.same((await ev.runOnce()).ids, [a.digest], 'unpinned, the oldest goes')
  t.same(await present(store, [a, b, c, d, e]), [false, true, false, true, true])
  await ev.stop()
})

t.test('blobs found at start without an access time are the oldest', async (t) => {
  const store = await freshStore(t)
  const old = await stored(store, 2)
  const { ev, lines } = evictor(store)
  await ev.start()
  t.equal(ev.size, 2 * SIZE, 'the start-up listing counts what is stored')
  t.match(lines.find((l) => l.msg === 'eviction index loaded'), { blobs: 2, bytes: 2 * SIZE })
  const fresh = await stored(store, 2)
  for (const b of fresh) ev.onStored(b.digest, SIZE)
  ev.onAccess(old[1]?.digest ?? '', SIZE)
  t.same((await ev.runOnce()).ids, [old[0]?.digest], 'the one never seen used goes first')
  await ev.stop()
})

t.test('the order survives a restart (access times are persisted)', async (t) => {
  for (const newerFirst of [true, false]) {
    const store = await freshStore(t)
    const [a, b] = await stored(store, 2) as [TestBlob, TestBlob]
    // Make the older one whichever the store lists first, then the other way round:
    // without persisted times a tie would go by listing order, and one round would fail.
    const listed: string[] = []
    for await (const info of store.list()) listed.push(info.digest)
    const [older, newer] = (listed[0] === a.digest) === newerFirst ? [b, a] : [a, b]
    const first = evictor(store)
    await first.ev.start()
    first.ev.onAccess(older.digest, SIZE)
    first.ev.onAccess(newer.digest, SIZE)
    await first.ev.stop()
    const doc = await store.getDocument('access/test-a.json')
    t.ok(doc !== undefined, 'stop writes access/<instance>.json')

    const second = evictor(store)
    await second.ev.start()
    const more = await stored(store, 2)
    for (const m of more) second.ev.onStored(m.digest, SIZE)
    t.same((await second.ev.runOnce()).ids, [older.digest], `after a restart the older one goes (round ${newerFirst ? 1 : 2})`)
    await second.ev.stop()
  }
})

t.test('evict: false tracks and persists but never deletes', async (t) => {
  const store = await freshStore(t)
  const { ev } = evictor(store, { evict: false })
  await ev.start()
  const blobs = await stored(store, 5)
  for (const b of blobs) ev.onStored(b.digest, SIZE)
  t.same(await ev.runOnce(), { evicted: 0, bytes: 0, ids: [] }, 'nothing evicted over the quota')
  t.same(await present(store, blobs), [true, true, true, true, true])
  t.equal(ev.size, 5 * SIZE, 'sizes still tracked')
  await ev.stop()
  t.ok(await store.getDocument('access/test-a.json'), 'access times still persisted')
})

t.test('another replica\'s access times protect a blob', async (t) => {
  const store = await freshStore(t)
  const evicting = evictor(store, { instance: 'evicting' })
  const tracking = evictor(store, { instance: 'tracking', evict: false })
  await evicting.ev.start()
  await tracking.ev.start()
  const [a, b, c, d] = await stored(store, 4) as [TestBlob, TestBlob, TestBlob, TestBlob]
  for (const x of [a, b, c]) evicting.ev.onStored(x.digest, SIZE)
  await new Promise((r) => setTimeout(r, 20))
  tracking.ev.onAccess(a.digest, SIZE) // a is hot on the other replica, later than b and c here
  await tracking.ev.flush()
  evicting.ev.onStored(d.digest, SIZE)
  t.same((await evicting.ev.runOnce()).ids, [b.digest], 'a is spared: the other replica used it last')
  await evicting.ev.stop()
  await tracking.ev.stop()
})

t.test('manifest documents are counted, touched and evicted; tags are not counted', async (t) => {
  const store = await freshStore(t)
  const { ev } = evictor(store)
  await store.putDocument('manifests/sha256/old', Buffer.alloc(100))
  await ev.start()
  t.equal(ev.size, MANIFEST_SIZE_ESTIMATE, 'a manifest of unknown size counts as the estimate')
  const tracked = ev.track(store)
  await tracked.putDocument('manifests/sha256/m1', Buffer.alloc(SIZE))
  await tracked.putDocument('tags/up/repo/@v1', Buffer.alloc(1000))
  t.equal(ev.size, MANIFEST_SIZE_ESTIMATE + SIZE, 'a manifest write counts its size; a tag does not count')
  t.ok(await tracked.getDocument('manifests/sha256/old'), 'reading the old manifest touches it')
  const blobs = await stored(store, 3)
  for (const b of blobs) ev.onStored(b.digest, SIZE)
  const { ids } = await ev.runOnce()
  t.same(ids, ['manifests/sha256/m1'], 'the least recently used manifest document goes like a blob')
  t.equal(await store.getDocument('manifests/sha256/m1'), undefined, 'removed from the store')
  t.ok(await store.getDocument('tags/up/repo/@v1'), 'tags stay')
  await tracked.deleteDocument('manifests/sha256/old')
  t.equal(ev.size, 3 * SIZE, 'a deleted manifest is forgotten')
  await ev.stop()
})

t.test('a rescan counts what another process stored and forgets what it removed', async (t) => {
  const store = await freshStore(t)
  const { ev } = evictor(store)
  await ev.start()
  const [a, b] = await stored(store, 2) as [TestBlob, TestBlob]
  ev.onStored(a.digest, SIZE)
  t.equal(ev.size, SIZE)
  await store.delete(a.digest)
  await ev.rescan()
  t.equal(ev.size, SIZE, 'a gone, b counted')
  t.equal(ev.tracked, 1)
  t.ok(b)
  await ev.stop()
})
