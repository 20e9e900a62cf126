// The kubelets' own pull times, end to end: a real mirror process with
// `prewarm.kubernetes` pointing (by kubeconfig) at the stand-in API server of
// test/harness/kube-api.ts (a fake: no real API server can run here), which
// serves the kubelets' Pulled Events as the real one would, field selector
// included. What the mirror read shows in /metrics. Nothing is pulled, so the
// one upstream is a loopback port nobody listens on.
import { join } from 'node:path'
import t from 'tap'
import { kubeletEvent } from '../harness/kube-events.js'
import { startKubeApi, type KubeObject } from '../harness/kube-api.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { freePort, tempDir, waitFor } from '../harness/tools.js'

const pulled = (image: string, pull: string, waiting: string): string => `Successfully pulled image "${image}" in ${pull} (${waiting} including waiting). Image size: 52428800 bytes.`

interface Phase { count: number; sum: number }

const r3 = (x: number): number => Math.round(x * 1000) / 1000

async function kubeletHistogram(mirror: Mirror): Promise<{ text: string; pull: Phase; including_waiting: Phase }> {
  const text = await (await fetch(`${mirror.url}/metrics`)).text()
  const value = (series: string, phase: string): number => {
    const m = new RegExp(`^stevedore_kubelet_pull_duration_seconds_${series}\\{phase="${phase}"\\} (\\S+)$`, 'm').exec(text)
    return m === null ? 0 : r3(Number(m[1]))
  }
  const phase = (p: string): Phase => ({ count: value('count', p), sum: value('sum', p) })
  return { text, pull: phase('pull'), including_waiting: phase('including_waiting') }
}

const waitCounts = (mirror: Mirror, pull: number, waiting: number): Promise<void> =>
  waitFor(async () => {
    const h = await kubeletHistogram(mirror)
    return h.pull.count === pull && h.including_waiting.count === waiting
  }, 15_000, `kubelet pull counts ${pull} (pull) and ${waiting} (including_waiting)`)

const pullLines = (mirror: Mirror): Array<Record<string, unknown>> => mirror.logs().filter((l) => l['msg'] === 'kubelet events: a pull')

t.test('kubelet Pulled events through the stand-in API server: each new pull once, by phase', async (t) => {
  const api = await startKubeApi(t)
  const work = await tempDir(t, 'stevedore-kubelet-events')
  const minutesAgo = (n: number): Date => new Date(Date.now() - n * 60_000)
  // There before the mirror starts (a restart finds the last hour's events listed): not counted.
  api.add(kubeletEvent('web-0.a', { pod: 'web-0', node: 'node-1', message: pulled('nginx:1.27', '3s', '4s'), at: minutesAgo(5) }))
  api.add(kubeletEvent('web-1.a', { pod: 'web-1', node: 'node-2', message: pulled('nginx:1.27', '2s', '2s'), at: minutesAgo(1), count: 3, firstAt: minutesAgo(30) }))
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(work, 'cache') } },
      upstreams: { 'registry.test': { url: `http://127.0.0.1:${await freePort()}` } },
      prewarm: { kubernetes: { enabled: true, kubeconfig: api.kubeconfigPath } },
      log: { level: 'debug' },
    },
  })
  await api.waitForWatches(7)

  await t.test('the list and the watch ask for reason=Pulled; the stand-in answers as the API server does', async (t) => {
    const events = api.requests().filter((r) => r.path === '/api/v1/events')
    t.ok(events.some((r) => !r.watch), 'listed')
    t.ok(events.some((r) => r.watch), 'watched')
    t.ok(events.every((r) => r.query['fieldSelector'] === 'reason=Pulled' && r.status === 200), 'always with the field selector, answered 200')
    api.add(kubeletEvent('web-0.s', { pod: 'web-0', reason: 'Scheduled', message: 'Successfully assigned shop/web-0 to node-1' }))
    const list = (await (await fetch(`${api.url}/api/v1/events?fieldSelector=reason%3DPulled`)).json()) as { items: KubeObject[] }
    t.same(list.items.map((e) => e.metadata.name).sort(), ['web-0.a', 'web-1.a'], 'a selected list leaves the Scheduled event out')
    const bad = await fetch(`${api.url}/api/v1/events?fieldSelector=message%3Dx`)
    t.equal(bad.status, 400, 'a field the API server does not select on is refused')
    t.match(((await bad.json()) as { message: string }).message, /field label not supported: message/)
  })

  await t.test('events from before the start are not counted; new ones once each, by phase; "already present" and other reasons never', async (t) => {
    const h0 = await kubeletHistogram(mirror)
    t.match(h0.text, /^# TYPE stevedore_kubelet_pull_duration_seconds histogram$/m, 'the histogram is exported')
    t.same([h0.pull.count, h0.including_waiting.count], [0, 0], 'nothing counted of what was listed at start')
    api.add(kubeletEvent('api-0.a', { pod: 'api-0', node: 'node-1', message: pulled('ghcr.io/shop/api:2', '3.2s', '4.1s') }))
    api.add(kubeletEvent('api-0.b', { pod: 'api-0', container: 'sidecar', node: 'node-1', message: 'Container image "ghcr.io/shop/envoy:1" already present on machine' }))
    api.add(kubeletEvent('api-1.a', { pod: 'api-1', node: 'node-2', message: 'Successfully pulled image "ghcr.io/shop/api:2" in 1m2.5s' }))
    api.add(kubeletEvent('api-1.b', { pod: 'api-1', node: 'node-2', reason: 'Created', message: pulled('ghcr.io/shop/api:2', '99s', '99s') }))
    // The last one, written the way an events.k8s.io/v1 client would (eventTime, reportingInstance, no source):
    // once it is counted, every event before it was seen (one watch, in order).
    api.add(kubeletEvent('db-0.a', { pod: 'db-0', node: 'node-3', series: true, message: pulled('ghcr.io/shop/db:16', '850ms', '850ms') }))
    await waitCounts(mirror, 2, 3)
    const h = await kubeletHistogram(mirror)
    t.same(h.pull, { count: 2, sum: r3(3.2 + 0.85) }, 'pull: the two kubelets that time it apart from the queue')
    t.same(h.including_waiting, { count: 3, sum: r3(4.1 + 62.5 + 0.85) }, 'including_waiting: those and the older kubelet\'s one figure')
    t.match(h.text, /^stevedore_kubelet_pull_duration_seconds_bucket\{(?=[^}]*le="5")(?=[^}]*phase="pull")[^}]*\} 2$/m, 'both pulls under 5 s')
    t.same(pullLines(mirror).map((l) => [l['image'], l['node']]), [['ghcr.io/shop/api:2', 'node-1'], ['ghcr.io/shop/api:2', 'node-2'], ['ghcr.io/shop/db:16', 'node-3']], 'each logged with its node (source.host, else reportingInstance)')
  })

  await t.test('a repeated event (a higher count) counts again; a change with the same count does not', async (t) => {
    const e = api.requests().length
    const same = kubeletEvent('api-0.a', { pod: 'api-0', node: 'node-1', message: pulled('ghcr.io/shop/api:2', '3.2s', '4.1s') })
    api.modify({ ...same, metadata: { ...same.metadata, annotations: { touched: 'yes' } } })
    api.modify(kubeletEvent('api-0.a', { pod: 'api-0', node: 'node-1', count: 2, message: pulled('ghcr.io/shop/api:2', '1.5s', '6s') }))
    await waitCounts(mirror, 3, 4)
    const h = await kubeletHistogram(mirror)
    t.same(h.pull, { count: 3, sum: r3(3.2 + 0.85 + 1.5) }, 'the repeat observed once, with its own figures')
    t.same(h.including_waiting.sum, r3(4.1 + 62.5 + 0.85 + 6))
    t.notOk(api.requests().slice(e).some((r) => r.path === '/api/v1/events' && !r.watch), 'seen on the watch, no relist')
  })

  await t.test('after a dropped watch and a 410 Gone relist, nothing is counted twice; what happened in the gap is', async (t) => {
    const before = api.requests().length
    api.dropWatches()
    api.add(kubeletEvent('gap-0.a', { pod: 'gap-0', node: 'node-1', message: pulled('ghcr.io/shop/gap:1', '2s', '2s') }))
    api.compact()
    await waitCounts(mirror, 4, 5)
    const since = api.requests().slice(before).filter((r) => r.path === '/api/v1/events')
    t.ok(since.some((r) => r.watch && r.gone !== undefined), 'the events watch was answered 410 Gone')
    t.ok(since.some((r) => !r.watch), 'and the events were listed again')
    await api.waitForWatches(7)
    api.add(kubeletEvent('gap-1.a', { pod: 'gap-1', node: 'node-1', message: pulled('ghcr.io/shop/gap:1', '1s', '1s') }))
    await waitCounts(mirror, 5, 6)
    t.same(pullLines(mirror).map((l) => l['image']).filter((i) => i === 'ghcr.io/shop/gap:1').length, 2, 'the gap\'s event once, the next one once')
    t.equal(pullLines(mirror).length, 6, 'one log line per pull counted (as including_waiting), none for what was listed again')
  })

  await t.test('a pull of a mirrored image joins that image\'s insights, beside the mirror\'s own figures', async (t) => {
    api.add(kubeletEvent('app-0.a', { pod: 'app-0', node: 'node-1', message: pulled('registry.test/shop/app:3', '2.5s', '3.5s') }))
    api.add(kubeletEvent('app-1.a', { pod: 'app-1', node: 'node-2', message: pulled('registry.test/shop/app:3', '1.5s', '1.5s') }))
    type Images = { images: Array<{ image: string; pulls: number; kubelet?: { pulls: number; pullSeconds: { p50?: number; max?: number }; includingWaitingSeconds: { max?: number } } }> }
    let app: Images['images'][number] | undefined
    await waitFor(async () => {
      const body = (await (await fetch(`${mirror.url}/api/v1/images`)).json()) as Images
      app = body.images.find((i) => i.image === 'registry.test/shop/app:3')
      return app?.kubelet?.pulls === 2
    }, 15_000, 'the kubelet figures in /api/v1/images')
    t.match(app, { pulls: 0, kubelet: { pulls: 2, pullSeconds: { p50: 1.5, max: 2.5 }, includingWaitingSeconds: { max: 3.5 } } }, 'the kubelets\' pull and including-waiting times, normalised to the mirror\'s name for the image')
    const body = (await (await fetch(`${mirror.url}/api/v1/images`)).json()) as Images
    t.notOk(body.images.some((i) => i.image.startsWith('ghcr.io')), 'an image of a registry the mirror does not serve is only in the metric')
  })

  await t.test('a restarted mirror counts none of the hour\'s events it lists again, and the next pull', async (t) => {
    await mirror.stop()
    // Pulled while the mirror was down: before the new process started, so not counted (the trade for never counting twice).
    api.add(kubeletEvent('down-0.a', { pod: 'down-0', node: 'node-1', message: pulled('ghcr.io/shop/down:1', '1s', '1s') }))
    await new Promise((resolve) => setTimeout(resolve, 1100))
    const before = api.requests().length
    await mirror.start()
    await waitFor(async () => api.requests().slice(before).some((r) => r.path === '/api/v1/events' && r.watch), 15_000, 'the events watch after the restart')
    api.add(kubeletEvent('up-0.a', { pod: 'up-0', node: 'node-1', message: pulled('ghcr.io/shop/up:1', '250ms', '300ms') }))
    await waitCounts(mirror, 1, 1)
    const h = await kubeletHistogram(mirror)
    t.same([h.pull, h.including_waiting], [{ count: 1, sum: 0.25 }, { count: 1, sum: 0.3 }], 'only the pull after the restart')
  })
})
