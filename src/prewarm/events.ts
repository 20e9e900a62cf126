// The kubelets' own pull times, from core/v1 Events with reason Pulled: into
// stevedore_kubelet_pull_duration_seconds and, through onKubeletPull, the
// image's insights. Nothing of an event is kept but its uid and count.
//
// Each pull once. Events stay listed for their TTL (an hour by default), so a
// restart or a relist after 410 Gone lists again pulls already counted, and a
// pull repeated with the same message bumps the event's count instead of
// making a new event. So: an event is read only when its (uid, count) is new
// here (the highest count seen per uid, for the last 10,000 uids), and an
// event found by a list (not the watch) only when it was last seen no earlier
// than the second this process started watching: what happened before
// (counted by the previous process, or not at all) is not counted again.
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { parsePulledMessage } from '../insights/kubelet-message.js'
import type { KubeletPull } from '../insights/types.js'
import type { Metrics } from '../observability/metrics.js'
import type { ListPage, ResourceSink, WatchedResource } from './watch.js'
import { field } from './workloads.js'

/** The field selector of the list and the watch: the API server filters, so other events never cross the wire. */
const PULLED_SELECTOR = 'reason=Pulled'

export interface KubeletEventsOptions {
  readonly metrics: Metrics
  readonly log: Logger
  readonly onKubeletPull?: ((pull: KubeletPull) => void) | undefined
  /** When watching began: events a list finds last seen before (to the second) are not counted. */
  readonly startedAt: Date
  /** uids remembered; default 10,000. */
  readonly capacity?: number
}

/** What is read of a Pulled event. */
export interface PulledEvent {
  /** metadata.uid (namespace/name when it has none). */
  readonly key: string
  /** How many times the kubelet reported it: count, else series.count, else 1. */
  readonly count: number
  /** When it was last seen: the latest of series.lastObservedTime, lastTimestamp, eventTime, firstTimestamp. */
  readonly at: Date | undefined
  /** source.host, else reportingInstance. */
  readonly node: string | undefined
  readonly message: string
}

// List items come from the client's model classes (times as Date), watch events as raw JSON (times as strings).
const timeOf = (v: unknown): number | undefined => {
  const ms = v instanceof Date ? v.getTime() : typeof v === 'string' && v !== '' ? Date.parse(v) : NaN
  return Number.isFinite(ms) ? ms : undefined
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined)

export function pulledEvent(obj: unknown): PulledEvent | undefined {
  if (field(obj, 'reason') !== 'Pulled') return undefined
  const message = text(field(obj, 'message'))
  const meta = field(obj, 'metadata')
  const uid = text(field(meta, 'uid'))
  const name = text(field(meta, 'name'))
  if (message === undefined || (uid === undefined && name === undefined)) return undefined
  const series = field(obj, 'series')
  const counts = [field(obj, 'count'), field(series, 'count')].filter((c): c is number => typeof c === 'number' && Number.isInteger(c) && c >= 1)
  const times = [field(series, 'lastObservedTime'), field(obj, 'lastTimestamp'), field(obj, 'eventTime'), field(obj, 'firstTimestamp')]
    .map(timeOf).filter((t): t is number => t !== undefined)
  return {
    key: uid ?? `${text(field(meta, 'namespace')) ?? ''}/${name ?? ''}`,
    count: counts[0] ?? 1,
    at: times.length > 0 ? new Date(Math.max(...times)) : undefined,
    node: text(field(field(obj, 'source'), 'host')) ?? text(field(obj, 'reportingInstance')),
    message,
  }
}

/** The query of one page of the list (the client's listEventForAllNamespaces takes it as is). */
export interface EventsListQuery {
  readonly fieldSelector: string
  readonly limit: number
  readonly _continue: string | undefined
}

/** The cluster's Pulled events, for runWatchLoop: the list and the watch with the same field selector. */
export function pulledEventsResource(list: (query: EventsListQuery) => Promise<ListPage>): WatchedResource {
  return {
    name: 'events',
    path: '/api/v1/events',
    query: { fieldSelector: PULLED_SELECTOR },
    list: (limit, continueToken) => list({ fieldSelector: PULLED_SELECTOR, limit, _continue: continueToken }),
  }
}

/** Where the Pulled events' list and watch deliver. */
export function kubeletEventsSink(options: KubeletEventsOptions): ResourceSink {
  const { metrics, log, onKubeletPull } = options
  const seen = new LRUCache<string, number>({ max: options.capacity ?? 10_000 })
  // lastTimestamp has whole seconds: an event of the very second watching began counts.
  const since = Math.floor(options.startedAt.getTime() / 1000) * 1000

  const consider = (obj: unknown, listed: boolean): void => {
    const e = pulledEvent(obj)
    if (e === undefined) return
    // Parsed first: "already present" events (one per container start) must not take the places of real pulls.
    const pull = parsePulledMessage(e.message)
    if (pull === undefined) {
      log.debug({ event: e.key, node: e.node, message: e.message }, 'kubelet events: a Pulled event without pull times; ignored')
      return
    }
    const last = seen.get(e.key)
    if (last !== undefined && e.count <= last) return
    seen.set(e.key, e.count)
    if (listed && (e.at === undefined || e.at.getTime() < since)) return
    if (pull.pullSeconds !== undefined) metrics.kubeletPullDuration.observe({ phase: 'pull' }, pull.pullSeconds)
    metrics.kubeletPullDuration.observe({ phase: 'including_waiting' }, pull.includingWaitingSeconds)
    log.debug({ image: pull.image, node: e.node, pullSeconds: pull.pullSeconds, includingWaitingSeconds: pull.includingWaitingSeconds, count: e.count }, 'kubelet events: a pull')
    // A kubelet before 1.26 gives one figure that includes the queueing: not a pull time, so not an insight.
    if (pull.pullSeconds === undefined || onKubeletPull === undefined) return
    try {
      onKubeletPull({
        image: pull.image,
        ...(e.node !== undefined ? { node: e.node } : {}),
        pullSeconds: pull.pullSeconds,
        includingWaitingSeconds: pull.includingWaitingSeconds,
        at: e.at ?? new Date(),
      })
    } catch (err) {
      log.error({ err, image: pull.image }, 'kubelet events: could not record a pull')
    }
  }

  return {
    listStarted: () => undefined,
    listed: (obj) => consider(obj, true),
    listDone: () => undefined,
    event: (type, obj) => {
      // An event's DELETED is its TTL running out: nothing was pulled.
      if (type !== 'DELETED') consider(obj, false)
    },
  }
}
