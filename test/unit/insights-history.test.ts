import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { ImageTable } from '../../src/insights/images.js'
import { Insights, type InsightsDeps } from '../../src/insights/insights.js'
import { HistoryWriter, historyKey, loadHistory } from '../../src/insights/persist.js'
import { Timeline } from '../../src/insights/timeline.js'
import type { PullRecord } from '../../src/insights/types.js'
import { Metrics } from '../../src/observability/metrics.js'
import { FilesystemBlobStore } from '../../src/storage/filesystem.js'

const log = pino({ level: 'silent' })

function pull(n: number, image: string, cache: PullRecord['cache'], seconds: number, endedAt: number): PullRecord {
  return {
    id: `local-${n}`, image, upstream: 'reg', repository: 'team/app', digest: `sha256:${String(n).padStart(64, '0')}`,
    client: { address: '10.0.0.1' }, startedAt: new Date(endedAt - seconds * 1000).toISOString(), endedAt: new Date(endedAt).toISOString(),
    seconds, layers: { total: 1, fetched: 1 }, bytes: 10, bytesFromCache: cache === 'warm' ? 10 : 0, bytesFromUpstream: cache === 'warm' ? 0 : 10, cache, result: 'ok',
  }
}

const deps = (): InsightsDeps => ({
  instance: 'local',
  config: { enabled: true, sessionIdle: 1000, recentPulls: 10, maxImages: 10, maxClients: 10, persistInterval: 60_000 },
  metrics: new Metrics(),
  log,
  nodeOf: () => undefined,
  platformOfConfig: async () => undefined,
  route: () => undefined,
  mirrorState: async () => ({ fillsInProgress: 0, cacheSize: 0, quota: undefined, upstreams: [] }),
})

t.test('the history is written to the store and read back as it was; junk is not trusted', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'stevedore-history-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const store = new FilesystemBlobStore(root)
  await store.init()
  const insights = new Insights(deps())
  t.teardown(() => insights.stop())
  const images = new ImageTable(10)
  const timeline = new Timeline()
  const now = Date.now()
  const pulls = [pull(1, 'reg/team/app:a', 'cold', 2.5, now - 5000), pull(2, 'reg/team/app:a', 'warm', 0.25, now)]
  for (const p of pulls) {
    images.pulled(p, [{ digest: `sha256:${'a'.repeat(64)}`, size: 10 }], 5, Date.parse(p.endedAt))
    timeline.add(p, Date.parse(p.endedAt))
  }
  insights.restore({ since: now - 60_000, seq: 2, totals: { requests: 4, hits: 2, bytesServed: 20, bytesFromCache: 10, bytesFromUpstream: 10, savedBytes: 10, savedRequests: 2, pulls: 2, cold: 1, warm: 1, partial: 0, failed: 0, resolves: 0 }, pulls, images: [...images.states()], timeline: timeline.snapshot() })
  insights.dirty = true
  const writer = new HistoryWriter(store, insights, 60_000, log)
  await writer.stop()
  const back = await loadHistory(store, 'local', log)
  t.ok(back !== undefined, 'read back')
  const again = new Insights(deps())
  t.teardown(() => again.stop())
  again.restore(back as NonNullable<typeof back>)
  t.same(again.pulls({ limit: 10 }), insights.pulls({ limit: 10 }), 'the same pulls')
  t.same(again.images({ limit: 10 }), insights.images({ limit: 10 }), 'the same images, samples and all')
  t.same(again.timeline({ minutes: 5 }), insights.timeline({ minutes: 5 }), 'the same timeline')
  t.same((await again.summary()).since, new Date(now - 60_000).toISOString())

  for (const junk of ['not json', '{"version":2}', JSON.stringify({ version: 1, instance: 'local' }), '{"__proto__":{"x":1},"version":1}']) {
    await store.putDocument(historyKey('local'), Buffer.from(junk))
    t.equal(await loadHistory(store, 'local', log), undefined, `not trusted: ${junk.slice(0, 30)}`)
  }
  t.equal(await loadHistory(store, 'other', log), undefined, 'no history: none')
})

t.test('bounded: the ring keeps the newest pulls, the table the most recently pulled images', async (t) => {
  const insights = new Insights(deps())
  t.teardown(() => insights.stop())
  const now = Date.now()
  const pulls = Array.from({ length: 25 }, (_, i) => pull(i, `reg/team/app:${i}`, 'cold', 1, now - (25 - i) * 1000))
  const images = new ImageTable(10)
  for (const p of pulls) images.pulled(p, [], 0, Date.parse(p.endedAt))
  t.equal(images.size, 10, 'ten images kept')
  t.same(images.top(100).map((i) => i.image).sort(), pulls.slice(15).map((p) => p.image).sort(), 'the ten most recently pulled')
  insights.restore({ since: now, seq: 25, totals: { requests: 0, hits: 0, bytesServed: 0, bytesFromCache: 0, bytesFromUpstream: 0, savedBytes: 0, savedRequests: 0, pulls: 25, cold: 25, warm: 0, partial: 0, failed: 0, resolves: 0 }, pulls, images: [...images.states()], timeline: [] })
  t.same(insights.pulls({ limit: 100 }).pulls.map((p) => p.id), pulls.slice(15).reverse().map((p) => p.id), 'the ring: the ten newest, newest first')
})

t.test('resolve-only images go before pulled ones when the table is full', async (t) => {
  const images = new ImageTable(10)
  const now = Date.now()
  for (let i = 0; i < 10; i++) images.pulled(pull(i, `reg/team/app:${i}`, 'warm', 1, now + i), [], 0, now + i)
  images.resolved({ image: 'reg/team/scanned:1', upstream: 'reg', repository: 'team/scanned', tag: '1' }, `sha256:${'b'.repeat(64)}`, undefined, 0, now + 20)
  images.resolved({ image: 'reg/team/scanned:2', upstream: 'reg', repository: 'team/scanned', tag: '2' }, `sha256:${'b'.repeat(64)}`, undefined, 0, now + 21)
  const kept = images.top(100).map((i) => i.image)
  t.ok(kept.includes('reg/team/scanned:2'), 'the newest resolve is kept')
  t.notOk(kept.includes('reg/team/scanned:1'), 'the older resolve-only one went first')
  t.equal(kept.filter((i) => i.startsWith('reg/team/app:')).length, 9, 'one pulled image made room for the first')
})

t.test('a saved history with out-of-range values is not trusted', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'stevedore-history-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const store = new FilesystemBlobStore(root)
  await store.init()
  const insights = new Insights(deps())
  t.teardown(() => insights.stop())
  insights.dirty = true
  const writer = new HistoryWriter(store, insights, 60_000, log)
  await writer.stop()
  const good = JSON.parse(String(await store.getDocument(historyKey('local')))) as Record<string, unknown>
  t.ok(await loadHistory(store, 'local', log), 'as written: read')
  for (const [what, doc] of [['since 1e300', { ...good, since: 1e300 }], ['a huge timeline', { ...good, timeline: Array.from({ length: 5000 }, (_, i) => ({ t: i, cold: 0, warm: 0, partial: 0, coldSum: 0, warmSum: 0, max: 0 })) }]] as const) {
    await store.putDocument(historyKey('local'), Buffer.from(JSON.stringify(doc)))
    t.equal(await loadHistory(store, 'local', log), undefined, what)
  }
})

t.test('a store that cannot be read at first is asked again, not taken for an empty history', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'stevedore-history-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const store = new FilesystemBlobStore(root)
  await store.init()
  const insights = new Insights(deps())
  t.teardown(() => insights.stop())
  insights.dirty = true
  await new HistoryWriter(store, insights, 60_000, log).stop()
  // A stand-in for S3 answering 503 twice (SlowDown, credentials not there yet), then the real store.
  let failures = 2
  const flaky = Object.create(store) as FilesystemBlobStore
  flaky.getDocument = async (key: string) => {
    if (failures-- > 0) throw new Error('503 SlowDown')
    return store.getDocument(key)
  }
  // The retry's timer is unref'd (it must not hold a stopping server open): something must hold this test's process.
  const hold = setInterval(() => undefined, 1000)
  t.teardown(() => clearInterval(hold))
  const history = await loadHistory(flaky, 'local', log, () => false, 10)
  t.ok(history !== undefined, 'read once the store answered')
  t.equal(failures, -1, 'after two failures')
})
