import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import type { ClusterConfig } from '../config/cluster.js'
import type { Mirror } from '../mirror.js'
import type { Metrics } from '../observability/metrics.js'
import { PeerFillRouter } from './forward.js'
import { Membership } from './membership.js'
import { PEER_PATH_PREFIX } from './paths.js'
import { PeerClient } from './peer-client.js'
import { registerPeerRoutes } from './routes.js'

export interface ClusterDeps {
  readonly log: Logger
  readonly metrics: Metrics
  /** Whether each replica keeps what it serves (its own disk) or the owner alone writes (a shared bucket). */
  readonly keep: boolean
  /** The upstream read timeout: an owner answers once the upstream has, so a peer waits as long for its headers. */
  readonly readTimeoutMs: number
}

export interface Cluster {
  /** Gives the mirror's fills their owners. */
  readonly router: PeerFillRouter
  /** The internal endpoint, for buildApp. */
  internal(mirror: Mirror): { readonly prefix: string; readonly register: (app: FastifyInstance) => void }
  /** Starts discovery and health checks (once listening: peers probe us too). */
  start(): void
  stop(): Promise<void>
}

/** The replicas sharing one cache, wired from `cluster:`. */
export function createCluster(config: ClusterConfig, deps: ClusterDeps): Cluster {
  const { log, metrics } = deps
  const peers = new PeerClient({
    connectTimeoutMs: config.connectTimeoutMs,
    readTimeoutMs: deps.readTimeoutMs,
    secret: config.secret,
    ...(config.tls !== undefined ? { tls: config.tls } : {}),
  })
  const membership = new Membership({
    self: config.self,
    ...(config.peers !== undefined ? { peers: config.peers } : {}),
    ...(config.discovery !== undefined ? { discovery: config.discovery } : {}),
    probe: (origin, signal) => peers.probe(origin, signal),
    healthIntervalMs: config.healthIntervalMs,
    discoveryIntervalMs: config.discoveryIntervalMs,
    probeTimeoutMs: Math.max(config.connectTimeoutMs, Math.min(config.healthIntervalMs, 5000)),
    log,
    onChange: (live) => {
      metrics.clusterMembers.set({ state: 'live' }, live.length)
      metrics.clusterMembers.set({ state: 'known' }, membership.known().length + 1)
    },
  })
  metrics.clusterMembers.set({ state: 'live' }, 1)
  metrics.clusterMembers.set({ state: 'known' }, 1)
  const router = new PeerFillRouter({
    self: config.self,
    members: membership,
    peers,
    keep: deps.keep,
    log,
    events: {
      onForwarded: () => metrics.clusterForwards.inc({ outcome: 'forwarded' }),
      onFallback: (_owner, reason) => metrics.clusterForwards.inc({ outcome: reason }),
      onPeerBytes: (bytes) => metrics.clusterPeerBytes.inc(bytes),
    },
  })
  return {
    router,
    internal: (mirror) => ({
      prefix: PEER_PATH_PREFIX,
      register: (app) => registerPeerRoutes(app, mirror, config.secret, {
        onRefused: () => metrics.clusterPeerRequests.inc({ result: 'refused' }),
        onServed: (cache) => metrics.clusterPeerRequests.inc({ result: cache }),
      }),
    }),
    start: () => membership.start(),
    async stop() {
      await membership.stop()
      await peers.close()
    },
  }
}
