// A stand-in Kubernetes API server (no real one can run here): it speaks the
// list and watch wire protocol the official client uses, for the workload
// kinds, Nodes and Events, on 127.0.0.1 only.
//   list:  GET /apis/apps/v1/deployments?limit=N&continue=T → {kind: DeploymentList, metadata: {resourceVersion, continue?}, items}
//   watch: GET ...?watch=true&resourceVersion=N → chunked JSON lines {"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":{…}}
// Both honour `fieldSelector` (`a=b,c!=d`) on the fields the real API server
// selects on (metadata.name and metadata.namespace; for Events also reason,
// type, source, reportingComponent and involvedObject.*), and answer 400 for
// any other field, as it does.
// Every object it serves, and every list, validates against the Kubernetes
// schemas (kubernetes-models) first. Tests drive it: add/modify/remove
// objects (pushed to open watches), drop the open watches, answer the next
// watch 410 Gone, and read the request log.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import { DaemonSetList } from 'kubernetes-models/apps/v1/DaemonSetList'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { DeploymentList } from 'kubernetes-models/apps/v1/DeploymentList'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { StatefulSetList } from 'kubernetes-models/apps/v1/StatefulSetList'
import { CronJob } from 'kubernetes-models/batch/v1/CronJob'
import { CronJobList } from 'kubernetes-models/batch/v1/CronJobList'
import { Job } from 'kubernetes-models/batch/v1/Job'
import { JobList } from 'kubernetes-models/batch/v1/JobList'
import { Event as KubeEvent } from 'kubernetes-models/v1/Event'
import { EventList } from 'kubernetes-models/v1/EventList'
import { Node } from 'kubernetes-models/v1/Node'
import { NodeList } from 'kubernetes-models/v1/NodeList'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { EVENT_FIELDS, parseFieldSelector, type FieldReader, type FieldSelector } from './kube-fields.js'
import { tempDir, waitFor } from './tools.js'

export type StandInKind = 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'Job' | 'CronJob' | 'Node' | 'Event'

interface Resource {
  readonly path: string
  readonly apiVersion: string
  readonly validate: (obj: unknown) => void
  readonly validateList: (list: unknown) => void
  /** The fields a fieldSelector may name, beyond metadata.name and metadata.namespace. */
  readonly fields?: Readonly<Record<string, FieldReader>>
}

const check = (M: new (data: never) => { validate(): void }) => (obj: unknown): void => new M(obj as never).validate()

export const RESOURCES: Record<StandInKind, Resource> = {
  Deployment: { path: '/apis/apps/v1/deployments', apiVersion: 'apps/v1', validate: check(Deployment), validateList: check(DeploymentList) },
  StatefulSet: { path: '/apis/apps/v1/statefulsets', apiVersion: 'apps/v1', validate: check(StatefulSet), validateList: check(StatefulSetList) },
  DaemonSet: { path: '/apis/apps/v1/daemonsets', apiVersion: 'apps/v1', validate: check(DaemonSet), validateList: check(DaemonSetList) },
  Job: { path: '/apis/batch/v1/jobs', apiVersion: 'batch/v1', validate: check(Job), validateList: check(JobList) },
  CronJob: { path: '/apis/batch/v1/cronjobs', apiVersion: 'batch/v1', validate: check(CronJob), validateList: check(CronJobList) },
  Node: { path: '/api/v1/nodes', apiVersion: 'v1', validate: check(Node), validateList: check(NodeList) },
  Event: { path: '/api/v1/events', apiVersion: 'v1', validate: check(KubeEvent), validateList: check(EventList), fields: EVENT_FIELDS },
}

const KINDS = Object.keys(RESOURCES) as StandInKind[]

export interface KubeObject {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; annotations?: Record<string, string>; labels?: Record<string, string>; [k: string]: unknown }
  [k: string]: unknown
}

export interface KubeRequest {
  readonly method: string
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  readonly watch: boolean
  readonly authorization: string | undefined
  /** The status answered (a watch: when it began). */
  readonly status: number
  /** A watch answered 410 Gone: as the HTTP status, or as an ERROR event in a 200 stream. */
  readonly gone?: 'status' | 'event'
}

interface Change {
  readonly rv: number
  readonly kind: StandInKind
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'
  readonly object: KubeObject
  /** The object before a MODIFIED: a field-selected watch sees a change into or out of its selection as ADDED or DELETED. */
  readonly previous?: KubeObject
}

interface OpenWatch {
  readonly kind: StandInKind
  readonly res: ServerResponse
  readonly bookmarks: boolean
  readonly selector: FieldSelector
}

export interface KubeApiStandIn {
  readonly url: string
  /** A kubeconfig for the official client: this server over plain http (insecure-skip-tls-verify, which the client needs for http). */
  readonly kubeconfigPath: string
  /** Creates an object (ADDED to open watches); validates it first. Returns it as served. */
  add(obj: KubeObject): KubeObject
  /** Replaces an object (MODIFIED). */
  modify(obj: KubeObject): KubeObject
  /** Deletes an object (DELETED). */
  remove(kind: StandInKind, namespace: string | undefined, name: string): void
  /** Sends a BOOKMARK with the current resourceVersion to open watches that allow them. */
  bookmark(): void
  /** Ends every open watch (as a restarted API server or a broken connection would); returns how many. */
  dropWatches(): number
  /** The next watch (of any kind) is answered 410 Gone: as an HTTP status, or as an ERROR event in a 200 stream. */
  goneOnNextWatch(how: 'status' | 'event'): void
  /** Forgets the event history: a watch from an older resourceVersion gets 410 Gone (as `how`, default the HTTP status). */
  compact(how?: 'status' | 'event'): void
  requests(): KubeRequest[]
  /** Watches open now, of one kind or all. */
  openWatches(kind?: StandInKind): number
  waitForWatches(n: number, kind?: StandInKind, timeoutMs?: number): Promise<void>
  readonly resourceVersion: number
}

export async function startKubeApi(t: Test): Promise<KubeApiStandIn> {
  const objects = new Map<string, { kind: StandInKind; obj: KubeObject }>()
  let history: Change[] = []
  let compactedTo = 0
  let rv = 1
  let gone: 'status' | 'event' | undefined
  let compactedGoneAs: 'status' | 'event' = 'status'
  const watches = new Set<OpenWatch>()
  const log: KubeRequest[] = []
  const keyOf = (kind: StandInKind, namespace: string | undefined, name: string): string => `${kind}/${namespace ?? ''}/${name}`

  const send = (w: OpenWatch, type: string, object: unknown): void => {
    w.res.write(`${JSON.stringify({ type, object })}\n`)
  }
  /** The change as a watch with this selector sees it, if at all (as the API server's watch cache filters). */
  const seenBy = (w: Pick<OpenWatch, 'kind' | 'selector'>, e: Change): 'ADDED' | 'MODIFIED' | 'DELETED' | undefined => {
    if (w.kind !== e.kind) return undefined
    const now = w.selector.matches(e.object)
    if (e.type !== 'MODIFIED' || e.previous === undefined) return now ? e.type : undefined
    const before = w.selector.matches(e.previous)
    return now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined
  }
  const publish = (e: Change): void => {
    history.push(e)
    for (const w of watches) {
      const type = seenBy(w, e)
      if (type !== undefined) send(w, type, e.object)
    }
  }
  const store = (kind: StandInKind, obj: KubeObject, type: 'ADDED' | 'MODIFIED'): KubeObject => {
    const resource = RESOURCES[kind]
    if (obj.kind !== kind || obj.apiVersion !== resource.apiVersion) throw new Error(`stand-in: a ${kind} must be ${resource.apiVersion} ${kind}, not ${obj.apiVersion} ${obj.kind}`)
    const key = keyOf(kind, obj.metadata.namespace, obj.metadata.name)
    const existing = objects.get(key)
    if (type === 'ADDED' && existing !== undefined) throw new Error(`stand-in: ${key} exists`)
    if (type === 'MODIFIED' && existing === undefined) throw new Error(`stand-in: ${key} does not exist`)
    const served = structuredClone(obj)
    rv++
    served.metadata = {
      ...served.metadata,
      resourceVersion: String(rv),
      uid: existing?.obj.metadata.uid ?? `00000000-0000-4000-8000-${String(rv).padStart(12, '0')}`,
      creationTimestamp: (existing?.obj.metadata['creationTimestamp'] as string | undefined) ?? new Date().toISOString(),
    }
    resource.validate(served)
    objects.set(key, { kind, obj: served })
    publish({ rv, kind, type, object: served, ...(existing !== undefined ? { previous: existing.obj } : {}) })
    return served
  }

  const kindOf = (pathname: string): StandInKind | undefined => KINDS.find((k) => RESOURCES[k].path === pathname)

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://stand-in')
    const query = Object.fromEntries(url.searchParams)
    const watch = query['watch'] === 'true' || query['watch'] === '1'
    const kind = kindOf(url.pathname)
    const answer = (status: number, body: unknown): void => {
      log.push({ method: req.method ?? '', path: url.pathname, query, watch, authorization: req.headers.authorization, status, ...(status === 410 ? { gone: 'status' as const } : {}) })
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (req.method !== 'GET' || kind === undefined) {
      answer(404, status(404, 'NotFound', `the stand-in serves no ${req.method ?? ''} ${url.pathname}`))
      return
    }
    let selector: FieldSelector
    try {
      selector = parseFieldSelector(query['fieldSelector'], RESOURCES[kind].fields)
    } catch (err) {
      answer(400, status(400, 'BadRequest', (err as Error).message))
      return
    }
    if (!watch) {
      list(kind, selector, query, answer)
      return
    }
    const from = query['resourceVersion'] !== undefined && query['resourceVersion'] !== '' ? Number(query['resourceVersion']) : undefined
    const tooOld = from !== undefined && from !== 0 && from < compactedTo
    if (gone === 'status' || (tooOld && gone === undefined && compactedGoneAs === 'status')) {
      gone = undefined
      answer(410, status(410, 'Expired', `too old resource version: ${from ?? ''} (${compactedTo})`))
      return
    }
    const goneEvent = gone === 'event' || tooOld
    log.push({ method: 'GET', path: url.pathname, query, watch, authorization: req.headers.authorization, status: 200, ...(goneEvent ? { gone: 'event' as const } : {}) })
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
    res.flushHeaders()
    const w: OpenWatch = { kind, res, bookmarks: query['allowWatchBookmarks'] === 'true', selector }
    if (goneEvent) {
      gone = undefined
      send(w, 'ERROR', status(410, 'Expired', `too old resource version: ${from ?? ''} (${compactedTo})`))
      res.end()
      return
    }
    if (from === undefined || from === 0) {
      // No version: the current state as ADDED events, then changes (as the real server does).
      for (const o of objects.values()) if (o.kind === kind && selector.matches(o.obj)) send(w, 'ADDED', o.obj)
    } else {
      for (const e of history) {
        const type = e.rv > from ? seenBy(w, e) : undefined
        if (type !== undefined) send(w, type, e.object)
      }
    }
    watches.add(w)
    res.on('close', () => watches.delete(w))
  }

  const list = (kind: StandInKind, selector: FieldSelector, query: Record<string, string>, answer: (status: number, body: unknown) => void): void => {
    const resource = RESOURCES[kind]
    const all = [...objects.entries()].filter(([, o]) => o.kind === kind && selector.matches(o.obj)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    let start = 0
    let snapshot = rv
    if (query['continue'] !== undefined && query['continue'] !== '') {
      const token = JSON.parse(Buffer.from(query['continue'], 'base64url').toString('utf8')) as { rv: number; after: string }
      snapshot = token.rv
      start = all.findIndex(([k]) => k > token.after)
      if (start < 0) start = all.length
    }
    const limit = query['limit'] !== undefined ? Number(query['limit']) : Infinity
    const page = all.slice(start, start + limit)
    const last = page[page.length - 1]
    const more = start + page.length < all.length && last !== undefined
    const body = {
      kind: `${kind}List`,
      apiVersion: resource.apiVersion,
      metadata: { resourceVersion: String(snapshot), ...(more ? { continue: Buffer.from(JSON.stringify({ rv: snapshot, after: last[0] })).toString('base64url'), remainingItemCount: all.length - start - page.length } : {}) },
      items: page.map(([, o]) => o.obj),
    }
    resource.validateList(body)
    answer(200, body)
  }

  const server = createServer(handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const url = `http://127.0.0.1:${port}`
  const dir = await tempDir(t, 'stevedore-kube-api')
  const kubeconfigPath = join(dir, 'kubeconfig')
  await writeFile(kubeconfigPath, stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'stand-in', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'stand-in', user: { token: 'stand-in-token' } }],
    contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user: 'stand-in' } }],
    'current-context': 'stand-in',
  }))
  t.teardown(async () => {
    for (const w of watches) w.res.destroy()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  const api: KubeApiStandIn = {
    url,
    kubeconfigPath,
    add: (obj) => store(obj.kind as StandInKind, obj, 'ADDED'),
    modify: (obj) => store(obj.kind as StandInKind, obj, 'MODIFIED'),
    remove: (kind, namespace, name) => {
      const key = keyOf(kind, namespace, name)
      const existing = objects.get(key)
      if (existing === undefined) throw new Error(`stand-in: ${key} does not exist`)
      objects.delete(key)
      rv++
      publish({ rv, kind, type: 'DELETED', object: { ...existing.obj, metadata: { ...existing.obj.metadata, resourceVersion: String(rv) } } })
    },
    bookmark: () => {
      for (const w of watches) if (w.bookmarks) send(w, 'BOOKMARK', { kind: w.kind, apiVersion: RESOURCES[w.kind].apiVersion, metadata: { resourceVersion: String(rv) } })
    },
    dropWatches: () => {
      const n = watches.size
      for (const w of watches) w.res.destroy()
      watches.clear()
      return n
    },
    goneOnNextWatch: (how) => {
      gone = how
    },
    compact: (how = 'status') => {
      compactedGoneAs = how
      // Events up to now are forgotten: a watch from an older version cannot be served, one from now can.
      history = []
      compactedTo = rv
    },
    requests: () => log.slice(),
    openWatches: (kind) => [...watches].filter((w) => kind === undefined || w.kind === kind).length,
    waitForWatches: (n, kind, timeoutMs = 15_000) => waitFor(async () => api.openWatches(kind) >= n, timeoutMs, `${n} open watch(es)${kind !== undefined ? ` of ${kind}` : ''} on the stand-in API server`),
    get resourceVersion() {
      return rv
    },
  }
  return api
}

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }
}

// ------------------------------------------------------------ objects

export interface WorkloadOptions {
  images: string[]
  initImages?: string[]
  annotations?: Record<string, string>
}

/** A minimal valid workload of `kind` whose pod template names these images. */
export function workload(kind: Exclude<StandInKind, 'Node' | 'Event'>, namespace: string, name: string, opts: WorkloadOptions): KubeObject {
  const labels = { app: name }
  const pod = {
    ...(opts.initImages !== undefined ? { initContainers: opts.initImages.map((image, i) => ({ name: `init-${i}`, image })) } : {}),
    containers: opts.images.map((image, i) => ({ name: `c-${i}`, image })),
    ...(kind === 'Job' || kind === 'CronJob' ? { restartPolicy: 'Never' } : {}),
  }
  const template = { metadata: { labels }, spec: pod }
  const metadata = { name, namespace, ...(opts.annotations !== undefined ? { annotations: opts.annotations } : {}) }
  const apiVersion = RESOURCES[kind].apiVersion
  switch (kind) {
    case 'Deployment':
    case 'DaemonSet':
      return { apiVersion, kind, metadata, spec: { selector: { matchLabels: labels }, template } }
    case 'StatefulSet':
      return { apiVersion, kind, metadata, spec: { selector: { matchLabels: labels }, serviceName: name, template } }
    case 'Job':
      return { apiVersion, kind, metadata, spec: { template } }
    case 'CronJob':
      return { apiVersion, kind, metadata, spec: { schedule: '*/5 * * * *', jobTemplate: { spec: { template } } } }
  }
}

/** A Node as the kubelet reports it: `platform` is `os/arch`. */
export function node(name: string, platform: string, addresses: string[] = []): KubeObject {
  const [os, architecture] = platform.split('/') as [string, string]
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/os': os, 'kubernetes.io/arch': architecture } },
    spec: {},
    status: {
      addresses: [...addresses.map((address) => ({ type: 'InternalIP', address })), { type: 'Hostname', address: name }],
      nodeInfo: {
        architecture,
        operatingSystem: os,
        bootID: 'b', containerRuntimeVersion: 'containerd://2.0.0', kernelVersion: '6.1.0', kubeProxyVersion: 'v1.32.0', kubeletVersion: 'v1.32.0',
        machineID: 'm', osImage: 'Debian GNU/Linux 12', systemUUID: 's',
      },
    },
  }
}
