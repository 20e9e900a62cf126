// The pre-warmer: list+watch of the workloads and Nodes of the whole cluster,
// and a prefetch job for every image reference a change brings, as soon as
// the change is seen (before the ReplicaSet and its pods exist). Beside it,
// the kubelets' Pulled events, for their own pull times.
import { AppsV1Api, BatchV1Api, CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node'
import { ConfigError } from '../config/errors.js'
import type { BackoffOptions } from './backoff.js'
import { kubeletEventsSink, pulledEventsResource } from './events.js'
import { Nodes, nodesSink } from './nodes.js'
import { Prewarms } from './prewarms.js'
import { WorkloadTracker } from './tracker.js'
import type { PrewarmDeps, Prewarmer } from './types.js'
import { runWatchLoop, type ListPage, type ResourceSink, type WatchedResource } from './watch.js'
import type { WorkloadKind } from './workloads.js'

export interface PrewarmOptions {
  /** Reconnect delays (tests); default WATCH_BACKOFF. */
  readonly backoff?: BackoffOptions
  /** List page size; default 500. */
  readonly pageSize?: number
}

/** A running pre-warmer, with what tests look into. */
export interface RunningPrewarmer extends Prewarmer {
  /** Resolves when the prefetch jobs submitted so far have ended. */
  idle(): Promise<void>
  readonly tracker: WorkloadTracker
  readonly nodes: Nodes
}

interface Page {
  readonly items: readonly unknown[]
  readonly metadata?: { readonly resourceVersion?: string | undefined; readonly _continue?: string | undefined } | undefined
}

const pageOf = (list: Page): ListPage => ({ items: list.items, resourceVersion: list.metadata?.resourceVersion, continue: list.metadata?._continue })

/**
 * Starts watching in the background and returns at once; failures to reach
 * the API are logged and retried, never thrown. Throws a ConfigError only for
 * credentials that cannot be loaded at all.
 */
export function startPrewarm(deps: PrewarmDeps, options: PrewarmOptions = {}): RunningPrewarmer {
  const { config, log } = deps
  const startedAt = new Date()
  const kc = loadCredentials(config.kubeconfig)
  const apps = kc.makeApiClient(AppsV1Api)
  const batch = kc.makeApiClient(BatchV1Api)
  const core = kc.makeApiClient(CoreV1Api)
  const nodes = new Nodes()
  const prewarms = new Prewarms({ ...deps, platforms: () => nodes.platforms() })
  let nodesSynced = false
  let firstSyncDone = false
  const afterSync = (): void => {
    if (firstSyncDone || !nodesSynced || !tracker.synced) return
    firstSyncDone = true
    const images = tracker.images()
    log.info({ workloads: tracker.size, images: images.length, nodes: nodes.size, platforms: nodes.platforms(), existing: config.existing }, 'pre-warm: first sync of the cluster done')
    if (config.existing) prewarms.existing(images)
  }
  const tracker = new WorkloadTracker({
    namespaces: config.namespaces,
    excludeNamespaces: config.excludeNamespaces,
    onNewImages: (workload, images, seenAt) => prewarms.changed(workload, images, seenAt),
    onSynced: afterSync,
  })

  const workloads: Array<{ kind: WorkloadKind; resource: WatchedResource }> = [
    { kind: 'Deployment', resource: { name: 'deployments', path: '/apis/apps/v1/deployments', list: async (limit, c) => pageOf(await apps.listDeploymentForAllNamespaces({ limit, _continue: c })) } },
    { kind: 'StatefulSet', resource: { name: 'statefulsets', path: '/apis/apps/v1/statefulsets', list: async (limit, c) => pageOf(await apps.listStatefulSetForAllNamespaces({ limit, _continue: c })) } },
    { kind: 'DaemonSet', resource: { name: 'daemonsets', path: '/apis/apps/v1/daemonsets', list: async (limit, c) => pageOf(await apps.listDaemonSetForAllNamespaces({ limit, _continue: c })) } },
    { kind: 'Job', resource: { name: 'jobs', path: '/apis/batch/v1/jobs', list: async (limit, c) => pageOf(await batch.listJobForAllNamespaces({ limit, _continue: c })) } },
    { kind: 'CronJob', resource: { name: 'cronjobs', path: '/apis/batch/v1/cronjobs', list: async (limit, c) => pageOf(await batch.listCronJobForAllNamespaces({ limit, _continue: c })) } },
  ]
  const watched: Array<{ resource: WatchedResource; sink: ResourceSink }> = [
    ...workloads.map(({ kind, resource }) => ({ resource, sink: tracker.sink(kind) })),
    {
      resource: { name: 'nodes', path: '/api/v1/nodes', list: async (limit, c) => pageOf(await core.listNode({ limit, _continue: c })) },
      sink: nodesSink(nodes, () => {
        nodesSynced = true
        afterSync()
      }),
    },
    {
      resource: pulledEventsResource(async (query) => pageOf(await core.listEventForAllNamespaces(query))),
      sink: kubeletEventsSink({ metrics: deps.metrics, log, onKubeletPull: deps.onKubeletPull, startedAt }),
    },
  ]

  const abort = new AbortController()
  const watcher = new Watch(kc)
  // Cluster-wide paths, filtered here by namespace: one watch per kind whatever
  // the namespaces, and a ClusterRole (not a Role per namespace) suffices.
  const loops = watched.map(({ resource, sink }) => runWatchLoop({
    resource, sink, watcher, log, signal: abort.signal,
    ...(options.backoff !== undefined ? { backoff: options.backoff } : {}),
    ...(options.pageSize !== undefined ? { pageSize: options.pageSize } : {}),
  }))
  log.info({ server: kc.getCurrentCluster()?.server, credentials: config.kubeconfig !== undefined ? 'kubeconfig' : 'in-cluster', namespaces: config.namespaces ?? 'all', excludeNamespaces: config.excludeNamespaces ?? [] }, 'pre-warm: watching the Kubernetes API')

  let stopped: Promise<void> | undefined
  return {
    prepullImages: () => tracker.prepullImages(),
    nodeOf: (address) => nodes.nodeOf(address),
    idle: () => prewarms.idle(),
    tracker,
    nodes,
    stop: () => {
      stopped ??= (async () => {
        prewarms.stop()
        abort.abort()
        await Promise.all(loops)
      })()
      return stopped
    },
  }
}

/**
 * A kubeconfig file when one is configured; else the pod's own service
 * account (the client's loadFromCluster: KUBERNETES_SERVICE_HOST/PORT, the
 * mounted token, re-read as it rotates, and CA). The in-cluster path is not
 * exercised by this repository's tests: no cluster runs here.
 */
function loadCredentials(kubeconfig: string | undefined): KubeConfig {
  const kc = new KubeConfig()
  if (kubeconfig !== undefined) {
    try {
      kc.loadFromFile(kubeconfig)
    } catch (err) {
      throw new ConfigError('prewarm.kubernetes.kubeconfig', `cannot load ${kubeconfig}: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (kc.getCurrentCluster() === null) throw new ConfigError('prewarm.kubernetes.kubeconfig', `${kubeconfig} names no current cluster`)
    return kc
  }
  if (process.env['KUBERNETES_SERVICE_HOST'] === undefined || process.env['KUBERNETES_SERVICE_HOST'] === '') {
    throw new ConfigError('prewarm.kubernetes.kubeconfig', 'not set, and not running in a cluster (KUBERNETES_SERVICE_HOST is unset): name a kubeconfig file')
  }
  kc.loadFromCluster()
  return kc
}
