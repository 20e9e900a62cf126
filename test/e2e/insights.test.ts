// Pull sessions and image insights, from real pulls: containerd and skopeo
// through the mirror, the real upstream registry behind it.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd, writeHostsToml } from '../harness/containerd.js'
import { MT, pushBlob, pushManifest, writeLayer, type BuiltImage } from '../harness/images.js'
import { REPO_ROOT, startMirror } from '../harness/mirror.js'
import { startStack, type Stack } from '../harness/stack.js'
import { requireTools, run, sha256, tempDir, waitFor } from '../harness/tools.js'
import type { ReportDocument } from '../../src/insights/report/document.js'
import type { ImageInsight, ImagesResponse, LayersResponse, PullRecord, PullsResponse, Summary, TimelineResponse } from '../../src/insights/types.js'

const getJson = async <T>(s: Stack, path: string): Promise<T> => {
  const res = await fetch(`${s.mirror.url}${path}`)
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

/** Ignored by git: the report of this run, for a human to read. */
const ARTIFACTS = join(REPO_ROOT, 'test', 'artifacts')

const blobBytes = (img: BuiltImage): number => img.config.size + img.layers.reduce((n, l) => n + l.size, 0)

/** A manifest with the OCI image's config and base layer and one layer of its own: an image sharing a base. */
async function pushSharingImage(s: Stack, dir: string): Promise<{ digest: string; bytes: number; layers: Array<{ digest: string; size: number }> }> {
  const own = await writeLayer(dir, 90_000, 'own')
  await pushBlob(s.registry, s.repo, own.path, own.digest)
  const base = s.oci.layers[0]
  if (base === undefined) throw new Error('the stack image has no layer')
  const layers = [{ digest: base.digest, size: base.size }, { digest: own.digest, size: own.size }]
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: { mediaType: MT.ociConfig, digest: s.oci.config.digest, size: s.oci.config.size },
    layers: layers.map((l) => ({ mediaType: MT.ociLayerGzip, ...l })),
  }))
  await pushManifest(s.registry, s.repo, 'shared', manifest, MT.ociManifest)
  return { digest: sha256(manifest), bytes: s.oci.config.size + base.size + own.size, layers }
}

t.test('pulls by containerd and skopeo become pull records and image insights that agree with what was pulled', async (t) => {
  if (!requireTools(t, 'docker-registry', 'containerd', 'ctr', 'skopeo')) return
  const s = await startStack(t, { extraConfig: { insights: { sessionIdle: '1s', persistInterval: '1s' } } })
  const work = await tempDir(t, 'stevedore-insights')
  const shared = await pushSharingImage(s, work)
  const ctrd = await startContainerd(t)
  const hostsDir = join(work, 'hosts')
  await writeHostsToml(hostsDir, s.registry.host, s.registry.url, s.mirror.url)
  const host = s.registry.host
  const pullsOf = async (): Promise<readonly PullRecord[]> => (await getJson<PullsResponse>(s, '/api/v1/pulls?limit=100')).pulls
  const waitPulls = async (n: number, what: string): Promise<readonly PullRecord[]> => {
    await waitFor(async () => (await pullsOf()).length >= n, 10_000, what)
    return pullsOf()
  }
  const indexRef = `${host}/${s.repo}:index`

  // 1. containerd, cold: index, then the host's manifest, then its blobs.
  let r = await ctrd.pull(indexRef, { hostsDir, plainHttp: true })
  t.equal(r.code, 0, `ctr pull: ${r.stderr.slice(-300)}`)
  let pulls = await waitPulls(1, 'the cold pull to be recorded')
  const cold = pulls[0] as PullRecord
  t.match(cold, {
    image: `${host}/${s.repo}:index`, upstream: host, repository: s.repo, tag: 'index',
    digest: s.oci.digest, index: s.index.digest,
    platform: `${s.oci.platform.os}/${s.oci.platform.architecture}`,
    layers: { total: 2, fetched: 2 }, bytes: blobBytes(s.oci), bytesFromUpstream: blobBytes(s.oci), bytesFromCache: 0,
    cache: 'cold', result: 'ok',
  }, 'the cold pull: what was pulled, all from the upstream')
  t.match(cold.client.userAgent, /^containerd\//, 'the client is containerd')
  t.equal(cold.client.address, '127.0.0.1')
  t.ok(cold.seconds > 0 && cold.firstLayerByteSeconds !== undefined && cold.firstLayerByteSeconds <= cold.seconds, `timed: ${cold.seconds} s, first layer byte at ${cold.firstLayerByteSeconds} s`)

  // 2. The same again after containerd forgot it: warm.
  await ctrd.clean()
  r = await ctrd.pull(indexRef, { hostsDir, plainHttp: true })
  t.equal(r.code, 0, `ctr pull again: ${r.stderr.slice(-300)}`)
  pulls = await waitPulls(2, 'the warm pull to be recorded')
  t.ok(Date.parse((pulls[0] as PullRecord).startedAt) >= Date.parse(cold.endedAt), 'the second pull starts after the first ended (timed from its own index request)')
  t.match(pulls[0], { image: `${host}/${s.repo}:index`, cache: 'warm', bytesFromCache: blobBytes(s.oci), bytesFromUpstream: 0, layers: { total: 2, fetched: 2 } }, 'the warm pull: all from the cache')

  // 3. A pull of what containerd has: it checks the tag and moves no blob, a resolve.
  r = await ctrd.pull(indexRef, { hostsDir, plainHttp: true })
  t.equal(r.code, 0, `ctr pull of an image it has: ${r.stderr.slice(-300)}`)
  await waitFor(async () => (await getJson<Summary>(s, '/api/v1/summary')).pulls.resolves >= 1, 10_000, 'the resolve to be counted')
  t.equal((await pullsOf()).length, 2, 'a resolve is not a pull')

  // 4. skopeo: the OCI image (the index's own manifest: warm), the Docker one (cold), and one sharing the base (partial).
  const skopeo = async (tag: string): Promise<void> => {
    const res = await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${s.mirror.host}/${s.repo}:${tag}`, `dir:${join(work, `copy-${tag}`)}`], { timeoutMs: 60_000 })
    t.equal(res.code, 0, `skopeo copy ${tag}: ${res.stderr.slice(-300)}`)
  }
  for (const tag of ['oci', 'docker', 'shared']) await skopeo(tag)
  pulls = await waitPulls(5, 'the skopeo pulls to be recorded')
  const byImage = new Map(pulls.map((p) => [p.image, p]))
  t.match(byImage.get(`${host}/${s.repo}:oci`), { cache: 'warm', digest: s.oci.digest, platform: `${s.oci.platform.os}/${s.oci.platform.architecture}`, bytes: blobBytes(s.oci) }, 'skopeo, OCI image: warm, its platform read from its config')
  t.match(byImage.get(`${host}/${s.repo}:docker`), { cache: 'cold', digest: s.docker.digest, bytes: blobBytes(s.docker), bytesFromUpstream: blobBytes(s.docker) }, 'skopeo, Docker image: cold')
  const partial = byImage.get(`${host}/${s.repo}:shared`)
  t.match(partial, { cache: 'partial', digest: shared.digest, bytes: shared.bytes, layers: { total: 2, fetched: 2 } }, 'an image sharing a cached base: partial')
  t.equal(partial?.bytesFromUpstream, shared.layers[1]?.size, 'only its own layer came from the upstream')
  t.match(partial?.client.userAgent, /skopeo|containers/i, 'the client is skopeo')

  // The filter.
  const onlyIndex = await getJson<PullsResponse>(s, `/api/v1/pulls?image=${encodeURIComponent(`${host}/${s.repo}:index`)}`)
  t.same(onlyIndex.pulls.map((p) => p.cache), ['warm', 'cold'], '?image= keeps that image\'s pulls, newest first')
  t.equal((await getJson<PullsResponse>(s, `/api/v1/pulls?image=${encodeURIComponent(`${host}/${s.repo}`)}`)).pulls.length, 5, '?image=<repository> keeps every tag of it')
  t.equal((await getJson<PullsResponse>(s, '/api/v1/pulls?limit=2')).pulls.length, 2, '?limit=')

  // Images: sizes, layer counts, cold/warm, sharing.
  const images = (await getJson<ImagesResponse>(s, '/api/v1/images')).images
  const image = (tag: string): ImageInsight | undefined => images.find((i) => i.image === `${host}/${s.repo}:${tag}`)
  const idx = image('index')
  t.match(idx, { pulls: 2, cold: 1, warm: 1, partial: 0, resolves: 1, size: blobBytes(s.oci), layerCount: 2, digest: s.oci.digest }, 'the index image: two pulls, one resolve')
  t.equal(idx?.coldSeconds.count, 1)
  t.equal(idx?.warmSeconds.count, 1)
  t.equal(idx?.coldSeconds.p50, cold.seconds, 'p50 of one cold pull is that pull')
  const largest = [...s.oci.layers].sort((a, b) => b.size - a.size)[0]
  t.same(idx?.largestLayer, { digest: largest?.digest, size: largest?.size }, 'its largest layer')
  t.equal(idx?.uniqueBytes, 0, 'the same manifest pulled as :oci shares all its layers')
  t.equal(image('docker')?.uniqueBytes, blobBytes(s.docker) - s.docker.config.size, 'the Docker image shares nothing: all its layer bytes are its own')
  t.equal(image('shared')?.uniqueBytes, shared.layers[1]?.size, 'the sharing image: only its own layer is unique')
  const sum = pulls.reduce((n, p) => n + p.seconds, 0)
  t.ok(Math.abs(images.reduce((n, i) => n + i.pullSeconds, 0) - sum) < 0.01, 'pull-seconds add up to the pulls\' seconds')
  t.same(images.map((i) => i.pullSeconds), [...images.map((i) => i.pullSeconds)].sort((a, b) => b - a), 'ranked by pull-seconds')

  const layers = (await getJson<LayersResponse>(s, '/api/v1/layers')).layers
  const base = layers.find((l) => l.digest === shared.layers[0]?.digest)
  t.same([...(base?.images ?? [])].sort(), [`${host}/${s.repo}:index`, `${host}/${s.repo}:oci`, `${host}/${s.repo}:shared`].sort(), 'the base layer and the images that share it')
  t.same(layers.map((l) => l.size), [...layers.map((l) => l.size)].sort((a, b) => b - a), 'largest first')

  // Summary and metrics.
  const summary = await getJson<Summary>(s, '/api/v1/summary')
  t.match(summary, { instance: 'local', pulls: { total: 5, cold: 2, warm: 2, partial: 1, failed: 0, resolves: 1 }, fillsInProgress: 0 }, 'summary pulls')
  const blobTotal = pulls.reduce((n, p) => n + p.bytes, 0)
  t.ok(summary.bytes.served >= blobTotal, `bytes served (${summary.bytes.served}) include the pulls' blob bytes (${blobTotal})`)
  t.ok(summary.upstreamSaved.bytes >= pulls.reduce((n, p) => n + p.bytesFromCache, 0), 'saved bytes include every warm blob byte')
  t.ok(summary.requests.hitRatio !== null && summary.requests.hitRatio > 0 && summary.requests.hitRatio < 1, `a hit ratio between 0 and 1: ${summary.requests.hitRatio}`)
  t.ok(summary.cache.size >= blobBytes(s.oci) + blobBytes(s.docker), 'cache size counts what was stored')
  t.match(summary.upstreams, [{ name: host, url: s.registry.url, rateLimitRemaining: null, pausedSeconds: 0 }], 'the upstream')
  t.ok((summary.upstreams[0]?.requests ?? 0) > 0)
  const timeline = await getJson<TimelineResponse>(s, '/api/v1/timeline?minutes=5')
  t.equal(timeline.minutes.length, 5, 'five minutes, empty ones included')
  t.equal(timeline.minutes.reduce((n, m) => n + m.pulls, 0), 5, 'the timeline holds the five pulls')

  const metrics = await (await fetch(`${s.mirror.url}/metrics`)).text()
  const metric = (line: string): number => Number(new RegExp(`^${line.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN)
  t.equal(metric(`stevedore_image_pulls_total{upstream="${host}",cache="cold"}`), 2)
  t.equal(metric(`stevedore_image_pulls_total{upstream="${host}",cache="warm"}`), 2)
  t.equal(metric(`stevedore_image_pulls_total{upstream="${host}",cache="partial"}`), 1)
  t.equal(metric(`stevedore_image_pull_duration_seconds_count{upstream="${host}",cache="cold"}`), 2)
  t.equal(metric(`stevedore_image_resolves_total{upstream="${host}"}`), 1)
  t.equal(metric('stevedore_upstream_bytes_saved_total'), summary.upstreamSaved.bytes, 'bytes saved: the metric and the summary agree')

  // `stevedore report` over this replica and a second one (its own disk and name) that served one more pull.
  const second = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(work, 'cache-b') } }, insights: { sessionIdle: '1s', instance: 'replica-b' } } })
  const copied = await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${second.host}/${s.repo}:docker`, `dir:${join(work, 'copy-b')}`], { timeoutMs: 60_000 })
  t.equal(copied.code, 0, `skopeo through the second replica: ${copied.stderr.slice(-300)}`)
  await waitFor(async () => ((await (await fetch(`${second.url}/api/v1/pulls`)).json()) as PullsResponse).pulls.length === 1, 10_000, 'the second replica\'s pull')
  const cli = join(REPO_ROOT, 'dist', 'cli.js')
  const json = await run(process.execPath, [cli, 'report', '--mirror', s.mirror.url, '--mirror', second.url, '--json'], { timeoutMs: 30_000 })
  t.equal(json.code, 0, `report --json: ${json.stderr}`)
  const doc = JSON.parse(json.stdout) as ReportDocument
  t.same(doc.mirrors.map((m) => [m.state, 'instance' in m ? m.instance : undefined]), [['merged', 'local'], ['merged', 'replica-b']], 'both replicas merged')
  t.match(doc.summary.pulls, { total: 6, cold: 3, warm: 2, partial: 1, resolves: 1 }, 'the pulls of both replicas')
  const docker = doc.images.find((i) => i.image === `${host}/${s.repo}:docker`)
  t.match(docker, { pulls: 2, cold: 2, size: blobBytes(s.docker), layerCount: 2 }, 'one image pulled on each replica: one row, its pulls summed')
  t.equal(docker?.coldSeconds.samples.length, 2, 'its cold samples pooled')
  t.same(doc.images.find((i) => i.image === `${host}/${s.repo}:index`), images.find((i) => i.image === `${host}/${s.repo}:index`), 'an image of one replica, as that replica reports it')
  t.equal(doc.pulls.length, 6, 'every pull of both')
  const text = await run(process.execPath, [cli, 'report', '--mirror', s.mirror.url, '--mirror', second.url, '--top', '5'], { timeoutMs: 30_000 })
  t.equal(text.code, 0, `report: ${text.stderr}`)
  for (const heading of ['Top images by pull-seconds', 'Slowest cold pulls', 'Largest layers', 'What the mirror saved', 'Size advice']) t.match(text.stdout, heading, `the report has "${heading}"`)
  t.match(text.stdout, new RegExp(`${host.replace(/[.]/g, '\\.')}/${s.repo}:docker\\s+2\\s+2\\s`), 'the Docker image\'s row: 2 pulls, 2 cold')
  t.match(text.stdout, /Sharing no layer with any other image here[^\n]*\n[^\n]*\n[^\n]*:docker/, 'advice: the Docker image shares no layer')
  await mkdir(ARTIFACTS, { recursive: true })
  await writeFile(join(ARTIFACTS, 'report.txt'), text.stdout)
  await second.stop()

  // A restart keeps the history.
  await s.mirror.stop()
  await s.mirror.start()
  const after = await getJson<PullsResponse>(s, '/api/v1/pulls?limit=100')
  t.same(after.pulls, pulls, 'the pulls survive a restart')
  const again = await getJson<Summary>(s, '/api/v1/summary')
  t.equal(again.since, summary.since, 'counted since the first start')
  t.same(again.pulls, summary.pulls)
  t.same((await getJson<ImagesResponse>(s, '/api/v1/images')).images.map((i) => [i.image, i.pulls, i.coldSeconds.samples]), images.map((i) => [i.image, i.pulls, i.coldSeconds.samples]), 'image aggregates survive too')
})

t.test('the insights API refuses bad queries with the registry error body, never a 5xx', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t)
  for (const q of ['/api/v1/pulls?limit=0', '/api/v1/pulls?limit=abc', '/api/v1/pulls?limit=1&limit=2', '/api/v1/images?limit=9999999999', '/api/v1/timeline?minutes=1e3', '/api/v1/layers?limit=-1', `/api/v1/pulls?image=${'x'.repeat(2000)}`]) {
    const res = await fetch(`${s.mirror.url}${q}`)
    t.equal(res.status, 400, q.slice(0, 60))
    const body = (await res.json()) as { errors?: Array<{ code: string }> }
    t.equal(body.errors?.[0]?.code, 'UNSUPPORTED', 'the spec\'s error body')
  }
  const all = await fetch(`${s.mirror.url}/api/v1/timeline?minutes=100000`)
  t.equal(all.status, 200, 'more than is kept means all of it')
  t.equal(((await all.json()) as TimelineResponse).minutes.length, 24 * 60, 'a day of minutes')
  const post = await fetch(`${s.mirror.url}/api/v1/pulls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(post.status, 405, 'read-only')
  t.equal(post.headers.get('allow'), 'GET')
  const empty = await getJson<Summary>(s, '/api/v1/summary')
  t.match(empty, { requests: { total: 0, hits: 0, hitRatio: null }, pulls: { total: 0 } }, 'a new mirror: nothing counted, no ratio')
})
