// How the mirror talks to upstreams: redirects to object storage (with the
// Authorization header dropped across hosts), HTTP(S)_PROXY, TLS with a
// private CA or without verification.
import { createHash } from 'node:crypto'
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { startMirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { mirrorConfig, startStack } from '../harness/stack.js'
import { freePort, requireTools, tempDir } from '../harness/tools.js'

async function listen(t: Test, handler: Parameters<typeof createServer>[1], onServer?: (server: Server) => void): Promise<{ url: string; host: string }> {
  const server: Server = createServer(handler)
  onServer?.(server)
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` }
}

// Fakes: a registry that answers blob GETs with a 307 to "object storage" on
// another host, as registry.k8s.io and GCR do; no local registry redirects.
t.test('fake registry redirecting blobs to fake object storage: followed, Authorization dropped across hosts', async (t) => {
  const blob = Buffer.from('layer bytes served by object storage')
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  const storageSaw: IncomingHttpHeaders[] = []
  const registrySaw: IncomingHttpHeaders[] = []
  const storage = await listen(t, (req, res) => {
    storageSaw.push(req.headers)
    res.writeHead(200, { 'content-length': String(blob.length) }).end(blob)
  })
  const registry = await listen(t, (req, res) => {
    registrySaw.push(req.headers)
    if (req.headers.authorization !== `Basic ${Buffer.from('robot:pw').toString('base64')}`) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"', 'content-type': 'application/json' }).end('{}')
      return
    }
    res.writeHead(307, { location: `${storage.url}/bucket/blob?X-Amz-Signature=abc` }).end()
  })
  const cacheRoot = join(await tempDir(t, 'stevedore-redirect'), 'cache')
  const mirror = await startMirror(t, {
    config: { storage: { filesystem: { root: cacheRoot } }, upstreams: { [registry.host]: { url: registry.url, username: 'robot', password: 'pw' } }, defaultUpstream: registry.host },
  })
  const a = await fetchAll(`${mirror.url}/v2/x/blobs/${digest}`)
  t.equal(a.status, 200)
  t.ok(a.body.equals(blob), 'the redirected bytes, verified')
  t.ok(registrySaw.some((h) => h.authorization?.startsWith('Basic ')), 'the registry got the credentials')
  t.ok(storageSaw.length > 0, 'the redirect was followed')
  t.ok(storageSaw.every((h) => h.authorization === undefined), 'object storage never saw Authorization')
})

// A forward proxy of the test's own: counts what goes through it.
t.test('HTTP_PROXY is honoured for upstream traffic, and NO_PROXY bypasses it', { timeout: 60_000 }, async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t)
  let proxied = 0
  const proxy = await listen(t, (req, res) => {
    proxied++
    const target = new URL(req.url ?? '/')
    const up = httpRequest({ host: target.hostname, port: target.port, path: `${target.pathname}${target.search}`, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers)
      ur.pipe(res)
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  }, (server) => {
    // undici tunnels through proxies with CONNECT, as for HTTPS targets.
    server.on('connect', (req, client: Socket, head: Buffer) => {
      proxied++
      const [host, port] = (req.url ?? '').split(':')
      const upstream = connect(Number(port), host ?? '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
        upstream.write(head)
        upstream.pipe(client)
        client.pipe(upstream)
      })
      upstream.on('error', () => client.destroy())
      client.on('error', () => upstream.destroy())
    })
  })
  const dir = await tempDir(t, 'stevedore-proxy')
  const via = await startMirror(t, { config: mirrorConfig(s.registry, join(dir, 'a')), env: { HTTP_PROXY: proxy.url, http_proxy: proxy.url, NO_PROXY: '', no_proxy: '' } })
  const r = await fetchAll(`${via.url}/v2/${s.repo}/manifests/oci`)
  t.equal(r.status, 200)
  t.ok(proxied > 0, `upstream requests went through the proxy (${proxied})`)
  const before = proxied
  const bypass = await startMirror(t, { config: mirrorConfig(s.registry, join(dir, 'b')), env: { HTTP_PROXY: proxy.url, http_proxy: proxy.url, NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1' } })
  t.equal((await fetchAll(`${bypass.url}/v2/${s.repo}/manifests/docker`)).status, 200)
  t.equal(proxied, before, 'NO_PROXY sent it direct')
})

t.test('TLS upstream: a private CA via `ca`, or insecureSkipVerify; neither fails closed', async (t) => {
  if (!requireTools(t, 'docker-registry', 'openssl')) return
  const dir = await tempDir(t, 'stevedore-tls')
  const registry = await startRegistry(t, { tls: true })
  const cacheRoot = (name: string): string => join(dir, name)
  const digestOf = async (url: string): Promise<number> => (await fetchAll(url)).status

  const strict = await startMirror(t, { config: mirrorConfig(registry, cacheRoot('strict')) })
  const refused = await fetchAll(`${strict.url}/v2/x/manifests/latest`)
  t.equal(refused.status, 503, 'an unknown CA is refused (the upstream is unusable, not trusted)')

  const withCa = await startMirror(t, { config: { ...mirrorConfig(registry, cacheRoot('ca')), upstreams: { [registry.host]: { url: registry.url, ca: registry.certPath } } } })
  t.equal(await digestOf(`${withCa.url}/v2/x/manifests/latest`), 404, 'with the CA the upstream answers (404: nothing pushed)')

  const skip = await startMirror(t, { config: { ...mirrorConfig(registry, cacheRoot('skip')), upstreams: { [registry.host]: { url: registry.url, insecureSkipVerify: true } } } })
  t.equal(await digestOf(`${skip.url}/v2/x/manifests/latest`), 404, 'insecureSkipVerify answers too')
  void fetchHashed
})
