import type { AddressInfo } from 'node:net'
import type { Server as TlsServer } from 'node:tls'
import type { FastifyInstance } from 'fastify'
import { Agent, request } from 'undici'
import { loadConfig, type LoadOptions } from './config/load.js'
import { buildApp } from './app.js'
import { BcryptWorker } from './auth/bcrypt.js'
import { ClientAuth } from './auth/client-auth.js'
import { readCertificates, reloadCertificates } from './tls/certificates.js'
import { createMirror, initStore, type Mirror } from './mirror.js'
import { createLogger } from './observability/logger.js'
import { parseImageReference } from './oci/reference.js'
import { statusPage } from './insights/page/routes.js'
import { startInsights } from './insights/service.js'
import type { KubeletPull } from './insights/types.js'
import { prefetchRoutes } from './prefetch/routes.js'
import { createPrefetchJobs } from './prefetch/service.js'
import { submitPatiently } from './prefetch/submit-patiently.js'
import { prepullRoutes } from './prepull/routes.js'
import { startPrewarm } from './prewarm/start.js'
import { createCluster } from './cluster/service.js'
import { Metrics } from './observability/metrics.js'

/**
 * `stevedore serve`: the only place with process side effects. Resolves with
 * the exit code once the server has shut down after SIGTERM or SIGINT.
 */
export async function serve(options: LoadOptions): Promise<number> {
  const config = loadConfig(options)
  const log = createLogger(config.logLevel)
  // None is expected (every fault path handles its promises; tests check this line never appears).
  // Should one slip through, one bad request must not take down every node's pulls.
  process.on('unhandledRejection', (err: unknown) => log.error({ err }, 'unhandled rejection'))
  const bcrypt = new BcryptWorker()
  const auth = config.auth === undefined ? undefined : new ClientAuth({ htpasswd: config.auth.htpasswd, log, compare: (password, hash) => bcrypt.compare(password, hash) })
  await auth?.start()
  const tls = config.tls === undefined ? undefined : await readCertificates(config.tls)
  const metrics = new Metrics()
  const cluster = config.cluster === undefined ? undefined : createCluster(config.cluster, {
    log,
    metrics,
    // A shared bucket is written by each digest's owner alone; per-replica disks each keep what they served.
    keep: config.storage.backend.kind !== 's3',
    readTimeoutMs: config.timeouts.connectMs + config.timeouts.readMs,
  })
  const mirror = await createMirror(config, log, { metrics, ...(cluster !== undefined ? { router: cluster.router } : {}) })
  await initStore(mirror)
  const prefetch = createPrefetchJobs(mirror)
  // Would a pull of this image go through the mirror (its registry an upstream, its repository allowed)?
  const mirrors = (image: string): boolean => {
    const ref = parseImageReference(image)
    if (ref === undefined) return false
    try {
      mirror.router.route(ref.repository, ref.registry)
      return true
    } catch {
      return false
    }
  }
  // Pulls are mapped to Nodes once pre-warming (created below) knows them.
  let nodeOf: (address: string) => string | undefined = () => undefined
  const insights = config.insights.enabled ? startInsights(mirror, { nodeOf: (address) => nodeOf(address) }) : undefined
  const prewarmer = !config.prewarm.kubernetes.enabled ? undefined : startPrewarm({
    config: config.prewarm.kubernetes,
    // Before the store is reachable, or while every job slot is taken, it waits: a pre-warm has nobody to retry it.
    prefetch: (request) => submitPatiently(prefetch, request, () => mirror.storeReady),
    mirrors,
    maxImagesPerJob: config.prefetch.maxImagesPerJob,
    // The kubelets' own figures join the image's insights, beside the mirror's.
    ...(insights !== undefined ? { onKubeletPull: (pull: KubeletPull) => insights.insights.kubeletPulled(pull) } : {}),
    metrics: mirror.metrics,
    log,
  })
  if (prewarmer !== undefined) nodeOf = (address) => prewarmer.nodeOf(address)
  const api = [
    ...(insights?.routes ?? []),
    ...prefetchRoutes(prefetch, () => mirror.storeReady),
    // An annotation must not make every node pull from a registry the mirror does not serve.
    ...prepullRoutes(config.prepull.images, () => (prewarmer?.prepullImages() ?? []).filter(mirrors)),
  ]
  // The status page reads what the API serves: never more recent pulls than the ring keeps.
  const pages = insights === undefined ? undefined : statusPage(insights.insights, { recentPulls: Math.min(20, config.insights.recentPulls) })
  const app = buildApp(mirror, { ...(auth !== undefined ? { auth } : {}), ...(tls !== undefined ? { tls } : {}), api, ...(pages !== undefined ? { pages } : {}), ...(cluster !== undefined ? { internal: cluster.internal(mirror) } : {}) })
  const certificates = config.tls === undefined ? undefined : reloadCertificates(config.tls, (pair) => (app.server as unknown as TlsServer).setSecureContext(pair), log)
  await app.listen({ host: config.listen.host, port: config.listen.port })
  void warmUp(app.server.address(), tls !== undefined)
  cluster?.start()
  log.info({
    listen: `${tls !== undefined ? 'https' : 'http'}://${config.listen.host}:${config.listen.port}`,
    clientAuth: auth === undefined ? 'off' : `htpasswd (${auth.userCount} users)`,
    storage: mirror.store.kind,
    upstreams: [...config.upstreams.values()].map((u) => ({ name: u.name, url: u.url.origin, auth: u.username !== undefined ? 'credentials' : 'anonymous' })),
    defaultUpstream: config.defaultUpstream,
    ...(config.cluster !== undefined ? { cluster: { self: config.cluster.self, peers: config.cluster.peers ?? `dns:${config.cluster.discovery?.host ?? ''}:${config.cluster.discovery?.port ?? ''}` } } : {}),
  }, 'stevedore listening')

  return new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return
      stopping = true
      auth?.close()
      certificates?.close()
      prefetch.stop()
      void prewarmer?.stop()
      // Peers see this replica leave by its health checks failing once the listener closes.
      void shutDown(mirror, app, signal, async () => insights?.stop())
        .then(() => cluster?.stop())
        .then(() => bcrypt.close())
        .then(() => resolve(0))
    }
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
}

/**
 * Stops accepting, lets running transfers and fills finish, then writes
 * what must survive. `timeouts.shutdown` bounds all of it: past its cut-off,
 * fills are aborted and client and upstream sockets destroyed, with one log
 * line of what was cut. Never rejects.
 */
async function shutDown(mirror: Mirror, app: FastifyInstance, signal: NodeJS.Signals, beforeClose: () => Promise<void>): Promise<void> {
  const { log, config } = mirror
  const total = config.timeouts.shutdownMs
  // The last part of the bound is kept for writing access times after a cut.
  const reserve = Math.min(1000, Math.floor(total / 5))
  log.info({ signal, fills: mirror.blobs.inflight, transfers: mirror.transfers.size }, 'shutting down: finishing running transfers')
  // Keep-alive sockets whose last response finished after close() began would hold the server open.
  const sweeper = setInterval(() => app.server.closeIdleConnections(), 200)
  const hardStop = sleep(total)
  try {
    // close() stops accepting at once and resolves when running requests are done;
    // fills nobody reads any more are finished too, so their blobs are not lost.
    const graceful = Promise.all([app.close(), mirror.blobs.drain(), Promise.all([...mirror.transfers])]).then(() => true)
    const finished = await Promise.race([graceful, sleep(total - reserve).then(() => false)])
    if (!finished) {
      const transfers = mirror.transfers.size
      const fills = mirror.blobs.abortAll('shutdown deadline')
      app.server.closeAllConnections()
      mirror.destroyUpstreams()
      log.warn({ timeoutMs: total, transfersCut: transfers, fillsCut: fills.length, digests: fills.slice(0, 10) }, 'shutdown deadline: cut the remaining transfers and fills')
    }
    // Transfers cut above record themselves on their sockets' close: let those run first, so the
    // insights history (saved beside the access times, not before them) has those pulls in it.
    await new Promise((resolve) => setImmediate(resolve))
    const history = beforeClose().catch((err: unknown) => log.error({ err }, 'insights: could not save the history'))
    await Promise.race([Promise.all([history, mirror.close()]), hardStop])
  } catch (err) {
    log.error({ err }, 'error during shutdown')
  } finally {
    clearInterval(sweeper)
    log.info('stopped')
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref())

/**
 * undici compiles its HTTP parser on its first connection (about 25 ms
 * measured here): one request to our own /healthz pays that at start-up,
 * not the first pull after a restart. Best effort; loopback only.
 */
async function warmUp(address: AddressInfo | string | null, https: boolean): Promise<void> {
  if (address === null || typeof address === 'string') return
  const host = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '[::1]' : address.family === 'IPv6' ? `[${address.address}]` : address.address
  // Our own certificate need not name the loopback address: nothing is sent that needs protecting.
  const agent = new Agent({ connect: { timeout: 1000, rejectUnauthorized: false }, headersTimeout: 1000, bodyTimeout: 1000 })
  try {
    const res = await request(`${https ? 'https' : 'http'}://${host}:${address.port}/healthz`, { dispatcher: agent, headers: { 'user-agent': 'stevedore-warm-up' } })
    await res.body.dump()
  } catch {
    // Nothing depends on it.
  } finally {
    await agent.close().catch(() => undefined)
  }
}
