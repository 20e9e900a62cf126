// The Pulled events' sink (src/prewarm/events.ts) fed directly, as the watch
// loop feeds it: which events count, once, and what they count as. The
// objects are the stand-in's own Events (valid core/v1), as raw JSON (the
// watch) or with Date times (the client's list models).
import pino from 'pino'
import t from 'tap'
import type { KubeletPull } from '../../src/insights/types.js'
import { Metrics } from '../../src/observability/metrics.js'
import { kubeletEventsSink, pulledEvent } from '../../src/prewarm/events.js'
import { RESOURCES, type KubeObject } from '../harness/kube-api.js'
import { kubeletEvent } from '../harness/kube-events.js'

const START = new Date('2026-12-03T10:00:00.700Z')
const after = (s: number): Date => new Date(START.getTime() + s * 1000)

let uids = 0
/** An Event as the API server serves it: with a uid. */
function served(name: string, opts: Parameters<typeof kubeletEvent>[1], uid?: string): KubeObject {
  const e = kubeletEvent(name, opts)
  e.metadata.uid = uid ?? `uid-${++uids}`
  RESOURCES.Event.validate(e)
  return e
}
const pulled = (image: string, pull: string, waiting: string): string => `Successfully pulled image "${image}" in ${pull} (${waiting} including waiting). Image size: 1000 bytes.`

function setup(capacity?: number): { sink: ReturnType<typeof kubeletEventsSink>; pulls: KubeletPull[]; metrics: Metrics; lines: Array<Record<string, unknown>> } {
  const metrics = new Metrics()
  const pulls: KubeletPull[] = []
  const lines: Array<Record<string, unknown>> = []
  const log = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) })
  const sink = kubeletEventsSink({ metrics, log, onKubeletPull: (p) => pulls.push(p), startedAt: START, ...(capacity !== undefined ? { capacity } : {}) })
  return { sink, pulls, metrics, lines }
}

async function histogram(metrics: Metrics): Promise<Record<string, { count: number; sum: number }>> {
  const out: Record<string, { count: number; sum: number }> = {}
  for (const v of (await metrics.kubeletPullDuration.get()).values) {
    const phase = String(v.labels['phase'])
    out[phase] ??= { count: 0, sum: 0 }
    if (v.metricName?.endsWith('_count') === true) out[phase].count = v.value
    if (v.metricName?.endsWith('_sum') === true) out[phase].sum = Math.round(v.value * 1000) / 1000
  }
  return out
}

t.test('the first list counts only what was seen from the second watching began; the watch counts each new (uid, count) once', async (t) => {
  const { sink, pulls, metrics } = setup()
  const old = served('web-0.1', { message: pulled('nginx:1.27', '3s', '4s'), at: new Date(START.getTime() - 60_000) })
  const sameSecond = served('web-0.2', { message: pulled('nginx:1.27', '1s', '1s'), at: new Date('2026-12-03T10:00:00Z') })
  const present = served('web-0.3', { message: 'Container image "nginx:1.27" already present on machine', at: after(5) })
  const scheduled = served('web-0.4', { reason: 'Scheduled', message: pulled('x:1', '1s', '1s'), at: after(5) })
  sink.listStarted()
  for (const e of [old, sameSecond, present, scheduled]) sink.listed(e)
  sink.listDone()
  t.same(pulls.map((p) => p.pullSeconds), [1], 'only the event of the second watching began (lastTimestamp has whole seconds)')

  const fresh = served('api-0.1', { pod: 'api-0', node: 'node-2', message: pulled('ghcr.io/shop/api:2', '512ms', '2.5s'), at: after(10) })
  sink.event('ADDED', fresh)
  sink.event('MODIFIED', fresh)
  t.equal(pulls.length, 2, 'a new event counts; the same count again does not')
  t.same(pulls[1], { image: 'ghcr.io/shop/api:2', node: 'node-2', pullSeconds: 0.512, includingWaitingSeconds: 2.5, at: new Date('2026-12-03T10:00:10Z') })

  sink.event('MODIFIED', { ...fresh, count: 2, message: pulled('ghcr.io/shop/api:2', '1.5s', '1.5s'), lastTimestamp: '2026-12-03T10:00:20Z' })
  t.equal(pulls.length, 3, 'a repeat (a higher count) counts again, with the message it carries now')
  t.equal(pulls[2]?.pullSeconds, 1.5)
  sink.event('MODIFIED', { ...fresh, count: 1 })
  t.equal(pulls.length, 3, 'an older count (out of order) does not')
  sink.event('MODIFIED', { ...old, count: 2, lastTimestamp: after(30).toISOString() })
  t.equal(pulls.length, 4, 'an event from before the start repeated after it counts: that pull is new')
  sink.event('DELETED', { ...fresh, count: 9 })
  t.equal(pulls.length, 4, 'a DELETED (its TTL) is no pull')

  // A relist (after 410 Gone) finds everything again.
  sink.listStarted()
  for (const e of [old, sameSecond, present, scheduled, { ...fresh, count: 2 }]) sink.listed(e)
  sink.listDone()
  t.equal(pulls.length, 4, 'a relist counts nothing seen before')

  t.same(await histogram(metrics), { pull: { count: 4, sum: 6.012 }, including_waiting: { count: 4, sum: 9 } }, 'the histogram observed each phase of each')
})

t.test('what is read of an event: times as Date or text, series, node from source.host or reportingInstance', async (t) => {
  const raw = served('a.1', { message: 'm', node: 'node-7', at: after(3) }, 'u1')
  t.same(pulledEvent(raw), { key: 'u1', count: 1, at: new Date('2026-12-03T10:00:03Z'), node: 'node-7', message: 'm' })
  const model = { ...raw, lastTimestamp: new Date('2026-12-03T10:00:04Z'), firstTimestamp: new Date('2026-12-03T10:00:01Z') }
  t.same(pulledEvent(model)?.at, new Date('2026-12-03T10:00:04Z'), 'the client\'s models carry Dates: the latest time')
  const series = served('a.2', { message: 'm', node: 'node-8', series: true, count: 3, firstAt: after(1), at: after(6) }, 'u2')
  t.same(pulledEvent(series), { key: 'u2', count: 3, at: after(6), node: 'node-8', message: 'm' }, 'events.k8s.io style: series.count, series.lastObservedTime, reportingInstance')
  const noHost = { ...raw, source: { component: 'kubelet' } }
  t.equal(pulledEvent(noHost)?.node, 'node-7', 'no source.host: reportingInstance')
  t.equal(pulledEvent({ ...raw, reason: 'Pulling' }), undefined, 'another reason is not read')
  t.equal(pulledEvent({ ...raw, message: '' }), undefined)
  t.equal(pulledEvent({ ...raw, metadata: {} }), undefined, 'no uid, no name: nothing to know it by')
  t.equal(pulledEvent({ ...raw, metadata: { name: 'a.1', namespace: 'ns' } })?.key, 'ns/a.1')
  t.equal(pulledEvent(null), undefined)
})

t.test('a kubelet before 1.26: its one figure is pull plus waiting, observed as that; no insight', async (t) => {
  const { sink, pulls, metrics, lines } = setup()
  sink.event('ADDED', served('old.1', { message: 'Successfully pulled image "nginx" in 49.657983991s', at: after(1) }))
  sink.event('ADDED', served('older.1', { message: 'Successfully pulled image "nginx"', at: after(1) }))
  t.same(pulls, [], 'onKubeletPull not called: the pull time is not known')
  t.same(await histogram(metrics), { including_waiting: { count: 1, sum: 49.658 } }, 'including_waiting only')
  t.ok(lines.some((l) => l['msg'] === 'kubelet events: a Pulled event without pull times; ignored' && l['message'] === 'Successfully pulled image "nginx"'), 'the one without figures logged at debug')
})

t.test('bounded memory: past `capacity` uids the oldest are forgotten (a relist may then count one again)', async (t) => {
  const { sink, pulls } = setup(2)
  const events = [1, 2, 3].map((i) => served(`e.${i}`, { message: pulled(`a:${i}`, '1s', '1s'), at: after(i) }))
  for (const e of events) sink.event('ADDED', e)
  t.equal(pulls.length, 3)
  sink.listed(events[2])
  sink.listed(events[1])
  t.equal(pulls.length, 3, 'the last two are remembered')
  sink.listed(events[0])
  t.equal(pulls.length, 4, 'the first was forgotten')
})

t.test('onKubeletPull throwing is logged, and the next event still counts', async (t) => {
  const metrics = new Metrics()
  const lines: Array<Record<string, unknown>> = []
  let calls = 0
  const sink = kubeletEventsSink({
    metrics, startedAt: START,
    log: pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
    onKubeletPull: () => {
      calls++
      throw new Error('boom')
    },
  })
  t.doesNotThrow(() => sink.event('ADDED', served('x.1', { message: pulled('a:1', '1s', '1s'), at: after(1) })))
  t.doesNotThrow(() => sink.event('ADDED', served('x.2', { message: pulled('a:1', '1s', '1s'), at: after(1) })))
  t.equal(calls, 2)
  t.equal(lines.filter((l) => l['msg'] === 'kubelet events: could not record a pull' && l['level'] === 50).length, 2)
})
