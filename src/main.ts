import type { AddressInfo } from 'node:net'
import { Agent, request } from 'undici'
import { loadConfig, type LoadOptions } from './config/load.js'
import { buildApp } from './app.js'
import { createMirror, initStore } from './mirror.js'
import { createLogger } from './observability/logger.js'

/**
 * `stevedore serve`: the only place with process side effects. Resolves with
 * the exit code once the server has shut down after SIGTERM or SIGINT.
 */
export async function serve(options: LoadOptions): Promise<number> {
  const config = loadConfig(options)
  const log = createLogger(config.logLevel)
  const mirror = await createMirror(config, log)
  await initStore(mirror)
  const app = buildApp(mirror)
  await app.listen({ host: config.listen.host, port: config.listen.port })
  void warmUp(app.server.address())
  log.info({
    listen: `${config.listen.host}:${config.listen.port}`,
    storage: mirror.store.kind,
    upstreams: [...config.upstreams.values()].map((u) => ({ name: u.name, url: u.url.origin, auth: u.username !== undefined ? 'credentials' : 'anonymous' })),
    defaultUpstream: config.defaultUpstream,
  }, 'stevedore listening')

  return new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return
      stopping = true
      log.info({ signal, fills: mirror.blobs.inflight.size }, 'shutting down: finishing running transfers')
      // Keep-alive sockets whose last response finished after close() began would hold the server open.
      const sweeper = setInterval(() => app.server.closeIdleConnections(), 200)
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<void>((done) => {
        timer = setTimeout(() => {
          log.warn({ timeoutMs: config.timeouts.shutdownMs, fills: mirror.blobs.inflight.size }, 'shutdown timed out: closing remaining connections')
          app.server.closeAllConnections()
          done()
        }, config.timeouts.shutdownMs)
      })
      // close() stops accepting at once and resolves when running requests are done;
      // fills nobody reads any more are finished too, so their blobs are not lost.
      Promise.race([Promise.all([app.close(), mirror.blobs.drain(), Promise.all([...mirror.transfers])]), deadline])
        .then(() => mirror.close())
        .catch((err: unknown) => log.error({ err }, 'error during shutdown'))
        .finally(() => {
          clearTimeout(timer)
          clearInterval(sweeper)
          log.info('stopped')
          resolve(0)
        })
    }
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
}

/**
 * undici compiles its HTTP parser on its first connection (about 25 ms
 * measured here): one request to our own /healthz pays that at start-up,
 * not the first pull after a restart. Best effort; loopback only.
 */
async function warmUp(address: AddressInfo | string | null): Promise<void> {
  if (address === null || typeof address === 'string') return
  const host = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '[::1]' : address.family === 'IPv6' ? `[${address.address}]` : address.address
  const agent = new Agent({ connect: { timeout: 1000 }, headersTimeout: 1000, bodyTimeout: 1000 })
  try {
    const res = await request(`http://${host}:${address.port}/healthz`, { dispatcher: agent, headers: { 'user-agent': 'stevedore-warm-up' } })
    await res.body.dump()
  } catch {
    // Nothing depends on it.
  } finally {
    await agent.close().catch(() => undefined)
  }
}
