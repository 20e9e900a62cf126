// The pre-warmer in this process, with the official client unmodified against
// the stand-in API server (test/harness/kube-api.ts) and a recording prefetch:
// lists, watches, reconnects and relists, and which jobs come out of them.
// The mirror process itself is in test/e2e/prewarm.test.ts.
import { readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import { Metrics } from '../../src/observability/metrics.js'
import type { JobRequest, JobStatus } from '../../src/prefetch/jobs.js'
import { startPrewarm, type RunningPrewarmer } from '../../src/prewarm/start.js'
import { node, startKubeApi, workload, type KubeApiStandIn } from '../harness/kube-api.js'
import { freePort, waitFor } from '../harness/tools.js'

interface Setup {
  prewarmer: RunningPrewarmer
  jobs: JobRequest[]
  metrics: Metrics
  lines: Array<Record<string, unknown>>
}

type Prefetch = (request: JobRequest) => Promise<JobStatus>

let ids = 0
const statusOf = (request: JobRequest, state: 'done' | 'failed' = 'done'): JobStatus => ({
  id: `job-${++ids}`,
  state,
  createdAt: new Date().toISOString(),
  platforms: request.platforms ?? ['linux/amd64', 'linux/arm64'],
  images: request.images.map((image) => ({
    image, reference: image, state, platforms: request.platforms ?? [],
    layers: { total: 2, cached: 0, fetched: state === 'done' ? 2 : 0, failed: state === 'done' ? 0 : 2 },
    bytes: { total: 10, cached: 0, fetched: 10 }, failures: [],
  })),
})

function start(t: Test, api: KubeApiStandIn, config: Record<string, unknown> = {}, prefetch?: Prefetch, pageSize?: number): Setup {
  const jobs: JobRequest[] = []
  const lines: Array<Record<string, unknown>> = []
  const metrics = new Metrics()
  // prefetch.maxImagesPerJob rides along with the kubernetes keys here, for brevity.
  const { maxImagesPerJob, ...kube } = config
  const prewarmer = startPrewarm({
    config: { enabled: true, existing: true, kubeconfig: api.kubeconfigPath, ...kube },
    prefetch: (request) => {
      jobs.push(request)
      return prefetch !== undefined ? prefetch(request) : Promise.resolve(statusOf(request))
    },
    mirrors: (image) => !image.startsWith('quay.io/'),
    maxImagesPerJob: typeof maxImagesPerJob === 'number' ? maxImagesPerJob : 256,
    metrics,
    log: pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
  }, { backoff: { initialMs: 20, maxMs: 200, healthyMs: 60_000 }, ...(pageSize !== undefined ? { pageSize } : {}) })
  t.teardown(() => prewarmer.stop())
  return { prewarmer, jobs, metrics, lines }
}

const synced = (s: Setup): Promise<void> => waitFor(async () => s.lines.some((l) => l['msg'] === 'pre-warm: first sync of the cluster done'), 10_000, 'the first sync')

async function counts(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const v of (await metrics.prewarms.get()).values) out[String(v.labels['result'])] = v.value
  return out
}

t.test('stand-in API server: paginated first list, then the existing images once, as low-priority jobs for the nodes\' platforms', async (t) => {
  const api = await startKubeApi(t)
  for (let i = 0; i < 5; i++) api.add(workload('Deployment', 'shop', `web-${i}`, { images: [`ghcr.io/shop/web:${i}`, 'ghcr.io/shop/sidecar:1'] }))
  api.add(workload('CronJob', 'ops', 'backup', { images: ['ghcr.io/ops/backup:2'], initImages: ['ghcr.io/ops/init:1'] }))
  api.add(workload('StatefulSet', 'db', 'pg', { images: ['quay.io/x/y:1'] }))
  api.add(node('n1', 'linux/arm64', ['10.0.0.1']))
  api.add(node('n2', 'linux/amd64', ['10.0.0.2']))
  const s = start(t, api, {}, undefined, 2)
  await synced(s)
  await s.prewarmer.idle()
  const lists = api.requests().filter((r) => r.path === '/apis/apps/v1/deployments' && !r.watch)
  t.same(lists.map((r) => [r.query['limit'], r.query['continue'] !== undefined]), [['2', false], ['2', true], ['2', true]], 'three pages of two')
  t.ok(api.requests().every((r) => r.authorization === 'Bearer stand-in-token'), 'with the kubeconfig\'s credentials')
  t.equal(s.prewarmer.tracker.size, 7, 'every workload kept')
  t.equal(s.jobs.length, 1, 'one job for what was there')
  t.same(s.jobs[0]?.priority, 'low')
  t.same(s.jobs[0]?.platforms, ['linux/amd64', 'linux/arm64'], 'the nodes\' platforms')
  t.same([...(s.jobs[0]?.images ?? [])].sort(), ['ghcr.io/ops/backup:2', 'ghcr.io/ops/init:1', 'ghcr.io/shop/sidecar:1', ...[0, 1, 2, 3, 4].map((i) => `ghcr.io/shop/web:${i}`)].sort(), 'each image once, init containers and CronJobs included, not the unmirrored one')
  t.same(await counts(s.metrics), { ignored: 1, warm: 8 })
  t.equal(s.prewarmer.nodeOf('10.0.0.2'), 'n2')
  t.equal((await s.metrics.prewarmSeconds.get()).values.find((v) => v.metricName === 'stevedore_prewarm_seconds_count')?.value ?? 0, 0, 'existing images are not changes: no latency observed')
})

t.test('stand-in API server: jobs never name more images than prefetch.maxImagesPerJob', async (t) => {
  const api = await startKubeApi(t)
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/a:1', 'ghcr.io/shop/b:1', 'ghcr.io/shop/c:1'] }))
  const s = start(t, api, { maxImagesPerJob: 2 })
  await synced(s)
  await s.prewarmer.idle()
  t.same(s.jobs.map((j) => j.images.length), [2, 1], 'the existing images in jobs of two')
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/d:1', 'ghcr.io/shop/e:1', 'ghcr.io/shop/f:1'] }))
  await waitFor(async () => s.jobs.length === 4, 10_000, 'the change\'s jobs')
  t.same(s.jobs.slice(2).map((j) => j.images.length), [2, 1], 'a change naming three new images: jobs of two')
})

t.test('stand-in API server: existing: false prefetches nothing at start; no node known: platforms left to the prefetch config', async (t) => {
  const api = await startKubeApi(t)
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1'] }))
  const s = start(t, api, { existing: false })
  await synced(s)
  await api.waitForWatches(7)
  t.equal(s.jobs.length, 0, 'no job for what was there')
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:2'] }))
  await waitFor(async () => s.jobs.length === 1, 5000, 'a job for the change')
  t.same(s.jobs[0], { images: ['ghcr.io/shop/web:2'], priority: 'normal' }, 'no platforms: prefetch.platforms applies')
})

t.test('stand-in API server: a change submits one job with only the new references; unmirrored ones are ignored', async (t) => {
  const api = await startKubeApi(t)
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1', 'ghcr.io/shop/sidecar:1'] }))
  api.add(node('n1', 'linux/amd64'))
  let release: (() => void) | undefined
  const gate = new Promise<void>((resolve) => { release = resolve })
  const s = start(t, api, { existing: false }, async (r) => {
    if (r.images.includes('ghcr.io/shop/web:2')) await gate
    return statusOf(r)
  })
  await synced(s)
  await api.waitForWatches(7)
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:2', 'ghcr.io/shop/sidecar:1', 'quay.io/x/y:1'], initImages: ['ghcr.io/shop/migrate:2'] }))
  await waitFor(async () => s.jobs.length === 1, 5000, 'a job')
  t.same(s.jobs[0], { images: ['ghcr.io/shop/migrate:2', 'ghcr.io/shop/web:2'], priority: 'normal', platforms: ['linux/amd64'] }, 'new references only, init container included')
  // Another workload moves to the image being pre-warmed right now: not submitted twice.
  api.add(workload('DaemonSet', 'shop', 'agent', { images: ['ghcr.io/shop/web:2', 'ghcr.io/shop/agent:1'] }))
  await waitFor(async () => s.jobs.length === 2, 5000, 'a second job')
  t.same(s.jobs[1]?.images, ['ghcr.io/shop/agent:1'], 'only what is not already in flight')
  api.add(workload('CronJob', 'ops', 'report', { images: ['ghcr.io/ops/report:1'] }))
  await waitFor(async () => s.jobs.length === 3, 5000, 'a CronJob\'s job')
  t.same(s.jobs[2]?.images, ['ghcr.io/ops/report:1'])
  release?.()
  await s.prewarmer.idle()
  t.same(await counts(s.metrics), { ignored: 1, warm: 4 })
  const warmed = s.lines.filter((l) => l['msg'] === 'pre-warmed')
  t.same(warmed.map((l) => l['image']).sort(), ['ghcr.io/ops/report:1', 'ghcr.io/shop/agent:1', 'ghcr.io/shop/migrate:2', 'ghcr.io/shop/web:2'])
  t.equal(warmed.find((l) => l['image'] === 'ghcr.io/shop/web:2')?.['workload'], 'Deployment shop/web', 'the log names the workload')
  t.ok(s.lines.some((l) => l['msg'] === 'pre-warm: not a mirrored registry; ignored' && l['image'] === 'quay.io/x/y:1' && l['level'] === 20), 'a debug line for the ignored one')
  const seconds = (await s.metrics.prewarmSeconds.get()).values.find((v) => v.metricName === 'stevedore_prewarm_seconds_count')
  t.equal(seconds?.value, 4, 'a latency per warmed image')
  // Scaling (same images) is no change; a delete forgets the workload.
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:2', 'ghcr.io/shop/sidecar:1', 'quay.io/x/y:1'], initImages: ['ghcr.io/shop/migrate:2'], annotations: { a: 'b' } }))
  api.remove('DaemonSet', 'shop', 'agent')
  await waitFor(async () => s.prewarmer.tracker.get('DaemonSet', 'shop/agent') === undefined, 5000, 'the delete')
  t.equal(s.jobs.length, 3, 'no job without new images')
})

t.test('stand-in API server: a refused job counts as failed and changes nothing else', async (t) => {
  const api = await startKubeApi(t)
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1'] }))
  let refuse = true
  const s = start(t, api, {}, async (r) => {
    if (refuse) throw Object.assign(new Error('too many prefetch jobs running'), { status: 503 })
    return statusOf(r, r.images.includes('ghcr.io/shop/bad:1') ? 'failed' : 'done')
  })
  await synced(s)
  await s.prewarmer.idle()
  t.same(await counts(s.metrics), { failed: 1 })
  t.ok(s.lines.some((l) => l['msg'] === 'pre-warm: the prefetch job was refused' && l['level'] === 40))
  refuse = false
  await api.waitForWatches(7)
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1', 'ghcr.io/shop/bad:1'] }))
  await waitFor(async () => s.jobs.length === 2, 5000, 'the next change still submits')
  await s.prewarmer.idle()
  t.same(await counts(s.metrics), { failed: 2 }, 'a failed image counts as failed')
  t.ok(s.lines.some((l) => l['msg'] === 'pre-warm failed' && l['image'] === 'ghcr.io/shop/bad:1'))
})

t.test('stand-in API server: a dropped watch resumes from the last version seen (bookmarks included); a later change is still seen', async (t) => {
  const api = await startKubeApi(t)
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1'] }))
  const s = start(t, api, { existing: false })
  await synced(s)
  await api.waitForWatches(7)
  t.ok(api.requests().filter((r) => r.watch).every((r) => r.query['allowWatchBookmarks'] === 'true' && r.query['resourceVersion'] !== undefined), 'watches ask for bookmarks, from the list\'s version')
  api.add(workload('Job', 'other', 'unrelated', { images: ['ghcr.io/x/job:1'] }))
  await waitFor(async () => s.jobs.length === 1, 5000, 'the Job\'s job')
  api.bookmark()
  const bookmarked = String(api.resourceVersion)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const before = api.requests().length
  t.equal(api.dropWatches(), 7)
  await api.waitForWatches(7)
  const again = api.requests().slice(before)
  t.notOk(again.some((r) => !r.watch), 'no relist after a plain drop')
  t.equal(again.find((r) => r.path === '/apis/apps/v1/deployments')?.query['resourceVersion'], bookmarked, 'resumed from the bookmark')
  api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:2'] }))
  await waitFor(async () => s.jobs.some((j) => j.images.includes('ghcr.io/shop/web:2')), 5000, 'the change after the reconnect')
  t.ok(s.lines.some((l) => l['msg'] === 'pre-warm: watch failed; reconnecting' || l['msg'] === 'pre-warm: watch closed; reconnecting'), 'the drop is logged')
})

for (const how of ['status', 'event'] as const) {
  t.test(`stand-in API server: 410 Gone (${how === 'status' ? 'as the HTTP status' : 'as an ERROR event'}) relists, and the relist sees what changed and what went`, async (t) => {
    const api = await startKubeApi(t)
    api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1'] }))
    api.add(workload('Deployment', 'shop', 'old', { images: ['ghcr.io/shop/old:1'] }))
    const s = start(t, api, { existing: false })
    await synced(s)
    await api.waitForWatches(7)
    // While the watch is down, history is compacted: the changes are only visible to a list.
    const before = api.requests().length
    api.dropWatches()
    api.modify(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:3'] }))
    api.remove('Deployment', 'shop', 'old')
    api.compact(how)
    await waitFor(async () => s.jobs.some((j) => j.images.includes('ghcr.io/shop/web:3')), 5000, 'the change found by the relist')
    const after = api.requests().slice(before).filter((r) => r.path === '/apis/apps/v1/deployments')
    const gone = after.findIndex((r) => r.watch && r.gone === how)
    t.ok(gone >= 0, `the Deployments watch was answered 410 (${how})`)
    t.ok(after.slice(gone).some((r) => !r.watch), 'then the Deployments were listed again')
    t.equal(s.prewarmer.tracker.get('Deployment', 'shop/old'), undefined, 'the workload deleted meanwhile is forgotten')
    t.ok(s.lines.some((l) => l['msg'] === 'pre-warm: resourceVersion too old (410 Gone); listing again'))
    await api.waitForWatches(7)
  })
}

t.test('stand-in API server: a 410 Gone to one watch relists that resource only', async (t) => {
  const api = await startKubeApi(t)
  const s = start(t, api, { existing: false })
  await synced(s)
  await api.waitForWatches(7)
  const before = api.requests().length
  api.goneOnNextWatch('status')
  api.dropWatches()
  await waitFor(async () => api.requests().slice(before).some((r) => r.gone === 'status'), 5000, 'the 410')
  await api.waitForWatches(7)
  const after = api.requests().slice(before)
  const gone = after.find((r) => r.gone === 'status')
  t.ok(gone !== undefined)
  t.same([...new Set(after.filter((r) => !r.watch).map((r) => r.path))], [gone?.path], 'one list, of the resource whose watch was gone')
})

t.test('stand-in API server: namespaces and excludeNamespaces; prepull images of annotated workloads', async (t) => {
  const api = await startKubeApi(t)
  const prepull = { 'stevedore.io/prepull': 'true' }
  api.add(workload('Deployment', 'shop', 'web', { images: ['ghcr.io/shop/web:1'], annotations: prepull }))
  api.add(workload('Deployment', 'shop-canary', 'web', { images: ['ghcr.io/shop/canary:1'], annotations: prepull }))
  api.add(workload('DaemonSet', 'kube-system', 'proxy', { images: ['ghcr.io/k/proxy:1'], annotations: prepull }))
  api.add(workload('DaemonSet', 'shop', 'agent', { images: ['ghcr.io/shop/web:1', 'ghcr.io/shop/agent:1'], annotations: prepull }))
  api.add(workload('StatefulSet', 'shop', 'db', { images: ['ghcr.io/shop/db:1'] }))
  const s = start(t, api, { namespaces: ['shop', 'kube-system'], excludeNamespaces: ['kube-system'] })
  await synced(s)
  await s.prewarmer.idle()
  t.same([...(s.jobs[0]?.images ?? [])].sort(), ['ghcr.io/shop/agent:1', 'ghcr.io/shop/db:1', 'ghcr.io/shop/web:1'], 'only namespace shop')
  t.same([...s.prewarmer.prepullImages()].sort(), ['ghcr.io/shop/agent:1', 'ghcr.io/shop/web:1'], 'annotated workloads of the namespaces kept, each image once')
  await api.waitForWatches(7)
  api.modify(workload('Deployment', 'shop-canary', 'web', { images: ['ghcr.io/shop/canary:2'] }))
  api.modify(workload('DaemonSet', 'kube-system', 'proxy', { images: ['ghcr.io/k/proxy:2'] }))
  api.modify(workload('StatefulSet', 'shop', 'db', { images: ['ghcr.io/shop/db:2'] }))
  await waitFor(async () => s.jobs.length === 2, 5000, 'the change in shop')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(s.jobs.length, 2, 'none for the other namespaces')
  t.same(s.jobs[1]?.images, ['ghcr.io/shop/db:2'])
  t.ok(api.requests().every((r) => !r.path.includes('/namespaces/')), 'cluster-wide paths only')
  api.modify(workload('DaemonSet', 'shop', 'agent', { images: ['ghcr.io/shop/agent:1'] }))
  await waitFor(async () => s.prewarmer.tracker.get('DaemonSet', 'shop/agent')?.prepull === false, 5000, 'the annotation removed')
  t.same([...s.prewarmer.prepullImages()], ['ghcr.io/shop/web:1'])
})

t.test('stand-in API server: stop() ends every watch and pending retry', async (t) => {
  const api = await startKubeApi(t)
  const s = start(t, api)
  await synced(s)
  await api.waitForWatches(7)
  await s.prewarmer.stop()
  await waitFor(async () => api.openWatches() === 0, 5000, 'the watches closed')
  const n = api.requests().length
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(api.requests().length, n, 'nothing more is asked after stop')
})

t.test('credentials: a kubeconfig that cannot be loaded is a config error naming the key', async (t) => {
  const deps = { config: { enabled: true, existing: true, kubeconfig: '/nonexistent/kubeconfig' }, prefetch: async (r: JobRequest) => statusOf(r), mirrors: () => true, maxImagesPerJob: 256, metrics: new Metrics(), log: pino({ level: 'silent' }) }
  t.throws(() => startPrewarm(deps), { name: 'ConfigError', key: 'prewarm.kubernetes.kubeconfig' })
})

t.test('an unreachable API server is retried with backoff, logged, never thrown; stop() ends the retries', async (t) => {
  const api = await startKubeApi(t)
  const port = await freePort()
  const file = join(dirname(api.kubeconfigPath), 'unreachable')
  await writeFile(file, (await readFile(api.kubeconfigPath, 'utf8')).replace(api.url, `http://127.0.0.1:${port}`))
  const lines: Array<Record<string, unknown>> = []
  const prewarmer = startPrewarm({
    config: { enabled: true, existing: true, kubeconfig: file },
    prefetch: async (r) => statusOf(r), mirrors: () => true, maxImagesPerJob: 256, metrics: new Metrics(),
    log: pino({ level: 'warn' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
  }, { backoff: { initialMs: 20, maxMs: 100, healthyMs: 60_000 } })
  await waitFor(async () => lines.filter((l) => l['msg'] === 'pre-warm: list failed; retrying' && l['resource'] === 'deployments').length >= 3, 10_000, 'three failed lists')
  const delays = lines.filter((l) => l['resource'] === 'deployments').map((l) => Number(l['retryInMs']))
  t.ok(delays.every((d, i) => i === 0 || d >= (delays[i - 1] ?? 0) / 2), `growing delays: ${delays.join(', ')}`)
  const started = Date.now()
  await prewarmer.stop()
  t.ok(Date.now() - started < 2000, 'stop() resolves promptly')
  const n = lines.length
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(lines.length, n, 'no retry after stop')
})
