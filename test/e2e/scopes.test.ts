// Content is served through an upstream only where its registry holds it,
// against two real registries: A holds an image and a blob, B holds none of
// them (then, later, some). The "unreachable" upstream is a loopback port
// nobody listens on; the rate-limited one is the fault injector
// (test/harness/fault-proxy.ts) answering 429 in front of B.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { buildImage, pushBlob, pushImage, randomBytesFile, MT, type BuiltImage } from '../harness/images.js'
import { startFaultProxy } from '../harness/fault-proxy.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { startRegistry, type Registry } from '../harness/registry.js'
import { freePort, requireTools, tempDir } from '../harness/tools.js'

interface Rig {
  a: Registry
  b: Registry
  mirror: Mirror
  blob: string
  blobFile: string
  image: BuiltImage
  cacheRoot: string
}

async function rig(t: Test): Promise<Rig> {
  const dir = await tempDir(t, 'stevedore-scopes')
  const [a, b] = await Promise.all([startRegistry(t), startRegistry(t)])
  const path = join(dir, 'blob')
  const blob = await randomBytesFile(path, 300_000)
  await pushBlob(a, 'sc/blob', path, blob)
  const image = await buildImage(join(dir, 'img'), { layers: [200_000] })
  await pushImage(a, 'sc/img', '1', image)
  const faults = await startFaultProxy(t, b.url)
  faults.add({ pathIncludes: '/v2/', fault: { kind: 'status', status: 429, headers: { 'retry-after': '600' } } })
  const config: Record<string, unknown> = {
    storage: { filesystem: { root: join(dir, 'cache') } },
    upstreams: {
      'a.test': { url: a.url },
      // Same URL as a: one registry, one scope.
      'alias.test': { url: a.url },
      'b.test': { url: b.url },
      'down.test': { url: `http://127.0.0.1:${await freePort()}` },
      'limited.test': { url: faults.url },
    },
    defaultUpstream: 'a.test',
  }
  const mirror = await startMirror(t, { config })
  return { a, b, mirror, blob, blobFile: path, image, cacheRoot: join(dir, 'cache') }
}

const blobPath = (repo: string, digest: string, ns: string): string => `/v2/${repo}/blobs/${digest}?ns=${ns}`

t.test('a blob cached through A: 404 through a registry that lacks it, 503 through one that is down or rate-limited, shared by upstreams with the same URL', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const m = r.mirror.url
  t.equal((await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'a.test')}`)).digest, r.blob, 'fetched through A')
  r.a.resetRequests()

  const viaB = await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`)
  t.equal(viaB.status, 404, 'through B, which lacks it: 404 (before the fix: 200 from the cache)')
  t.equal(JSON.parse(viaB.body.toString()).errors[0].code, 'BLOB_UNKNOWN')
  t.equal(r.b.count('HEAD', `/blobs/${r.blob}`), 1, 'B was asked with one HEAD')
  t.equal(r.b.count('GET', `/blobs/${r.blob}`), 0, 'and never with a GET')
  t.equal((await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`, { method: 'HEAD' })).status, 404, 'a HEAD through B: 404 too')
  t.equal(r.b.count('HEAD', `/blobs/${r.blob}`), 1, 'the absence is remembered a while: no second HEAD to B')

  const viaDown = await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'down.test')}`)
  t.equal(viaDown.status, 503, 'through an unreachable upstream that must confirm: 503, so containerd tries the registry')
  const viaLimited = await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'limited.test')}`)
  t.equal(viaLimited.status, 503, 'through a rate-limited upstream that must confirm: 503')

  const viaAlias = await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'alias.test')}`)
  t.equal(viaAlias.digest, r.blob, 'through another upstream with the same URL: served')
  t.equal(r.a.count('*', `/blobs/${r.blob}`), 0, 'from the cache, without asking A')
})

t.test('B confirms with one HEAD, remembered across a restart; content B\'s manifest refers to needs no HEAD', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const m = r.mirror.url
  await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'a.test')}`)
  const layer = r.image.layers[0]?.digest as string
  t.equal((await fetchHashed(`${m}${blobPath('sc/img', layer, 'a.test')}`)).digest, layer, 'a layer cached through A')

  // Now B holds the blob and the image too.
  await pushBlob(r.b, 'sc/blob', r.blobFile, r.blob)
  await pushImage(r.b, 'sc/img', '1', r.image)
  r.b.resetRequests()

  const confirmed = await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`)
  t.equal(confirmed.digest, r.blob, 'B holds it now: served from the cache')
  t.equal(r.b.count('HEAD', `/blobs/${r.blob}`), 1, 'after one HEAD to B')
  t.equal(r.b.count('GET', `/blobs/${r.blob}`), 0, 'no GET')
  await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`)
  t.equal(r.b.count('HEAD', `/blobs/${r.blob}`), 1, 'remembered: no second HEAD')

  await r.mirror.stop()
  await r.mirror.start()
  t.equal((await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`)).digest, r.blob)
  t.equal(r.b.count('HEAD', `/blobs/${r.blob}`), 1, 'persisted with the cache: no HEAD after a restart')

  const manifest = await fetchAll(`${m}/v2/sc/img/manifests/1?ns=b.test`, { headers: { accept: MT.ociManifest } })
  t.equal(manifest.status, 200, 'B\'s manifest fetched through B')
  t.equal((await fetchHashed(`${m}${blobPath('sc/img', layer, 'b.test')}`)).digest, layer, 'its layer, cached through A, is served through B')
  t.equal(r.b.count('*', `/blobs/${layer}`), 0, 'without asking B: its manifest refers to it')
})

t.test('manifests: by digest through a registry that lacks it, 404; fetched through A, still served through A while A is down', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const m = r.mirror.url
  const accept = { accept: MT.ociManifest }
  t.equal((await fetchAll(`${m}/v2/sc/img/manifests/1?ns=a.test`, { headers: accept })).status, 200, 'cached through A')
  const viaB = await fetchAll(`${m}/v2/sc/img/manifests/${r.image.digest}?ns=b.test`, { headers: accept })
  t.equal(viaB.status, 404, 'by digest through B, which lacks it: 404')
  t.equal(JSON.parse(viaB.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN')

  await r.a.stop()
  const stillA = await fetchAll(`${m}/v2/sc/img/manifests/${r.image.digest}?ns=a.test`, { headers: accept })
  t.equal(stillA.status, 200, 'A is down: what was fetched through it is still served through it')
  const layer = r.image.layers[0]?.digest as string
  t.equal((await fetchAll(`${m}${blobPath('sc/img', layer, 'a.test')}`)).status, 503, 'an uncached layer while A is down: 503')
  t.equal((await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'a.test')}`)).status, 503, 'never cached: 503 too')
})

t.test('content cached before scopes were recorded is confirmed on first use, with one HEAD', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const r = await rig(t)
  const m = r.mirror.url
  await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'a.test')}`)
  await r.mirror.stop()
  // A cache from before this change: the blob, and no record of who holds it.
  await rm(join(r.cacheRoot, 'docs', 'scopes'), { recursive: true, force: true })
  r.a.resetRequests()
  await r.mirror.start()
  const served = await fetchHashed(`${m}${blobPath('sc/blob', r.blob, 'a.test')}`)
  t.equal(served.digest, r.blob, 'served through A')
  t.equal(r.a.count('HEAD', `/blobs/${r.blob}`), 1, 'after one HEAD to A')
  t.equal(r.a.count('GET', `/blobs/${r.blob}`), 0, 'from the cache: no GET')
  const viaB = await fetchAll(`${m}${blobPath('sc/blob', r.blob, 'b.test')}`)
  t.equal(viaB.status, 404, 'still 404 through B, which lacks it')
})
