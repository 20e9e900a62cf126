// The prefetch API (`POST /api/v1/prefetch`, `GET /api/v1/prefetch/{id}`)
// against a real distribution registry and a real mirror process: images
// are resolved, expanded to platforms and fetched through the pull path's
// fills, before anyone pulls them.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startFaultProxy } from '../harness/fault-proxy.js'
import { fetchHashed } from '../harness/http.js'
import { buildImage, pushImage } from '../harness/images.js'
import type { JobStatus } from '../harness/prefetch-status.js'
import { startMirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { cachedBlobPath, mirrorConfig, startStack } from '../harness/stack.js'
import { requireTools, sleep, tempDir, waitFor } from '../harness/tools.js'

async function call(url: string, opts: { method?: 'GET' | 'POST' | 'DELETE' | 'PUT' | 'HEAD'; body?: string | Buffer; type?: string; headers?: Record<string, string> } = {}) {
  const res = await request(url, {
    method: opts.method ?? 'GET',
    headers: { ...(opts.body !== undefined ? { 'content-type': opts.type ?? 'application/json' } : {}), ...opts.headers },
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  })
  const text = await res.body.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.statusCode, headers: res.headers, text, json }
}

async function submit(mirrorUrl: string, body: unknown): Promise<{ id: string; location: string }> {
  const r = await call(`${mirrorUrl}/api/v1/prefetch`, { method: 'POST', body: JSON.stringify(body) })
  if (r.status !== 202) throw new Error(`POST /api/v1/prefetch answered ${r.status}: ${r.text}`)
  return { id: (r.json as JobStatus).id, location: String(r.headers['location']) }
}

async function finished(mirrorUrl: string, location: string, timeoutMs = 30_000): Promise<JobStatus> {
  let last: JobStatus | undefined
  await waitFor(async () => {
    const r = await call(`${mirrorUrl}${location}`)
    last = r.json as JobStatus
    return last.state === 'done' || last.state === 'failed'
  }, timeoutMs, 'prefetch job to finish')
  return last as JobStatus
}

t.test('prefetch API', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t, { cache: { tagTtl: '1h' } })
  const name = `${s.registry.host}/${s.repo}`
  const blobGets = (): number => s.registry.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length

  await t.test('a job fetches an image and an index (both platforms) before anyone pulls', async (t) => {
    s.registry.resetRequests()
    const { id, location } = await submit(s.mirror.url, { images: [`${name}:oci`, `${name}:index`], platforms: ['linux/amd64', 'linux/arm64'] })
    t.equal(location, `/api/v1/prefetch/${id}`, 'Location names the job')
    const job = await finished(s.mirror.url, location)
    t.equal(job.state, 'done')
    t.same(job.platforms, ['linux/amd64', 'linux/arm64'])
    const [oci, index] = job.images
    t.equal(oci?.state, 'done')
    t.equal(oci?.reference, `${name}:oci`)
    t.equal(oci?.digest, s.oci.digest, 'the resolved digest')
    t.same(oci?.platforms, [`${s.oci.platform.os}/${s.oci.platform.architecture}`], 'a single manifest names its platform from its config')
    t.same(oci?.layers, { total: 1 + s.oci.layers.length, cached: 0, fetched: 1 + s.oci.layers.length, failed: 0 }, 'config and layers counted')
    const ociBytes = s.oci.config.size + s.oci.layers.reduce((n, l) => n + l.size, 0)
    t.same(oci?.bytes, { total: ociBytes, cached: 0, fetched: ociBytes })
    t.equal(index?.state, 'done')
    t.equal(index?.digest, s.index.digest)
    t.equal(index?.platforms.length, 2, 'both platforms of the index')
    // The index's host-platform image is the oci image: fetched by the first image of the job, or joined.
    t.equal(index?.layers.total, 1 + s.oci.layers.length + 2, 'both platforms: configs and layers, each digest once')
    t.equal(index?.layers.failed, 0)
    for (const blob of [s.oci.config, ...s.oci.layers]) t.ok(existsSync(cachedBlobPath(s.cacheRoot, blob.digest)), `${blob.digest.slice(0, 19)} cached`)
    await s.registry.settle()
    t.equal(blobGets(), 1 + s.oci.layers.length + 2, 'one upstream GET per blob')
  })

  await t.test('a second job for cached images fetches nothing', async (t) => {
    s.registry.resetRequests()
    const { location } = await submit(s.mirror.url, { images: [`${name}:oci`, `${name}:index`] })
    const job = await finished(s.mirror.url, location)
    t.equal(job.state, 'done')
    t.equal(job.images.length, 2)
    for (const image of job.images) {
      t.equal(image.layers.fetched, 0, `${image.image}: nothing fetched`)
      t.equal(image.layers.cached, image.layers.total, `${image.image}: all cached`)
      t.equal(image.bytes.fetched, 0)
    }
    await s.registry.settle()
    t.equal(blobGets(), 0, 'no blob GET upstream')
    t.equal(s.registry.requests().filter((r) => r.method === 'GET').length, 0, 'tags within their TTL: no manifest GET either')
  })

  await t.test('platforms: only the ones asked for', async (t) => {
    // A fresh mirror: nothing cached.
    const m = await startMirror(t, { config: mirrorConfig(s.registry, join(await tempDir(t, 'prefetch-one'), 'cache')) })
    const host = `${s.oci.platform.os}/${s.oci.platform.architecture}`
    const { location } = await submit(m.url, { images: [`${name}:list`], platforms: [host] })
    const job = await finished(m.url, location)
    t.equal(job.state, 'done')
    t.same(job.images[0]?.platforms, [host])
    t.equal(job.images[0]?.layers.total, 1 + s.docker.layers.length, 'only the host platform\'s config and layers')
    const { location: none } = await submit(m.url, { images: [`${name}:list`], platforms: ['windows/amd64'] })
    const failed = await finished(m.url, none)
    t.equal(failed.state, 'failed')
    t.match(failed.images[0]?.error, /no manifest for windows\/amd64 \(the index has: .*linux/, 'says which platforms the index has')
  })

  await t.test('refused and failed images are per image, not per job', async (t) => {
    s.registry.resetRequests()
    const { location } = await submit(s.mirror.url, { images: [`${name}:oci`, 'quay.io/org/app:1', 'nginx', `${name}:no-such-tag`, 'Not A Reference'] })
    const job = await finished(s.mirror.url, location)
    t.equal(job.state, 'failed', 'a job with a failed or refused image has failed')
    const [good, foreign, hub, missing, bad] = job.images
    t.equal(good?.state, 'done', 'the good image is still warm')
    t.equal(foreign?.state, 'refused')
    t.match(foreign?.error, /quay\.io.*not mirrored/)
    t.equal(hub?.reference, 'docker.io/library/nginx:latest', 'normalised as Docker does')
    t.equal(hub?.state, 'refused', 'docker.io is not an upstream of this mirror')
    t.equal(missing?.state, 'failed')
    t.match(missing?.error, /manifest unknown/)
    t.equal(bad?.state, 'refused')
    t.match(bad?.error, /not an image reference/)
  })

  await t.test('bad requests get clear 4xx answers with the spec\'s error body', async (t) => {
    const url = `${s.mirror.url}/api/v1/prefetch`
    const unknown = await call(`${url}/00000000-0000-0000-0000-000000000000`)
    t.equal(unknown.status, 404)
    t.match(unknown.json, { errors: [{ code: 'NAME_UNKNOWN', message: 'no such prefetch job' }] })
    const del = await call(`${url}/x`, { method: 'DELETE' })
    t.equal(del.status, 405)
    t.equal(del.headers['allow'], 'GET')
    t.equal((await call(url)).status, 405, 'GET on the collection')
    t.equal((await call(url, { method: 'POST', body: '{"images":["a"]}', type: 'text/plain' })).status, 415, 'JSON only')
    t.equal((await call(url, { method: 'POST', body: '{"images":' })).status, 400, 'malformed JSON')
    t.equal((await call(url, { method: 'POST', body: '{}' })).status, 400, 'no images')
    t.equal((await call(url, { method: 'POST', body: '{"images":[]}' })).status, 400, 'empty list')
    t.equal((await call(url, { method: 'POST', body: '{"images":["a"],"platforms":["linux"]}' })).status, 400, 'bad platform')
    t.equal((await call(url, { method: 'POST', body: '{"images":["a"],"extra":1}' })).status, 400, 'unknown key')
    const many = await call(url, { method: 'POST', body: JSON.stringify({ images: Array.from({ length: 257 }, (_, i) => `x/y:${i}`) }) })
    t.equal(many.status, 400, 'more images than prefetch.maxImagesPerJob')
    const huge = await call(url, { method: 'POST', body: JSON.stringify({ images: ['x'.repeat(600_000)] }) })
    t.equal(huge.status, 413, 'the body limit')
    for (const r of [unknown, del, many, huge]) t.ok(Array.isArray((r.json as { errors?: unknown }).errors), 'OCI error body')
    t.equal((await call(`${s.mirror.url}/v2/${s.repo}/manifests/oci`, { method: 'POST', body: '{}' })).status, 405, 'write methods on /v2/ are still 405')
  })
})

t.test('a prefetch joins the fill of a layer a client is pulling: one upstream GET', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const work = await tempDir(t, 'prefetch-join')
  const registry = await startRegistry(t)
  const image = await buildImage(join(work, 'img'), { layers: [8_000_000], format: 'oci' })
  await pushImage(registry, 'team/big', 'v1', image)
  // A FAULT INJECTOR paces the layer (2 MB/s), so the pull is still running when the prefetch arrives.
  const proxy = await startFaultProxy(t, registry.url)
  const layer = image.layers[0]
  if (layer === undefined) throw new Error('no layer')
  proxy.add({ pathIncludes: `/blobs/${layer.digest}`, method: 'GET', fault: { kind: 'pace', bytesPerSecond: 2_000_000 } })
  const cacheRoot = join(work, 'cache')
  const m = await startMirror(t, { config: { storage: { filesystem: { root: cacheRoot } }, upstreams: { [registry.host]: { url: proxy.url } }, defaultUpstream: registry.host } })
  const pull = fetchHashed(`${m.url}/v2/team/big/blobs/${layer.digest}`)
  await waitFor(async () => proxy.open() > 0, 10_000, 'the pull to reach the upstream')
  await sleep(200)
  const { location } = await submit(m.url, { images: [`${registry.host}/team/big:v1`] })
  const job = await finished(m.url, location)
  const pulled = await pull
  t.equal(pulled.digest, layer.digest, 'the client got every byte')
  t.equal(job.state, 'done')
  t.equal(job.images[0]?.layers.fetched, 2, 'config and layer fetched for the job (the layer by joining the pull: one GET, below)')
  t.equal(proxy.requests().filter((r) => r.method === 'GET' && r.path.includes(layer.digest)).length, 1, 'one upstream GET of the layer')
  t.ok(existsSync(cachedBlobPath(cacheRoot, layer.digest)))
})
