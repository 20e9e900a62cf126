// PeerClient against real local servers on 127.0.0.1: signatures the other
// side can verify, no proxy ever, timeouts, the health probe, and TLS to a
// pod IP with a certificate for the Service name.
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createNetServer, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Test } from 'tap'
import t from 'tap'
import { EnvHttpProxyAgent, getGlobalDispatcher, request as undiciRequest, setGlobalDispatcher } from 'undici'
import { verifyPeerRequest, type PeerAuthResult } from '../../src/cluster/peer-auth.js'
import { isPeerUnreachable, PEER_HEALTH_PATH, PEER_PATH_PREFIX, PeerClient, type PeerClientOptions } from '../../src/cluster/peer-client.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'
import { freePort, tempDir } from '../harness/tools.js'

const secret = Buffer.from('0123456789abcdef0123456789abcdef')

interface Seen {
  readonly method: string
  readonly url: string
  readonly auth: PeerAuthResult
  readonly headers: IncomingMessage['headers']
  readonly servername: string | false | null | undefined
}

interface PeerServer {
  readonly origin: string
  readonly seen: Seen[]
  connections: number
}

/** A stand-in peer: verifies each request's signature as the peer endpoint will, then lets `answer` reply. */
async function startPeer(t: Test, answer: RequestListener, create: (l: RequestListener) => Server = createHttpServer, scheme = 'http'): Promise<PeerServer> {
  const peer: PeerServer = { origin: '', seen: [], connections: 0 }
  const server = create((req, res) => {
    peer.seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      auth: verifyPeerRequest(secret, req.method ?? '', req.url ?? '', req.headers),
      headers: req.headers,
      servername: (req.socket as TLSSocket).servername,
    })
    answer(req, res)
  })
  server.on(scheme === 'https' ? 'secureConnection' : 'connection', () => peer.connections++)
  const port = await freePort()
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return Object.assign(peer, { origin: `${scheme}://127.0.0.1:${port}` })
}

function client(t: Test, options: Partial<PeerClientOptions> = {}): PeerClient {
  const c = new PeerClient({ connectTimeoutMs: 2_000, readTimeoutMs: 5_000, secret, ...options })
  t.teardown(() => c.destroy())
  return c
}

const ok: RequestListener = (_req, res) => res.end('hello')
const never: RequestListener = () => undefined

t.test('requests are signed, and the signature verifies on the other side', async (t) => {
  const peer = await startPeer(t, ok)
  const c = client(t)
  const path = `${PEER_PATH_PREFIX}/blobs/sha256:abc?ns=docker.io&repository=library%2Falpine`
  const res = await c.request(peer.origin, 'GET', path, { headers: { 'x-request-id': 'r-1', 'x-stevedore-peer-signature': 'f'.repeat(64) } })
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'hello')
  // undici hands a connection back to its pool just after the body's end: a turn of the loop later.
  await new Promise((resolve) => setImmediate(resolve))
  const head = await c.request(peer.origin, 'HEAD', path)
  await head.body.dump()
  t.equal(head.statusCode, 200)
  t.same(peer.seen.map((s) => [s.method, s.url]), [['GET', path], ['HEAD', path]], 'the path and query as given')
  t.same(peer.seen.map((s) => s.auth), [{ ok: true }, { ok: true }], 'both verify with the shared secret')
  t.equal(peer.seen[0]?.headers['x-request-id'], 'r-1', "the caller's headers are sent")
  t.notOk(verifyPeerRequest(Buffer.from('not the secret, not the secret!'), 'GET', path, peer.seen[0]?.headers ?? {}).ok, 'another secret does not verify')
  t.equal(peer.connections, 1, 'one keep-alive connection for both')
})

t.test('HTTPS_PROXY and HTTP_PROXY never apply: the request goes direct', async (t) => {
  // FAKE proxy: it records who connects and what they ask, and refuses every tunnel
  // (a socket closed without an answer would have undici's pool reconnect without end).
  const proxy = { connections: 0, asked: [] as string[] }
  const proxyServer = createNetServer((socket: Socket) => {
    proxy.connections++
    socket.on('error', () => undefined)
    socket.once('data', (head: Buffer) => {
      proxy.asked.push(head.toString('latin1').split('\r\n')[0] ?? '')
      socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
  })
  const proxyPort = await freePort()
  proxyServer.listen(proxyPort, '127.0.0.1')
  await once(proxyServer, 'listening')
  t.teardown(() => new Promise<void>((resolve) => proxyServer.close(() => resolve())))

  const saved = Object.fromEntries(['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy', 'NO_PROXY', 'no_proxy'].map((k) => [k, process.env[k]]))
  const previous = getGlobalDispatcher()
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
    setGlobalDispatcher(previous)
  })
  const proxyUrl = `http://127.0.0.1:${proxyPort}`
  for (const k of ['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy']) process.env[k] = proxyUrl
  delete process.env['NO_PROXY']
  delete process.env['no_proxy']
  // Even a process whose global dispatcher honours the proxy variables (as the upstream clients do).
  setGlobalDispatcher(new EnvHttpProxyAgent())

  const peer = await startPeer(t, ok)
  const c = client(t)
  const res = await c.request(peer.origin, 'GET', `${PEER_PATH_PREFIX}/blobs/sha256:abc`)
  t.equal(await res.body.text(), 'hello')
  t.equal(peer.seen.length, 1, 'the peer was reached')
  t.equal(proxy.connections, 0, 'the proxy saw nothing')
  t.equal(await c.probe(peer.origin, AbortSignal.timeout(2_000)), true, 'nor does the probe go through it')
  t.equal(proxy.connections, 0)

  // The control: the same request through the global dispatcher reaches the proxy, so the fake would have seen a proxied client.
  await undiciRequest(`${peer.origin}/x`, { headersTimeout: 5_000 }).then((r) => r.body.dump(), () => undefined)
  t.ok(proxy.connections > 0, 'a proxy-honouring client is seen by the fake proxy')
  t.same(proxy.asked, [`CONNECT ${new URL(peer.origin).host} HTTP/1.1`], 'asking it for a tunnel to the peer')
  t.equal(peer.seen.length, 2, 'and did not reach the peer')
})

t.test('read timeout: a peer that never sends headers fails the request', async (t) => {
  const peer = await startPeer(t, never)
  const c = client(t, { readTimeoutMs: 200 })
  const err = await c.request(peer.origin, 'GET', `${PEER_PATH_PREFIX}/blobs/sha256:abc`).then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'UND_ERR_HEADERS_TIMEOUT' })
  t.equal(isPeerUnreachable(err), false, 'it was reached: slow, not unreachable')
})

t.test('connect timeout: a TLS peer that accepts TCP but never handshakes', async (t) => {
  const sockets = new Set<Socket>()
  const silent = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => undefined)
  })
  const port = await freePort()
  silent.listen(port, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => silent.close(() => resolve()))
  })
  // The read timeout is far longer: the failure must come from the connect deadline, which covers the handshake.
  const c = client(t, { connectTimeoutMs: 200, readTimeoutMs: 60_000 })
  const err = await c.request(`https://127.0.0.1:${port}`, 'GET', PEER_HEALTH_PATH).then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'UND_ERR_CONNECT_TIMEOUT' })
  t.equal(isPeerUnreachable(err), true)
  t.equal(sockets.size, 1, 'the TCP connection was made; the handshake is what timed out')
})

t.test('connection refused is unreachable', async (t) => {
  const port = await freePort()
  const c = client(t)
  const err = await c.request(`http://127.0.0.1:${port}`, 'GET', PEER_HEALTH_PATH).then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'ECONNREFUSED' })
  t.equal(isPeerUnreachable(err), true)
  t.equal(await c.probe(`http://127.0.0.1:${port}`, AbortSignal.timeout(2_000)), false, 'probe false when nothing listens')
  t.equal(isPeerUnreachable(new Error('plain')), false)
  t.equal(isPeerUnreachable(undefined), false)
})

t.test('probe: true on 200, false on 500 or past its signal; signed; body consumed', async (t) => {
  let status = 200
  const peer = await startPeer(t, (_req, res) => {
    res.statusCode = status
    res.end(status === 200 ? 'ok' : 'x'.repeat(10_000))
  })
  const c = client(t)
  const probe = async (): Promise<boolean> => {
    const healthy = await c.probe(peer.origin, AbortSignal.timeout(2_000))
    // undici hands a connection back to its pool just after the body's end: a turn of the loop later.
    await new Promise((resolve) => setImmediate(resolve))
    return healthy
  }
  t.equal(await probe(), true, '200')
  status = 500
  t.equal(await probe(), false, '500')
  t.equal(await probe(), false, '500 again')
  status = 200
  t.equal(await probe(), true, '200 again')
  t.same(peer.seen.map((s) => `${s.method} ${s.url}`), Array(4).fill(`GET ${PEER_HEALTH_PATH}`))
  t.ok(peer.seen.every((s) => s.auth.ok), 'every probe signed')
  t.equal(peer.connections, 1, 'bodies read to the end: one connection served every probe')

  const silent = await startPeer(t, never)
  const started = Date.now()
  t.equal(await c.probe(silent.origin, AbortSignal.timeout(200)), false, 'no answer before the signal aborts')
  t.ok(Date.now() - started < 5_000, 'it gave up at the signal, not at the read timeout')
})

t.test('TLS to a pod IP: the certificate is checked against serverName, signed by the given CA', async (t) => {
  const dir = await tempDir(t, 'stevedore-peer-tls')
  const ca = await makeCa(`${dir}/ca`, 'stevedore-peers')
  const cert = await makeServerCert(`${dir}/server`, ca, 'DNS:stevedore.stevedore.svc')
  const [caPem, certPem, keyPem] = await Promise.all([readFile(ca.certPath, 'utf8'), readFile(cert.certPath, 'utf8'), readFile(cert.keyPath, 'utf8')])
  const peer = await startPeer(t, ok, (l) => createHttpsServer({ cert: certPem, key: keyPem }, l), 'https')

  const good = client(t, { tls: { ca: caPem, serverName: 'stevedore.stevedore.svc' } })
  const res = await good.request(peer.origin, 'GET', `${PEER_PATH_PREFIX}/blobs/sha256:abc`)
  t.equal(await res.body.text(), 'hello', 'a certificate for the Service name is accepted on 127.0.0.1')
  t.equal(peer.seen[0]?.servername, 'stevedore.stevedore.svc', 'sent as SNI')
  t.ok(peer.seen[0]?.auth.ok, 'signed over TLS too')
  t.equal(await good.probe(peer.origin, AbortSignal.timeout(2_000)), true)

  const noName = client(t, { tls: { ca: caPem } })
  const mismatch = await noName.request(peer.origin, 'GET', PEER_HEALTH_PATH).then(() => undefined, (e: unknown) => e)
  t.match(mismatch, { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, 'without serverName the IP is checked, and is not in the certificate')
  t.equal(isPeerUnreachable(mismatch), true)

  const otherName = client(t, { tls: { ca: caPem, serverName: 'other.svc' } })
  t.match(await otherName.request(peer.origin, 'GET', PEER_HEALTH_PATH).then(() => undefined, (e: unknown) => e), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, 'another name is refused')

  const noCa = client(t, { tls: { serverName: 'stevedore.stevedore.svc' } })
  const untrusted = await noCa.request(peer.origin, 'GET', PEER_HEALTH_PATH).then(() => undefined, (e: unknown) => e)
  t.match(untrusted, { code: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/ }, 'a CA the system does not know must be given')
  t.equal(peer.seen.length, 2, 'no refused client got a request through')
})

t.test('close() waits for running requests; destroy() ends them', async (t) => {
  const peer = await startPeer(t, (_req, res) => {
    // Headers at once, the body later: close() is called while the body is still coming.
    res.writeHead(200)
    res.flushHeaders()
    setTimeout(() => res.end('late'), 100)
  })
  const c = new PeerClient({ connectTimeoutMs: 2_000, readTimeoutMs: 5_000, secret })
  const running = c.request(peer.origin, 'GET', PEER_HEALTH_PATH)
  const res = await running
  const closed = c.close()
  t.equal(await res.body.text(), 'late', 'the running body is read to its end')
  await closed
  const d = new PeerClient({ connectTimeoutMs: 2_000, readTimeoutMs: 5_000, secret })
  const cut = await d.request(peer.origin, 'GET', PEER_HEALTH_PATH)
  d.destroy()
  const err = await cut.body.text().then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof Error, `a body still coming fails at destroy (${String(err)})`)
})
