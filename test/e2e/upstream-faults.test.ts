// Upstream faults survived, against the real registry behind the fault
// injector (test/harness/fault-proxy.ts: a socket cut at byte N, canned 503s
// and redirects): resumed blob transfers, retried manifests, refused redirects.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { pushBlob, randomBytesFile } from '../harness/images.js'
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { startRegistry, type Registry } from '../harness/registry.js'
import { cachedBlobPath } from '../harness/stack.js'
import { buildImage, pushImage, type BuiltImage } from '../harness/images.js'
import { requireTools, sleep, tempDir, waitFor } from '../harness/tools.js'

const MB = 1024 * 1024

interface Rig {
  registry: Registry
  faults: FaultProxy
  mirror: Mirror
  cacheRoot: string
  digest: string
  size: number
  image: BuiltImage
}

async function rig(t: Test, upstreamExtra: Record<string, unknown> = {}): Promise<Rig> {
  const dir = await tempDir(t, 'stevedore-upfaults')
  const registry = await startRegistry(t)
  const size = 12 * MB
  const path = join(dir, 'blob')
  const digest = await randomBytesFile(path, size)
  await pushBlob(registry, 'faults/blob', path, digest)
  const image = await buildImage(join(dir, 'img'), { layers: [100_000] })
  await pushImage(registry, 'faults/img', '1', image)
  const faults = await startFaultProxy(t, registry.url)
  const cacheRoot = join(dir, 'cache')
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: cacheRoot } },
      upstreams: { [faults.host]: { url: faults.url, ...upstreamExtra } },
      defaultUpstream: faults.host,
      timeouts: { read: '2s' },
    },
  })
  registry.resetRequests()
  return { registry, faults, mirror, cacheRoot, digest, size, image }
}

t.test('a blob body cut at byte N is resumed with Range from N: the client sees one clean 200, the blob is cached', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const cutAt = 5 * MB + 123
  r.faults.add({ method: 'GET', pathIncludes: `/blobs/${r.digest}`, fault: { kind: 'cut', afterBytes: cutAt }, times: 2 })
  const a = await fetchHashed(`${r.mirror.url}/v2/faults/blob/blobs/${r.digest}`)
  t.equal(a.status, 200)
  t.equal(a.error, undefined, 'a clean end')
  t.equal(a.bytes, r.size)
  t.equal(a.digest, r.digest, 'hashed as one stream: the right bytes')
  const gets = r.faults.requests().filter((q) => q.method === 'GET' && q.path.includes(r.digest))
  t.equal(gets.length, 3, 'the first GET and two resumes')
  t.equal(gets[0]?.range, undefined)
  t.equal(gets[1]?.range, `bytes=${cutAt}-${r.size - 1}`, 'resumed from the byte reached')
  t.equal(gets[2]?.range, `bytes=${2 * cutAt}-${r.size - 1}`, 'and again from the next one')
  await waitFor(async () => existsSync(cachedBlobPath(r.cacheRoot, r.digest)), 10_000, 'cached')
  const metrics = (await fetchAll(`${r.mirror.url}/metrics`)).body.toString()
  t.match(metrics, /stevedore_upstream_retries_total\{[^}]*\} 2/, 'two retries counted')
})

t.test('a blob cut on every attempt fails after the last retry: the client is cut, nothing is cached', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  r.faults.add({ method: 'GET', pathIncludes: `/blobs/${r.digest}`, fault: { kind: 'cut', afterBytes: MB } })
  const a = await fetchHashed(`${r.mirror.url}/v2/faults/blob/blobs/${r.digest}`)
  t.equal(a.status, 200, 'headers were out')
  t.ok(a.error !== undefined, `cut, never a clean end (${a.error})`)
  t.ok(a.bytes < r.size)
  const gets = r.faults.requests().filter((q) => q.method === 'GET' && q.path.includes(r.digest))
  t.equal(gets.length, 6, 'one GET and five resumes')
  await sleep(300)
  t.notOk(existsSync(cachedBlobPath(r.cacheRoot, r.digest)), 'nothing cached')
})

t.test('a body longer than its Content-Length: bytes past it are never read as the blob; a short Content-Length fails the digest and caches nothing', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const url = `${r.mirror.url}/v2/faults/blob/blobs/${r.digest}`
  // The upstream announces 5000 bytes fewer than it sends: what the message holds is not the blob.
  r.faults.add({ method: 'GET', pathIncludes: `/blobs/${r.digest}`, fault: { kind: 'understated', byBytes: 5000 }, times: 1 })
  const short = await fetchHashed(url)
  t.ok(short.error !== undefined, `the client is cut before the end, never a clean wrong blob (${short.error})`)
  t.ok(short.bytes < r.size - 5000, 'the last bytes were held back until the digest was checked')
  await sleep(300)
  t.notOk(existsSync(cachedBlobPath(r.cacheRoot, r.digest)), 'nothing cached')
  // Junk after an honest Content-Length is not part of the message: the blob is what the digest says.
  r.faults.add({ method: 'GET', pathIncludes: `/blobs/${r.digest}`, fault: { kind: 'overlong', extraBytes: 5000 }, times: 1 })
  const long = await fetchHashed(url)
  t.equal(long.error, undefined)
  t.equal(long.bytes, r.size, 'exactly Content-Length bytes')
  t.equal(long.digest, r.digest, 'the verified blob')
  await waitFor(async () => existsSync(cachedBlobPath(r.cacheRoot, r.digest)), 10_000, 'cached once verified')
  const again = await fetchHashed(`${r.mirror.url}/v2/faults/img/manifests/1`)
  t.equal(again.status, 200, 'the connection that carried the junk was not reused for the next answer')
})

t.test('manifests and blob GETs are retried on transient 5xx, quickly; a lasting 5xx fails within about 2 s', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  r.faults.add({ pathIncludes: '/manifests/1', fault: { kind: 'status', status: 503 }, times: 2 })
  const started = Date.now()
  const m = await fetchAll(`${r.mirror.url}/v2/faults/img/manifests/1`)
  t.equal(m.status, 200, 'the tag resolved after two 503s')
  t.ok(Date.now() - started < 2500, `quickly (${Date.now() - started} ms)`)
  t.equal(r.faults.requests().filter((q) => q.path.includes('/manifests/1')).length >= 3, true)

  r.faults.add({ pathIncludes: '/manifests/2', fault: { kind: 'status', status: 502 } })
  const t0 = Date.now()
  const down = await fetchAll(`${r.mirror.url}/v2/faults/img/manifests/2`)
  const took = Date.now() - t0
  t.equal(down.status, 502, `a lasting 5xx: 502, so containerd falls back to the registry (${down.status} ${down.body.toString()})`)
  t.ok(took < 2500, `within about 2 s (${took} ms)`)
  t.equal(r.faults.requests().filter((q) => q.path.includes('/manifests/2')).length, 4, 'one attempt and three retries')

  const layer = r.image.layers[0]
  if (layer === undefined) throw new Error('no layer')
  r.faults.add({ method: 'GET', pathIncludes: `/blobs/${layer.digest}`, fault: { kind: 'status', status: 500 }, times: 1 })
  t.equal((await fetchHashed(`${r.mirror.url}/v2/faults/img/blobs/${layer.digest}`)).digest, layer.digest, 'a blob GET after one 500')
})

t.test('redirects that are never followed: a loop, another scheme, an internal host; nothing cached', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const layer = r.image.layers[0]
  if (layer === undefined) throw new Error('no layer')
  const blobPath = `/v2/faults/img/blobs/${layer.digest}`
  const cases: Array<{ name: string; location: string }> = [
    { name: 'a redirect loop', location: `${r.faults.url}${blobPath}` },
    { name: 'a file: URL', location: 'file:///etc/passwd' },
    { name: 'an internal host (localhost)', location: `http://localhost:${r.registry.port}${blobPath}` },
    { name: 'a cloud metadata address', location: 'http://169.254.169.254/latest/meta-data/' },
  ]
  for (const c of cases) {
    r.faults.clear()
    r.faults.add({ method: 'GET', pathIncludes: blobPath, fault: { kind: 'status', status: 307, headers: { location: c.location } } })
    const a = await fetchAll(`${r.mirror.url}${blobPath}`)
    t.equal(a.status, 502, `${c.name}: 502`)
    t.match(a.body.toString(), /not followed/, `${c.name}: says why`)
    t.notOk(existsSync(cachedBlobPath(r.cacheRoot, layer.digest)), `${c.name}: nothing cached`)
  }
})

t.test('redirectHosts allows a listed host', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t, { redirectHosts: ['localhost'] })
  const layer = r.image.layers[0]
  if (layer === undefined) throw new Error('no layer')
  const blobPath = `/v2/faults/img/blobs/${layer.digest}`
  r.faults.add({ method: 'GET', pathIncludes: blobPath, fault: { kind: 'status', status: 307, headers: { location: `http://localhost:${r.registry.port}${blobPath}` } }, times: 1 })
  t.equal((await fetchHashed(`${r.mirror.url}${blobPath}`)).digest, layer.digest, 'followed to the listed host')
})

t.test('a 429 with Retry-After: 3600 is kept: cached tags are served, uncached ones get 429 with the time left, the upstream is not asked', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const dir = await tempDir(t, 'stevedore-429')
  const registry = await startRegistry(t)
  const image = await buildImage(join(dir, 'img'), { layers: [50_000] })
  await pushImage(registry, 'faults/img', 'cached', image)
  await pushImage(registry, 'faults/img', 'other', image)
  const faults = await startFaultProxy(t, registry.url)
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(dir, 'cache') } },
      upstreams: { [faults.host]: { url: faults.url } },
      defaultUpstream: faults.host,
      // Past the TTL at once: every tag would be revalidated, if the upstream could be asked.
      cache: { tagTtl: '1s', maxStaleAge: '1s', rateLimitBackoff: '60s' },
    },
  })
  const base = `${mirror.url}/v2/faults/img/manifests`
  t.equal((await fetchAll(`${base}/cached`)).status, 200, 'cached while all is well')
  await sleep(1100)
  faults.add({ pathIncludes: '/manifests/', fault: { kind: 'status', status: 429, headers: { 'retry-after': '3600' }, body: '{"errors":[{"code":"TOOMANYREQUESTS"}]}' } })
  const first = await fetchAll(`${base}/cached`)
  t.equal(first.status, 200, 'the 429 itself: the cached tag is served stale')
  faults.clear() // the upstream would answer again now: the mirror must not ask it
  faults.resetRequests()
  const stale = await fetchAll(`${base}/cached`)
  t.equal(stale.status, 200, 'a cached tag is served while paused')
  const refused = await fetchAll(`${base}/other`)
  t.equal(refused.status, 429, 'an uncached tag: 429')
  const left = Number(refused.headers['retry-after'])
  t.ok(left > 3500 && left <= 3600, `with the time left (${left} s; before the fix: forgotten after 60 s)`)
  t.equal((JSON.parse(refused.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS')
  const blob = await fetchAll(`${mirror.url}/v2/faults/img/blobs/${image.layers[0]?.digest}`)
  t.equal(blob.status, 429, 'an uncached blob too')
  await sleep(200)
  t.equal(faults.requests().length, 0, 'the upstream was not asked anything')
})
