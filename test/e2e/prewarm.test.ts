// Pre-warming from the Kubernetes API, end to end: a real registry, a real
// mirror process with `prewarm.kubernetes` pointing (by kubeconfig) at the
// stand-in API server of test/harness/kube-api.ts, and the official client
// unmodified in between. No client pulls anything here: whatever lands in
// the cache was pre-warmed. Nothing listens or is sent beyond 127.0.0.1.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { buildImage, hostPlatform, pushImage } from '../harness/images.js'
import { node, startKubeApi, workload, type KubeApiStandIn } from '../harness/kube-api.js'
import { cachedBlobPath, startStack, type Stack } from '../harness/stack.js'
import { requireTools, sleep, tempDir, waitFor } from '../harness/tools.js'

const LAYERS = [80_000, 40_000]

async function setup(t: Test, kubernetes: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<{ api: KubeApiStandIn; s: Stack; ref: (tag: string) => string }> {
  const api = await startKubeApi(t)
  const s = await startStack(t, { layers: LAYERS, extraConfig: { prewarm: { kubernetes: { enabled: true, kubeconfig: api.kubeconfigPath, ...kubernetes } }, ...extra } })
  return { api, s, ref: (tag) => `${s.registry.host}/${s.repo}:${tag}` }
}

const blobsOf = (img: { config: { digest: string }; layers: Array<{ digest: string }> }): string[] => [img.config.digest, ...img.layers.map((l) => l.digest)]

/** The index's image for the platform that is not this host's (its manifest as the registry stores it). */
async function otherPlatform(s: Stack): Promise<{ manifest: string; blobs: string[] }> {
  const index = JSON.parse(s.index.manifest.toString('utf8')) as { manifests: Array<{ digest: string; platform: { architecture: string } }> }
  const other = index.manifests.find((m) => m.platform.architecture !== hostPlatform().architecture)
  if (other === undefined) throw new Error('the index has no other platform')
  const manifest = JSON.parse(await readFile(s.registry.blobDataPath(other.digest), 'utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> }
  return { manifest: other.digest, blobs: blobsOf(manifest) }
}

const cached = (s: Stack, digests: string[]): boolean => digests.every((d) => existsSync(cachedBlobPath(s.cacheRoot, d)))
const noneCached = (s: Stack, digests: string[]): boolean => digests.every((d) => !existsSync(cachedBlobPath(s.cacheRoot, d)))
const waitCached = (s: Stack, digests: string[], what: string): Promise<void> => waitFor(async () => cached(s, digests), 30_000, `${what} in the cache`)

const logsWith = (s: Stack, msg: string): Array<Record<string, unknown>> => s.mirror.logs().filter((l) => l['msg'] === msg)
const waitLog = (s: Stack, msg: string, match: (l: Record<string, unknown>) => boolean = () => true, n = 1): Promise<void> =>
  waitFor(async () => logsWith(s, msg).filter(match).length >= n, 30_000, `log line "${msg}"`)

async function metric(s: Stack, line: RegExp): Promise<number> {
  const text = await (await fetch(`${s.mirror.url}/metrics`)).text()
  const m = line.exec(text)
  return m === null ? 0 : Number(m[1])
}
const prewarmed = (s: Stack, result: string): Promise<number> => metric(s, new RegExp(`^stevedore_prewarm_total\\{result="${result}"\\} (\\d+)`, 'm'))

/** Restarts the mirror with `change` made while it is down: what it finds is "existing". */
async function whileDown(s: Stack, change: () => void): Promise<void> {
  await s.mirror.stop()
  change()
  s.registry.resetRequests()
  await s.mirror.start()
}

t.test('stand-in API server, two node platforms: existing workloads, changes, ignored registries, prepull list', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { api, s, ref } = await setup(t, {}, { log: { level: 'debug' }, prepull: { images: ['docker.io/library/busybox:1.36'] } })
  api.add(node('node-amd', 'linux/amd64', ['10.0.0.1']))
  api.add(node('node-arm', 'linux/arm64', ['10.0.0.2']))
  const prepull = { 'stevedore.io/prepull': 'true' }
  const other = await otherPlatform(s)

  await t.test('1. a Deployment there before the mirror starts is prefetched after the first sync, at low priority', async (t) => {
    await whileDown(s, () => {
      api.add(workload('Deployment', 'shop', 'web', { images: [ref('oci')], annotations: prepull }))
      api.add(workload('Deployment', 'shop', 'vendor', { images: ['quay.io/x/y:1'] }))
    })
    await waitCached(s, blobsOf(s.oci), 'the oci image')
    await s.registry.settle()
    for (const d of blobsOf(s.oci)) t.ok(s.registry.count('GET', `/blobs/${d}`) >= 1, `the registry served ${d.slice(0, 19)}`)
    await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('oci'))
    const line = logsWith(s, 'pre-warmed').find((l) => l['image'] === ref('oci'))
    t.equal(line?.['priority'], 'low', 'an existing image is low priority')
    t.equal(line?.['workload'], 'existing workloads')
    t.equal(line?.['level'], 30, 'info')
    t.same(logsWith(s, 'pre-warm: first sync of the cluster done').at(-1)?.['platforms'], ['linux/amd64', 'linux/arm64'])
    t.notOk(s.mirror.logs().some((l) => l['msg'] === 'request' && /\/(manifests|blobs)\//.test(String(l['path']))), 'no client pulled anything')
  })

  await t.test('3. an image of a registry that is not an upstream is ignored: counted, logged at debug, no job', async (t) => {
    t.equal(await prewarmed(s, 'ignored'), 1)
    t.ok(s.mirror.logs().some((l) => l['msg'] === 'pre-warm: not a mirrored registry; ignored' && l['image'] === 'quay.io/x/y:1' && l['level'] === 20))
    t.notOk(s.mirror.logs().some((l) => (l['msg'] === 'pre-warmed' || l['msg'] === 'pre-warm failed') && l['image'] === 'quay.io/x/y:1'), 'no prefetch of it')
  })

  await t.test('2 and 4. a Deployment changed to a new image (an init container, an index) is warmed for both node platforms; a CronJob\'s image too', async (t) => {
    const warmBefore = await prewarmed(s, 'warm')
    t.ok(noneCached(s, other.blobs), 'the other platform is not cached yet')
    api.modify(workload('Deployment', 'shop', 'web', { images: [ref('oci')], initImages: [ref('index')], annotations: prepull }))
    await waitCached(s, other.blobs, 'the index\'s other platform')
    await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('index'))
    const line = logsWith(s, 'pre-warmed').find((l) => l['image'] === ref('index'))
    t.same(line?.['platforms'], [`linux/${hostPlatform().architecture}`, `linux/${hostPlatform().architecture === 'arm64' ? 'amd64' : 'arm64'}`].sort(), 'fetched for both node platforms')
    t.equal(line?.['workload'], 'Deployment shop/web')
    t.equal(line?.['priority'], 'normal')
    t.equal(typeof line?.['seconds'], 'number')
    t.ok(s.mirror.logs().every((l) => l['image'] !== ref('oci') || l['workload'] !== 'Deployment shop/web'), 'the unchanged image is not pre-warmed again')

    api.add(workload('CronJob', 'ops', 'report', { images: [ref('docker')] }))
    await waitCached(s, blobsOf(s.docker), 'the CronJob\'s image')
    await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('docker'))
    t.equal(await prewarmed(s, 'warm'), warmBefore + 2, 'stevedore_prewarm_total{result="warm"} counts both')
    t.equal(await metric(s, /^stevedore_prewarm_seconds_count (\d+)/m), 2, 'stevedore_prewarm_seconds observed each')
    t.ok(await metric(s, /^stevedore_prewarm_seconds_bucket\{le="\+Inf"\} (\d+)/m) === 2)
  })

  await t.test('7. GET /api/v1/prepull lists prepull.images and the images of annotated workloads', async (t) => {
    const res = await fetch(`${s.mirror.url}/api/v1/prepull`)
    t.equal(res.status, 200)
    const { images } = (await res.json()) as { images: string[] }
    t.same([...images].sort(), ['docker.io/library/busybox:1.36', ref('index'), ref('oci')].sort(), 'the configured one, then the annotated Deployment\'s (not the CronJob\'s, not the unannotated one)')
  })
})

t.test('stand-in API server, one node platform: existing: false, namespaces and excludeNamespaces', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { api, s, ref } = await setup(t, { existing: false, namespaces: ['shop', 'ops'], excludeNamespaces: ['ops'] })
  api.add(node('only', `linux/${hostPlatform().architecture}`))
  const other = await otherPlatform(s)
  const extra = await buildImage(join(await tempDir(t, 'stevedore-prewarm-extra'), 'img'), { layers: [30_000] })
  await pushImage(s.registry, 'team/extra', '1', extra)

  await t.test('1. existing: false prefetches nothing at start', async (t) => {
    await whileDown(s, () => api.add(workload('Deployment', 'shop', 'web', { images: [ref('oci')] })))
    await waitLog(s, 'pre-warm: first sync of the cluster done', () => true, 2)
    await api.waitForWatches(7)
    await sleep(300)
    await s.registry.settle()
    t.equal(s.registry.count('GET', '/manifests/'), 0, 'no manifest asked for')
    t.ok(noneCached(s, blobsOf(s.oci)), 'nothing cached')
  })

  await t.test('4. with one node platform an index is prefetched for that platform only', async (t) => {
    api.modify(workload('Deployment', 'shop', 'web', { images: [ref('index')] }))
    await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('index'))
    t.ok(cached(s, blobsOf(s.oci)), 'the node\'s platform is cached')
    await s.registry.settle()
    t.equal(s.registry.count('GET', `/manifests/${other.manifest}`), 0, 'the other platform\'s manifest was not even asked for')
    t.ok(noneCached(s, other.blobs), 'nor its blobs')
    t.same(logsWith(s, 'pre-warmed').find((l) => l['image'] === ref('index'))?.['platforms'], [`linux/${hostPlatform().architecture}`])
  })

  await t.test('6. changes outside the namespaces, or in an excluded one, are not pre-warmed', async (t) => {
    api.add(workload('Deployment', 'ops', 'excluded', { images: [ref('docker')] }))
    api.add(workload('StatefulSet', 'elsewhere', 'db', { images: [ref('list')] }))
    // Last, in a watched namespace: once it is warm, the two before it were seen too (each watch is in order; these are two watches, so wait a little more).
    api.add(workload('Deployment', 'shop', 'extra', { images: [`${s.registry.host}/team/extra:1`] }))
    await waitCached(s, blobsOf(extra), 'the watched namespace\'s image')
    await api.waitForWatches(7)
    await sleep(500)
    await s.registry.settle()
    t.equal(s.registry.count('GET', '/manifests/docker'), 0, 'the excluded namespace\'s image was not fetched')
    t.equal(s.registry.count('GET', '/manifests/list'), 0, 'nor the one outside the namespaces')
    t.ok(noneCached(s, blobsOf(s.docker)))
  })
})

t.test('stand-in API server: a dropped watch reconnects, a 410 relists; no node known: the configured platforms', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const { api, s, ref } = await setup(t, { existing: false })
  const other = await otherPlatform(s)
  await api.waitForWatches(7)
  api.add(workload('Deployment', 'shop', 'web', { images: [ref('list')] }))
  await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('list'))

  await t.test('5a. after the stand-in drops every watch, a later change is still pre-warmed, without a relist', async (t) => {
    const before = api.requests().length
    t.equal(api.dropWatches(), 7, 'seven watches dropped: the workload kinds, Nodes, Pulled events')
    await api.waitForWatches(7)
    api.modify(workload('Deployment', 'shop', 'web', { images: [ref('oci')] }))
    await waitCached(s, blobsOf(s.oci), 'the image of the change after the reconnect')
    const after = api.requests().slice(before)
    t.ok(after.filter((r) => r.watch).length >= 7, 'the watches came back')
    t.notOk(after.some((r) => !r.watch), 'resumed, not listed again')
  })

  await t.test('5b. a 410 Gone relists, and the change made meanwhile is pre-warmed (for prefetch.platforms: no node is known)', async (t) => {
    const before = api.requests().length
    api.dropWatches()
    api.modify(workload('Deployment', 'shop', 'web', { images: [ref('oci'), ref('docker')], initImages: [ref('index')] }))
    api.compact() // the change is now only visible to a list
    await waitCached(s, [...blobsOf(s.docker), ...other.blobs], 'the images of the change made during the gap')
    const after = api.requests().slice(before)
    t.ok(after.some((r) => r.watch && r.gone === 'status' && r.path === '/apis/apps/v1/deployments'), 'the watch was answered 410 Gone')
    t.ok(after.some((r) => !r.watch && r.path === '/apis/apps/v1/deployments'), 'then the Deployments were listed again')
    t.ok(s.mirror.logs().some((l) => l['msg'] === 'pre-warm: resourceVersion too old (410 Gone); listing again' && l['resource'] === 'deployments'))
    // Its blobs cached is not its job done: the line comes when the job's image ends.
    await waitLog(s, 'pre-warmed', (l) => l['image'] === ref('index'))
    t.same(logsWith(s, 'pre-warmed').find((l) => l['image'] === ref('index'))?.['platforms'], ['linux/amd64', 'linux/arm64'], 'prefetch.platforms, the default')
    await api.waitForWatches(7)
  })
})
