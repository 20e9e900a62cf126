// The mirror process on S3 (s3rver) in front of a real registry: a kill -9
// in the middle of a fill, S3 going away during a fill, presigned redirects,
// and S3 unreachable at start-up.
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { MT, pushBlob, pushManifest, randomBytesFile } from '../harness/images.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { rawRequest } from '../harness/raw-http.js'
import { startRegistry, type Registry } from '../harness/registry.js'
import { freePort, requireTools, sleep, tempDir, waitFor } from '../harness/tools.js'
import { s3StorageDocument, startS3, type S3Server } from '../storage/s3-helpers.js'
import { startThrottle, type Throttle } from '../storage/throttle.js'

const MB = 1024 * 1024

async function metric(mirror: Mirror, name: string): Promise<number> {
  const text = (await fetchAll(`${mirror.url}/metrics`)).body.toString()
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

function config(s3: S3Server, upstream: { host: string; url: string }, prefix: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    storage: { s3: s3StorageDocument(s3, { prefix, ...extra }) },
    upstreams: { [upstream.host]: { url: upstream.url } },
    defaultUpstream: upstream.host,
  }
}

interface Fixture {
  registry: Registry
  throttle: Throttle
  digest: string
  size: number
}

/** A registry with one 40 MiB blob, behind a throttle. */
async function fixture(tt: Test, repo: string): Promise<Fixture> {
  const dir = await tempDir(tt, 'stevedore-s3-mirror')
  const registry = await startRegistry(tt)
  const size = 40 * MB
  const path = join(dir, 'blob')
  const digest = await randomBytesFile(path, size)
  await pushBlob(registry, repo, path, digest)
  const throttle = await startThrottle(tt, { host: '127.0.0.1', port: registry.port }, 1024 * MB)
  return { registry, throttle, digest, size }
}

t.test('kill -9 in the middle of a fill on S3: nothing partial is visible, the blob is served after a restart', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const f = await fixture(t, 'crash/blob')
  const s3 = await startS3(t)
  const mirror = await startMirror(t, { config: config(s3, f.throttle, 'crash/') })
  f.throttle.rate = 8 * MB
  const url = `${mirror.url}/v2/crash/blob/blobs/${f.digest}`
  const first = fetchHashed(url)
  await waitFor(async () => (await metric(mirror, 'stevedore_upstream_bytes_total')) > 20 * MB, 20_000, '20 MiB into the fill')
  await waitFor(async () => (await s3.pendingParts()) >= 2, 10_000, 'parts uploaded to S3')
  await mirror.stop('SIGKILL')
  const cut = await first
  t.ok(cut.error !== undefined || cut.bytes < f.size, `the client saw the cut (${cut.bytes} bytes, ${cut.error ?? 'no error'})`)
  t.ok((await s3.pendingParts()) >= 2, `S3 holds ${await s3.pendingParts()} parts of an upload that never completed`)
  const keys = [...(await s3.objects('crash/')).keys()]
  t.same(keys.filter((k) => k.startsWith('crash/blobs/') || k.startsWith('crash/uploads/')), [], `no blob or staged object is visible: ${keys.join(', ')}`)

  f.throttle.rate = 1024 * MB
  await mirror.start()
  t.ok(mirror.logs().some((l) => l['msg'] === 'could not clean up stale multipart uploads; going on'), 'start-up tries to clean up uploads and goes on when S3 cannot list them')
  const second = await fetchHashed(url)
  t.equal(second.status, 200)
  t.equal(second.digest, f.digest, 'the blob is served whole and correct after the restart')
  t.equal(f.registry.count('GET', `/blobs/${f.digest}`), 2, 'fetched from the upstream again')
  await waitFor(async () => (await s3.objects('crash/blobs/')).size === 1, 10_000, 'the blob published')
  t.same(Object.fromEntries(await s3.objects('crash/blobs/')), { [`crash/blobs/sha256/${f.digest.slice(7)}`]: f.size }, 'exactly one object, the right size')
  const third = await fetchHashed(url)
  t.equal(third.digest, f.digest)
  t.equal(f.registry.count('GET', `/blobs/${f.digest}`), 2, 'and now it is a cache hit')
})

t.test('S3 goes away during a fill: the client gets every verified byte or an aborted transfer, nothing is published, /readyz follows S3', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const f = await fixture(t, 'flaky/blob')
  const s3 = await startS3(t)
  const mirror = await startMirror(t, { config: config(s3, f.throttle, 'flaky/') })
  t.equal((await fetchAll(`${mirror.url}/readyz`)).status, 200, 'ready while S3 answers')
  f.throttle.rate = 8 * MB
  const url = `${mirror.url}/v2/flaky/blob/blobs/${f.digest}`
  const first = fetchHashed(url)
  await waitFor(async () => (await metric(mirror, 'stevedore_upstream_bytes_total')) > 12 * MB, 20_000, '12 MiB into the fill')
  await s3.stop()
  await waitFor(async () => (await fetchAll(`${mirror.url}/readyz`)).status === 503, 10_000, 'not ready while S3 is down')
  f.throttle.rate = 1024 * MB
  const during = await first
  // Either the fill turns into a pass-through for its client (every byte, verified),
  // or the transfer is aborted: never a clean end with short or wrong bytes.
  if (during.error === undefined) {
    t.equal(during.digest, f.digest, 'a transfer that ends cleanly has every byte, the right ones')
  } else {
    t.ok(during.bytes < f.size, `or it is aborted (${during.bytes} bytes, ${during.error})`)
  }
  // Only once the fill has given up (the SDK retries first) may S3 come back, or a retry would just succeed.
  await waitFor(async () => (await metric(mirror, 'stevedore_blob_fills_total\\{outcome="failed"\\}')) === 1, 20_000, 'the fill failed')

  await s3.start()
  await waitFor(async () => (await fetchAll(`${mirror.url}/readyz`)).status === 200, 10_000, 'ready again')
  t.same([...(await s3.objects('flaky/blobs/')).keys()], [], 'nothing was published')
  t.same([...(await s3.objects('flaky/uploads/')).keys()], [], 'no staged object either')
  const second = await fetchHashed(url)
  t.equal(second.digest, f.digest, 'the next request fills and serves it')
  await waitFor(async () => (await s3.objects('flaky/blobs/')).size === 1, 10_000, 'published')
  t.equal(f.registry.count('GET', `/blobs/${f.digest}`), 2, 'one upstream GET per fill')
})

t.test('redirect: true answers cache hits with a presigned S3 URL', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const f = await fixture(t, 'redir/blob')
  const s3 = await startS3(t)
  const mirror = await startMirror(t, { config: config(s3, f.throttle, 'redir/', { redirect: true }) })
  const url = `${mirror.url}/v2/redir/blob/blobs/${f.digest}`
  const miss = await fetchHashed(url)
  t.equal(miss.digest, f.digest, 'a miss streams through the mirror')
  await waitFor(async () => (await s3.objects('redir/blobs/')).size === 1, 10_000, 'published')
  const hit = await fetchAll(url)
  t.equal(hit.status, 307, 'a hit is a 307')
  const location = String(hit.headers['location'])
  t.ok(location.startsWith(`${s3.endpoint}/${s3.bucket}/redir/blobs/sha256/${f.digest.slice(7)}?`), `to the object: ${location.slice(0, 120)}...`)
  t.match(location, /X-Amz-Expires=300/, 'valid for five minutes')
  const direct = await fetchHashed(location)
  t.equal(direct.digest, f.digest, 'the presigned URL serves the blob')
  t.equal(f.registry.count('GET', `/blobs/${f.digest}`), 1, 'one upstream GET in all')
})

t.test('S3 unreachable at start-up: a clear error, not ready, then ready once S3 answers', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const dir = await tempDir(t, 'stevedore-s3-down')
  const s3Port = await freePort()
  const registry = await startRegistry(t)
  const blob = join(dir, 'blob')
  const digest = await randomBytesFile(blob, 2 * MB)
  await pushBlob(registry, 'late/s3', blob, digest)
  const mirror = await startMirror(t, {
    config: {
      storage: { s3: { bucket: 'cache', endpoint: `http://127.0.0.1:${s3Port}`, forcePathStyle: true, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', spoolDir: join(dir, 'spool') } },
      upstreams: { [registry.host]: { url: registry.url } },
      defaultUpstream: registry.host,
    },
  })
  t.equal((await fetchAll(`${mirror.url}/readyz`)).status, 503, 'not ready')
  t.equal((await fetchAll(`${mirror.url}/healthz`)).status, 200, 'but alive')
  const refused = await fetchAll(`${mirror.url}/v2/late/s3/blobs/${digest}`)
  t.equal(refused.status, 503, 'registry requests answer 503 at once, so containerd moves on')
  t.equal((JSON.parse(refused.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE')
  await mirror.settle()
  const line = mirror.logs().find((l) => String(l['msg']).startsWith('storage not reachable'))
  t.ok(line, 'one clear error line')
  t.match(String(line?.['msg']), new RegExp(`S3 bucket "cache" at http://127.0.0.1:${s3Port}: .*failed: .*ECONNREFUSED`), 'naming the bucket, the endpoint and the cause')

  await startS3(t, { bucket: 'cache', port: s3Port })
  await waitFor(async () => (await fetchAll(`${mirror.url}/readyz`)).status === 200, 15_000, 'ready once S3 answers')
  const served = await fetchHashed(`${mirror.url}/v2/late/s3/blobs/${digest}`)
  t.equal(served.digest, digest, 'and serving')
  t.ok(mirror.logs().some((l) => l['msg'] === 'storage reachable: ready'), 'the recovery is logged')
  await sleep(0)
})

t.test('a cached blob streamed from S3: a reader that stops is dropped after writeTimeout, its slot freed', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const f = await fixture(t, 'stall/blob')
  const s3 = await startS3(t)
  const mirror = await startMirror(t, { config: { ...config(s3, f.throttle, 'stall/'), limits: { writeTimeout: '2s', responses: 1, responseQueue: 0 } } })
  const path = `/v2/stall/blob/blobs/${f.digest}`
  t.equal((await fetchHashed(`${mirror.url}${path}`)).digest, f.digest, 'fetched')
  // The client has its last byte before the upload completes: until then a GET joins the fill.
  await waitFor(async () => (await metric(mirror, 'stevedore_blob_fills_in_progress')) === 0, 20_000, 'stored on S3')
  const stopped = rawRequest(mirror.port, path)
  t.equal((await stopped.head).status, 200)
  stopped.socket.pause()
  const pausedAt = Date.now()
  // Before the fix: no timeout on this path; the slot stayed taken and every other blob GET got 503.
  await waitFor(async () => (await fetchAll(`${mirror.url}${path}`, { method: 'HEAD' })).status === 200 && (await mirror.settle(), mirror.logs().some((l) => l['msg'] === 'client stopped reading: dropped')), 20_000, 'the stopped reader dropped')
  t.ok(Date.now() - pausedAt < 15_000, `dropped within ${Date.now() - pausedAt} ms`)
  stopped.socket.resume()
  const end = await stopped.closed
  t.ok(end.body.byteLength < f.size, `cut, without a clean end (${end.body.byteLength} of ${f.size} bytes)`)
  t.equal((await fetchHashed(`${mirror.url}${path}`)).digest, f.digest, 'the slot is free again')
})

t.test('a layer streamed from S3 and cut by its client: the request is logged and its pull recorded as failed', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const f = await fixture(t, 'cut/app')
  const dir = await tempDir(t, 'stevedore-s3-cut')
  const configPath = join(dir, 'config')
  const configDigest = await randomBytesFile(configPath, 2000)
  await pushBlob(f.registry, 'cut/app', configPath, configDigest)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MT.ociManifest,
    config: { mediaType: MT.ociConfig, digest: configDigest, size: 2000 },
    layers: [{ mediaType: MT.ociLayerGzip, digest: f.digest, size: f.size }],
  }))
  await pushManifest(f.registry, 'cut/app', 'v1', manifest, MT.ociManifest)
  const s3 = await startS3(t)
  const mirror = await startMirror(t, { config: { ...config(s3, f.throttle, 'cut/'), insights: { sessionIdle: '1s' } } })
  const layerUrl = `${mirror.url}/v2/cut/app/blobs/${f.digest}`
  t.equal((await fetchHashed(layerUrl)).digest, f.digest, 'the layer is cached')
  await waitFor(async () => (await s3.objects('cut/blobs/')).size === 1, 10_000, 'the layer published to S3')
  const ua = { 'user-agent': 'containerd/1.7.0' }
  t.equal((await fetchAll(`${mirror.url}/v2/cut/app/manifests/v1`, { headers: { ...ua, accept: MT.ociManifest } })).status, 200)
  t.equal((await fetchAll(`${mirror.url}/v2/cut/app/blobs/${configDigest}`, { headers: ua })).status, 200)
  const cut = await fetchHashed(layerUrl, { headers: ua, abortAfterBytes: 1024 * 1024 })
  t.ok(cut.bytes < f.size, `the client left after ${cut.bytes} bytes`)
  await waitFor(async () => mirror.logs().some((l) => l['msg'] === 'request' && l['digest'] === f.digest && l['aborted'] === true), 10_000, 'the cut request\'s log line')
  let pulls: Array<{ image: string; result: string; cache: string }> = []
  await waitFor(async () => {
    pulls = ((await (await fetch(`${mirror.url}/api/v1/pulls`)).json()) as { pulls: typeof pulls }).pulls
    return pulls.length === 1
  }, 10_000, 'the pull to end')
  t.match(pulls[0], { image: `${f.throttle.host}/cut/app:v1`, result: 'failed', cache: 'warm' }, 'a failed warm pull, not an open one')
})
