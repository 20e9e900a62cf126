// Smoke test of the e2e harness against the real parts (no mirror):
// distribution 2.8 in every auth mode, skopeo, containerd, and the mirror
// launcher with a stand-in CLI.
import { existsSync } from 'node:fs'
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { mountsUnder, startContainerd, writeHostsToml } from '../harness/containerd.js'
import { buildImage, buildIndex, clientFor, hostPlatform, parseChallenge, pushImage, pushIndex, randomBytesFile, tarHeader, type BuiltImage, type Platform } from '../harness/images.js'
import { startMirror } from '../harness/mirror.js'
import { parseAccessLine, startRegistry, type Registry, type RegistryAuth } from '../harness/registry.js'
import { parseScope } from '../harness/token-issuer.js'
import { freePort, requireTools, run, sha256, sha256File, tempDir, waitFor } from '../harness/tools.js'

/** every temp dir a service used: nothing may run from, or be mounted under, them at the end */
const serviceDirs: string[] = []

const otherPlatform = (): Platform => (hostPlatform().architecture === 'arm64' ? { os: 'linux', architecture: 'amd64' } : { os: 'linux', architecture: 'arm64' })

interface ImageSet {
  oci: BuiltImage
  docker: BuiltImage
  ociOther: BuiltImage
  dockerOther: BuiltImage
}

async function buildSet(dir: string): Promise<ImageSet> {
  const layers = [200_000, 200_000]
  return {
    oci: await buildImage(dir, { layers, format: 'oci' }),
    docker: await buildImage(dir, { layers, format: 'docker' }),
    ociOther: await buildImage(dir, { layers: [50_000], format: 'oci', platform: otherPlatform() }),
    dockerOther: await buildImage(dir, { layers: [50_000], format: 'docker', platform: otherPlatform() }),
  }
}

async function pushSet(reg: Registry, s: ImageSet): Promise<{ ociIndexDigest: string; dockerListDigest: string }> {
  const ociIndex = buildIndex([s.oci, s.ociOther], 'oci')
  const dockerList = buildIndex([s.docker, s.dockerOther], 'docker')
  await pushImage(reg, 'smoke/oci', 'v1', s.oci)
  await pushImage(reg, 'smoke/docker', 'v1', s.docker)
  await pushIndex(reg, 'smoke/index', 'oci', ociIndex, [s.oci, s.ociOther])
  await pushIndex(reg, 'smoke/index', 'docker', dockerList, [s.docker, s.dockerOther])
  return { ociIndexDigest: ociIndex.digest, dockerListDigest: dockerList.digest }
}

t.test('pure helpers', async (t) => {
  const h = tarHeader('x', 1234, 0o755, 0)
  t.equal(h.length, 512)
  t.equal(h.toString('ascii', 257, 262), 'ustar')
  let sum = 0
  for (const [i, b] of h.entries()) sum += i >= 148 && i < 156 ? 32 : b
  t.equal(parseInt(h.toString('ascii', 148, 154), 8), sum, 'tar checksum')
  t.same(parseScope('repository:127.0.0.1:5000/a/b:pull,push'), { type: 'repository', name: '127.0.0.1:5000/a/b', actions: ['pull', 'push'] })
  t.same(parseChallenge('Bearer realm="http://h/token",service="s",scope="repository:a:pull,push"'), {
    scheme: 'bearer',
    params: { realm: 'http://h/token', service: 's', scope: 'repository:a:pull,push' },
  })
  t.same(parseAccessLine('127.0.0.1 - - [29/Nov/2026:09:16:20 +0000] "HEAD /v2/foo/manifests/x HTTP/1.1" 404 91 "" "curl/7.88.1"'), {
    method: 'HEAD',
    path: '/v2/foo/manifests/x',
    status: 404,
    size: 91,
    userAgent: 'curl/7.88.1',
  })
  t.equal(parseAccessLine('time="..." level=error msg="response completed with error"'), null)
  const p = await freePort()
  t.ok(p > 0 && p < 65536)
})

t.test('requireTools', async (t) => {
  t.ok(requireTools(t, 'node'), 'node is on PATH')
  const calls: string[] = []
  const stub = {
    fail: (m: string) => calls.push(`fail:${m}`),
    comment: (m: string) => calls.push(`comment:${m}`),
    skip: (m: string) => calls.push(`skip:${m}`),
  } as unknown as Test
  const saved = process.env.REQUIRE_E2E
  try {
    delete process.env.REQUIRE_E2E
    t.equal(requireTools(stub, 'node', 'no-such-tool-xyz'), false)
    t.notOk(calls.some((c) => c.startsWith('fail:')), 'no failure without REQUIRE_E2E')
    t.ok(calls.some((c) => c.startsWith('skip:')), 'skip recorded')
    calls.length = 0
    process.env.REQUIRE_E2E = '1'
    t.equal(requireTools(stub, 'no-such-tool-xyz'), false)
    t.same(calls, ['fail:missing tool no-such-tool-xyz (REQUIRE_E2E=1)'])
  } finally {
    if (saved === undefined) delete process.env.REQUIRE_E2E
    else process.env.REQUIRE_E2E = saved
  }
})

const AUTHS: RegistryAuth[] = ['none', 'htpasswd', 'token']
for (const auth of AUTHS) {
  t.test(`registry auth=${auth}: push over the HTTP API, copy with skopeo`, async (t) => {
    if (!requireTools(t, 'docker-registry', 'skopeo', 'openssl')) return
    const reg = await startRegistry(t, { auth })
    serviceDirs.push(dirname(reg.dataDir))
    t.same(reg.requests(), [], 'readiness probes are not counted')
    const dir = await tempDir(t, 'smoke-images')
    const set = await buildSet(dir)
    const { ociIndexDigest, dockerListDigest } = await pushSet(reg, set)

    if (auth !== 'none') {
      t.ok(reg.username && reg.password, 'credentials exposed')
      const res = await fetch(`${reg.url}/v2/smoke/oci/manifests/v1`)
      t.equal(res.status, 401, 'anonymous manifest GET is refused')
      const wa = parseChallenge(res.headers.get('www-authenticate') ?? '')
      t.equal(wa.scheme, auth === 'token' ? 'bearer' : 'basic')
      if (auth === 'token') {
        t.equal(wa.params.scope, 'repository:smoke/oci:pull')
        const anon = await fetch(`${wa.params.realm}?service=${wa.params.service}&scope=repository:smoke/oci:pull`)
        t.equal(anon.status, 401, 'anonymous token request is refused')
        const bad = await fetch(`${wa.params.realm}?service=${wa.params.service}&scope=repository:smoke/oci:pull`, {
          headers: { authorization: `Basic ${Buffer.from('robot:wrong').toString('base64')}` },
        })
        t.equal(bad.status, 401, 'wrong password is refused')
      }
    }

    const src = (ref: string): string => `docker://${reg.host}/${ref}`
    const creds = reg.username ? ['--src-creds', `${reg.username}:${reg.password}`] : []
    const skopeo = async (args: string[]): Promise<void> => {
      const r = await run('skopeo', ['copy', '--src-tls-verify=false', ...creds, ...args], { timeoutMs: 60_000 })
      t.equal(r.code, 0, `skopeo copy ${args.join(' ')}`, { stderr: r.stderr })
    }
    const ociOut = async (name: string): Promise<{ out: string; digest: string | undefined }> => {
      const out = join(dir, name)
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
      return { out, digest: index.manifests[0]?.digest }
    }

    // OCI image → oci: keeps the manifest bytes; check every blob too
    reg.resetRequests()
    await skopeo([src('smoke/oci:v1'), `oci:${join(dir, 'out-oci')}:v1`])
    const o = await ociOut('out-oci')
    t.equal(o.digest, set.oci.digest, 'OCI manifest digest preserved')
    for (const b of [set.oci.config, ...set.oci.layers]) {
      t.equal(await sha256File(join(o.out, 'blobs/sha256', b.digest.slice(7))), b.digest, `blob ${b.digest.slice(0, 19)} copied`)
    }
    // the access log counts what skopeo fetched (settle: see registry.ts)
    await reg.settle()
    for (const l of set.oci.layers) {
      t.equal(reg.count('GET', `/v2/smoke/oci/blobs/${l.digest}`), 1, 'one GET per layer in the access log')
    }
    t.equal(reg.count('GET', `/v2/smoke/oci/blobs/${set.oci.config.digest}`), 1, 'config GET logged')
    t.ok(reg.count('GET', '/v2/smoke/oci/manifests/v1') >= 1, 'manifest GET logged')
    t.ok(
      reg.requests().every((r) => r.userAgent.startsWith('skopeo')),
      'only skopeo requests since reset',
    )
    if (auth !== 'none') t.ok(reg.requests().some((r) => r.status === 401), 'skopeo was challenged')

    // OCI index with --all → oci: keeps the index bytes
    await skopeo(['--all', src('smoke/index:oci'), `oci:${join(dir, 'out-oci-index')}:x`])
    t.equal((await ociOut('out-oci-index')).digest, ociIndexDigest, 'OCI index digest preserved')

    // Docker schema2 and manifest list: oci: would convert them, dir: keeps the bytes
    await skopeo([src('smoke/docker:v1'), `dir:${join(dir, 'out-docker')}`])
    t.equal(sha256(await readFile(join(dir, 'out-docker', 'manifest.json'))), set.docker.digest, 'Docker manifest digest preserved')
    for (const b of [set.docker.config, ...set.docker.layers]) {
      t.equal(await sha256File(join(dir, 'out-docker', b.digest.slice(7))), b.digest)
    }
    await skopeo(['--all', src('smoke/index:docker'), `dir:${join(dir, 'out-docker-list')}`])
    t.equal(sha256(await readFile(join(dir, 'out-docker-list', 'manifest.json'))), dockerListDigest, 'Docker manifest list digest preserved')
    t.ok(existsSync(join(dir, 'out-docker-list', `${set.dockerOther.digest.slice(7)}.manifest.json`)), 'other-platform instance copied')

    if (auth !== 'none') {
      // a fresh client, no scope given: it takes the one from the challenge
      const c = clientFor({ url: reg.url, username: reg.username, password: reg.password })
      const head = await c.request('HEAD', `/v2/smoke/oci/manifests/v1`, { scope: '', headers: { accept: set.oci.mediaType } })
      t.equal(head.status, 200, 'client answers the challenge')
      t.equal(head.headers['docker-content-digest'], set.oci.digest)
    }
    if (auth === 'token') {
      const n = reg.tokenRequests?.() ?? 0
      t.ok(n >= 4, `token issuer was used (${n} requests)`)
      const reqs = reg.tokenIssuer?.requests() ?? []
      t.ok(
        reqs.some((r) => r.userAgent.includes('skopeo') && r.account === 'robot' && r.status === 200),
        'skopeo got a token with credentials',
      )
    }

    if (auth === 'none') {
      // blobs on disk, restart on the same port and data
      const layer = set.oci.layers[0]
      if (!layer) throw new Error('no layer')
      t.equal(await sha256File(reg.blobDataPath(layer.digest)), layer.digest, 'blobDataPath points at the stored blob')
      await reg.stop()
      await t.rejects(fetch(`${reg.url}/v2/`), 'down after stop()')
      await reg.start()
      const head = await clientFor(reg).request('HEAD', `/v2/smoke/oci/blobs/${layer.digest}`, { scope: '' })
      t.equal(head.status, 200, 'blob still served after restart')
      t.ok(reg.count('HEAD', layer.digest) >= 1, 'log keeps counting after restart')
      // a plain random blob
      const big = join(dir, 'blob.bin')
      const digest = await randomBytesFile(big, 3_000_001)
      t.equal(await sha256File(big), digest)
    }
  })
}

t.test('registry over TLS (self-signed, SAN 127.0.0.1), verified by skopeo', async (t) => {
  if (!requireTools(t, 'docker-registry', 'skopeo', 'openssl')) return
  const reg = await startRegistry(t, { tls: true, auth: 'htpasswd' })
  serviceDirs.push(dirname(reg.dataDir))
  t.match(reg.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  t.ok(reg.certPath && existsSync(reg.certPath), 'certPath')
  await t.rejects(fetch(`${reg.url}/v2/`), 'an unknown CA is refused')
  const dir = await tempDir(t, 'smoke-tls')
  const img = await buildImage(dir, { layers: [100_000] })
  await pushImage(reg, 'smoke/tls', 'v1', img)
  const certs = join(dir, 'certs')
  await mkdir(certs)
  await copyFile(reg.certPath ?? '', join(certs, 'ca.crt'))
  const r = await run('skopeo', ['inspect', '--raw', '--cert-dir', certs, '--creds', `${reg.username}:${reg.password}`, `docker://${reg.host}/smoke/tls:v1`], { timeoutMs: 60_000 })
  t.equal(r.code, 0, 'skopeo verifies the certificate', { stderr: r.stderr })
  t.equal(sha256(r.stdout), img.digest)
})

t.test('containerd pulls from the registry, and through a proxy via hosts.toml', async (t) => {
  if (!requireTools(t, 'docker-registry', 'containerd', 'ctr')) return
  const reg = await startRegistry(t)
  serviceDirs.push(dirname(reg.dataDir))
  const dir = await tempDir(t, 'smoke-ctr')
  const set = await buildSet(dir)
  await pushSet(reg, set)
  const ctrd = await startContainerd(t)
  serviceDirs.push(ctrd.dir)

  const pull = async (ref: string, opts: Parameters<typeof ctrd.pull>[1]): Promise<void> => {
    const r = await ctrd.pull(ref, opts)
    t.equal(r.code, 0, `ctr pull ${ref}`, { stderr: r.stderr, stdout: r.stdout.slice(-2000) })
  }
  const ociRef = `${reg.host}/smoke/oci:v1`
  await pull(ociRef, { plainHttp: true })
  await pull(`${reg.host}/smoke/index:docker`, { plainHttp: true })
  const imgs = await ctrd.images()
  t.ok(imgs.includes(ociRef), 'ctr images ls lists the pulled image')
  t.ok(imgs.includes(`${reg.host}/smoke/index:docker`))
  const check = await ctrd.ctr(['images', 'check'])
  t.match(check.stdout, /complete \(\d+\/\d+\)/, 'images check: complete')
  const content = await ctrd.content()
  for (const l of set.oci.layers) t.ok(content.includes(l.digest), 'layer in the content store')
  t.notOk(content.includes(set.dockerOther.layers[0]?.digest ?? 'x'), 'other platform not fetched')
  t.ok(reg.count('GET', `/v2/smoke/oci/blobs/${set.oci.layers[0]?.digest ?? 'x'}`) >= 1, 'blob GET from containerd logged')
  t.ok(reg.requests().some((r) => r.userAgent.startsWith('containerd/')), 'containerd user agent in the log')

  const snaps = (await ctrd.ctr(['snapshots', 'ls'])).stdout.trim().split('\n')
  t.ok(snaps.length > set.oci.layers.length, 'unpacked into snapshots', { snaps })

  await ctrd.clean()
  t.same(await ctrd.images(), [], 'clean: no images')
  t.same(await ctrd.content(), [], 'clean: no content')
  t.equal((await ctrd.ctr(['snapshots', 'ls'])).stdout.trim().split('\n').length, 1, 'clean: no snapshots (header only)')

  // distribution in proxy mode as the "mirror", wired with hosts.toml
  const proxy = await startRegistry(t, { proxyRemoteUrl: reg.url })
  serviceDirs.push(dirname(proxy.dataDir))
  const hostsDir = await tempDir(t, 'smoke-hosts')
  await writeHostsToml(hostsDir, reg.host, reg.url, proxy.url)
  const toml = await readFile(join(hostsDir, reg.host, 'hosts.toml'), 'utf8')
  t.match(toml, `server = "${reg.url}"`)
  t.match(toml, `[host."${proxy.url}"]`)
  reg.resetRequests()
  await pull(ociRef, { hostsDir })
  await Promise.all([reg.settle(), proxy.settle()])
  // containerd resolves a tag with HEAD, then GETs the manifest by digest
  t.ok(proxy.count('HEAD', `/v2/smoke/oci/manifests/v1?ns=${encodeURIComponent(reg.host)}`) >= 1, 'tag resolved via the proxy, with ?ns=', { proxy: proxy.requests() })
  t.ok(proxy.count('GET', `/v2/smoke/oci/manifests/${set.oci.digest}?ns=`) >= 1, 'manifest by digest via the proxy')
  t.ok(proxy.count('GET', `/blobs/${set.oci.layers[1]?.digest ?? 'x'}?ns=`) >= 1, 'blob via the proxy')
  t.ok(reg.count('GET', `/blobs/${set.oci.layers[1]?.digest ?? 'x'}`) >= 1, 'proxy fetched the blob upstream')
  t.notOk(reg.requests().some((r) => r.userAgent.startsWith('containerd/')), 'containerd did not go to the upstream itself', { upstream: reg.requests() })
  await ctrd.clean()
})

t.test('mirror launcher (stand-in CLI)', async (t) => {
  const dir = await tempDir(t, 'smoke-mirror')
  const cli = join(dir, 'cli.mjs')
  await writeFile(
    cli,
    `import http from 'node:http'
import { readFileSync } from 'node:fs'
const a = process.argv.slice(2)
const cfg = readFileSync(a[a.indexOf('--config') + 1], 'utf8')
const [host, port] = a[a.indexOf('--listen') + 1].split(':')
if (cfg.includes('explode')) { process.stderr.write('boom: bad config\\n'); process.exit(3) }
const log = (o) => process.stdout.write(JSON.stringify({ level: 30, time: Date.now(), ...o }) + '\\n')
const srv = http.createServer((req, res) => { log({ msg: 'request', url: req.url }); res.writeHead(req.url === '/v2/' ? 200 : 404).end('{}') })
srv.listen(Number(port), host, () => log({ msg: 'listening', port: Number(port), cfg, nodeOptions: process.env.NODE_OPTIONS ?? null, custom: process.env.CUSTOM ?? null }))
process.on('SIGTERM', () => { log({ msg: 'bye' }); srv.close(() => process.exit(0)) })
`,
  )
  const m = await startMirror(t, { config: { upstreams: [{ name: 'x', url: 'http://127.0.0.1:1' }] }, env: { CUSTOM: 'yes' }, cli })
  t.match(m.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.equal(m.host, `127.0.0.1:${m.port}`)
  const pid1 = m.pid()
  t.ok(pid1, 'pid while running')
  const first = m.logs().find((l) => l.msg === 'listening')
  t.ok(first, 'JSON log lines parsed')
  t.match(String(first?.cfg), /name: x/, 'config written as YAML')
  t.equal(first?.nodeOptions, null, "tap's NODE_OPTIONS not passed on")
  t.equal(first?.custom, 'yes', 'env merged')
  t.same(await m.stop(), { code: 0, signal: null }, 'graceful stop')
  t.equal(m.pid(), undefined)
  await m.settle()
  t.ok(m.logs().some((l) => l.msg === 'bye'))
  await m.start()
  t.not(m.pid(), pid1, 'restarted')
  t.equal((await fetch(`${m.url}/v2/`)).status, 200, 'same port after restart')
  t.same(await m.stop('SIGKILL'), { code: null, signal: 'SIGKILL' })

  await t.rejects(startMirror(t, { config: { explode: true }, cli }), /boom: bad config/, 'early exit rejects with stderr')
})

t.test('nothing left behind', async (t) => {
  t.ok(serviceDirs.length > 0)
  // teardowns of the sibling tests above have run by now
  await waitFor(
    async () => {
      const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p))
      for (const pid of pids) {
        const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
        if (serviceDirs.some((d) => cmd.includes(d))) return false
      }
      return true
    },
    5000,
    'no process running from a service dir',
  )
  for (const d of serviceDirs) {
    t.same(await mountsUnder(d), [], `no mounts under ${d}`)
    t.notOk(existsSync(d), `${d} removed`)
  }
})
