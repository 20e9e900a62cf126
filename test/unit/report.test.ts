// `stevedore report`'s merge of several replicas' insights and its size
// advice, over two replicas' fixture JSON built to the API's types.
import t from 'tap'
import { sizeAdvice } from '../../src/insights/report/advice.js'
import { mergeDurations, mergeReplicas, percentile } from '../../src/insights/report/merge.js'
import type { ImageInsight, LayerRef } from '../../src/insights/types.js'
import { APP, digest, insightsOf, L, ML, replicaA, replicaB, stats, TOOL, WEB } from './report-fixtures.js'

const merged = () => mergeReplicas([insightsOf(replicaA()), insightsOf(replicaB())])
const find = (images: readonly ImageInsight[], name: string): ImageInsight => {
  const i = images.find((x) => x.image === name)
  if (i === undefined) throw new Error(`${name} not merged`)
  return i
}

t.test('percentiles are nearest-rank', async (t) => {
  t.equal(percentile([], 0.5), undefined)
  t.equal(percentile([7], 0.95), 7)
  t.equal(percentile([1, 2, 3, 4], 0.5), 2)
  t.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95), 10)
  t.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9)
})

t.test('durations: samples pooled, p50/p95 recomputed, max the largest any replica saw', async (t) => {
  const a = { count: 70, p50: 1, p95: 2, max: 30, samples: [1, 1, 2] }
  const b = stats([4, 5])
  t.same(mergeDurations([a, b]), { count: 72, p50: 2, p95: 5, max: 30, samples: [1, 1, 2, 4, 5] }, 'max 30 from a pull older than the samples')
  t.equal(mergeDurations([a, stats([])]), a, 'one replica with pulls of the kind: its figures unchanged')
  t.same(mergeDurations([stats([]), stats([])]), { count: 0, samples: [] }, 'none: no percentiles')
})

t.test('images: counts summed, samples pooled, the manifest of the latest pull, platforms unioned', async (t) => {
  const { images } = merged()
  t.same(images.map((i) => [i.image, i.pullSeconds]), [[ML, 40], [APP, 25.5], [WEB, 5], [TOOL, 3]], 'by pull-seconds, highest first')
  const app = find(images, APP)
  t.match(app, { pulls: 6, resolves: 7, cold: 4, warm: 1, partial: 1, failed: 1, pullSeconds: 25.5 }, 'summed')
  t.same(app.coldSeconds, { count: 5, p50: 4, p95: 10, max: 10, samples: [4, 6, 2, 3, 10] }, 'cold: [4, 6] and [2, 3, 10] pooled')
  t.same(app.warmSeconds, replicaA().images.images[0]?.warmSeconds, 'warm pulls on mirror-a only: its figures')
  t.equal(app.lastPulled, '2026-12-02T11:30:00.000Z', 'the latest')
  t.same(app.layers, [L.BASE, L.A1], 'layers of mirror-b, which pulled it last (mirror-a had A0)')
  t.equal(app.digest, replicaB().images.images[1]?.digest)
  t.equal(app.size, 35_010_000)
  t.same(app.largestLayer, L.BASE)
  t.same(app.platforms, ['linux/amd64', 'linux/arm64'])
  t.same(app.kubelet, {
    pulls: 3,
    pullSeconds: { count: 3, p50: 5, p95: 7, max: 7, samples: [5, 3, 7] },
    includingWaitingSeconds: { count: 3, p50: 6, p95: 9, max: 9, samples: [6, 4, 9] },
  }, 'the kubelet figures merged the same way')
  t.notOk('kubelet' in find(images, ML), 'no kubelet figures: none made up')
  t.same(find(images, WEB), { ...replicaA().images.images[1], uniqueBytes: L.W.size }, 'seen by one replica: as it reported it')
})

t.test('unique bytes are recomputed over the merged set', async (t) => {
  const { images } = merged()
  t.equal(replicaB().images.images[1]?.uniqueBytes, 35_000_000, 'mirror-b alone sees no other image with BASE')
  t.equal(find(images, APP).uniqueBytes, L.A1.size, 'merged: BASE is web:1\'s too (mirror-a), so only A1 is app:1\'s own')
  t.equal(find(images, WEB).uniqueBytes, L.W.size)
  t.equal(find(images, ML).uniqueBytes, L.M0.size + L.M1.size)
  t.equal(find(images, TOOL).uniqueBytes, L.T0.size + L.T1.size + L.T2.size)
})

t.test('layers: union by digest, images unioned, largest first', async (t) => {
  const { layers } = merged()
  t.same(layers.map((l) => l.digest), [L.M1, L.BASE, L.M0, L.A1, L.A0, L.T0, L.T1, L.T2, L.W].map((l) => l.digest))
  t.same(layers.find((l) => l.digest === L.BASE.digest), { ...L.BASE, images: [APP, WEB] }, 'BASE: app:1 from both, web:1 from mirror-a')
})

t.test('pulls: both replicas\', newest first', async (t) => {
  t.same(merged().pulls.map((p) => p.id), ['mirror-b-3', 'mirror-b-2', 'mirror-a-3', 'mirror-b-1', 'mirror-a-2', 'mirror-a-1'])
})

t.test('summary: counters summed, ratios of the sums, the shared bucket counted once, the lowest rate-limit budget', async (t) => {
  const s = merged().summary
  t.same(s.instances, ['mirror-a', 'mirror-b'])
  t.equal(s.since, '2026-12-01T08:00:00.000Z', 'the earliest')
  t.equal(s.now, '2026-12-02T12:00:05.000Z', 'the latest')
  t.same(s.requests, { total: 400, hits: 350, hitRatio: 0.875 }, 'not the mean of 0.8 and 0.9')
  t.same(s.bytes, { served: 4_000_000_000, fromCache: 3_300_000_000, fromUpstream: 700_000_000, hitRatio: 0.825 })
  t.same(s.upstreamSaved, { bytes: 3_300_000_000, requests: 350 })
  t.same(s.pulls, { total: 13, cold: 7, warm: 4, partial: 2, failed: 1, resolves: 12 })
  t.equal(s.fillsInProgress, 3)
  t.same(s.cache, { size: 5_200_000_000, quota: 20_000_000_000, usedRatio: 0.26 }, 'one bucket: the largest report, not 10.2 GB')
  t.same(s.upstreams, [
    { name: 'docker.io', url: 'https://registry-1.docker.io', requests: 50, errors: 1, rateLimitRemaining: 75, pausedSeconds: 12 },
    { name: 'ghcr.io', url: 'https://ghcr.io', requests: 15, errors: 2, rateLimitRemaining: null, pausedSeconds: 0 },
  ])
  const { instances, ...alone } = mergeReplicas([insightsOf(replicaA())]).summary
  const { instance, ...own } = replicaA().summary
  t.same([alone, instances], [own, [instance]], 'one replica: its summary')
  const noQuota = mergeReplicas([{ ...insightsOf(replicaA()), summary: { ...replicaA().summary, cache: { size: 9, quota: null, usedRatio: null }, requests: { total: 0, hits: 0, hitRatio: null } } }]).summary
  t.same(noQuota.cache, { size: 9, quota: null, usedRatio: null })
  t.equal(noQuota.requests.hitRatio, null, 'no request: no ratio')
})

t.test('advice over the merged images', async (t) => {
  const a = sizeAdvice(merged().images)
  t.same(a.dominantLayers.map((d) => [d.image, d.layer.digest, d.sharedBy]), [[ML, L.M1.digest, 1], [APP, L.BASE.digest, 2], [WEB, L.BASE.digest, 2]], 'largest layer first; tool:1 (43%) is not')
  t.equal(a.dominantLayers[0]?.share, 400_000_000 / 420_010_000)
  t.same(a.loneImages, [
    { image: ML, size: 420_010_000, layerCount: 2, bottomLayer: L.M0 },
    { image: TOOL, size: 7_010_000, layerCount: 3, bottomLayer: L.T0 },
  ], 'app:1 and web:1 share BASE; ml:2 and tool:1 share nothing')
  t.same(a.sharedBase, { images: [ML, TOOL], bottomLayersBytes: 23_000_000, largestBottomLayer: 20_000_000, estimatedSavedBytes: 3_000_000 }, '20 MB + 3 MB, minus the larger')
})

const img = (name: string, layers: LayerRef[], size = layers.reduce((a, l) => a + l.size, 0)): ImageInsight => ({
  image: name, upstream: 'docker.io', repository: name, digest: digest('e'), platforms: [], pulls: 1, resolves: 0, cold: 1, warm: 0, partial: 0, failed: 0,
  coldSeconds: stats([1]), warmSeconds: stats([]), size, layerCount: layers.length, uniqueBytes: 0, layers, lastPulled: '2026-12-02T00:00:00.000Z', pullSeconds: 1,
})

t.test('advice rules at their edges', async (t) => {
  const half = sizeAdvice([img('half', [{ digest: digest('1'), size: 50 }, { digest: digest('2'), size: 50 }])])
  t.same(half.dominantLayers, [], 'exactly half is not most')
  const most = sizeAdvice([img('most', [{ digest: digest('1'), size: 51 }, { digest: digest('2'), size: 49 }])])
  t.same(most.dominantLayers, [{ image: 'most', size: 100, layer: { digest: digest('1'), size: 51 }, share: 0.51, sharedBy: 1 }])
  t.equal(most.sharedBase, null, 'one lone image: nothing to share a base with')
  const unknown = sizeAdvice([img('empty', [], 0), img('x', [{ digest: digest('3'), size: 10 }])])
  t.same(unknown.loneImages.map((i) => i.image), ['x'], 'an image without known layers is left out')
  const sharing = sizeAdvice([img('p', [{ digest: digest('4'), size: 10 }, { digest: digest('5'), size: 1 }]), img('q', [{ digest: digest('6'), size: 10 }, { digest: digest('5'), size: 1 }])])
  t.same(sharing.loneImages, [], 'sharing a top layer counts as sharing')
  t.equal(sharing.sharedBase, null)
  const three = sizeAdvice(['a', 'b', 'c'].map((n, i) => img(n, [{ digest: digest(`${i}f`), size: (i + 1) * 100 }, { digest: digest(`${i}e`), size: 1000 }])))
  t.same(three.sharedBase, { images: ['c', 'b', 'a'], bottomLayersBytes: 600, largestBottomLayer: 300, estimatedSavedBytes: 300 })
})
