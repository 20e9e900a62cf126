// Tag and manifest caching: TTL, stale-while-revalidate with one background
// HEAD, the maximum stale age, remembered 404s, single-flight misses, rate
// limits, and the metrics that show it.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import { fetchAll } from '../harness/http.js'
import { pushManifest } from '../harness/images.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { cachedBlobPath, startStack } from '../harness/stack.js'
import { freePort, sleep, requireTools, tempDir, waitFor } from '../harness/tools.js'

// The log line is written once the answer is out, so a client may see the answer first.
async function lastLog(mirror: Mirror, tag: string, count: number): Promise<Record<string, unknown> | undefined> {
  const lines = (): Array<Record<string, unknown>> => mirror.logs().filter((l) => l['msg'] === 'request' && l['tag'] === tag)
  await waitFor(async () => lines().length >= count, 5000, `${count} log lines for ${tag}`)
  return lines().at(-1)
}
const tagLines = (mirror: Mirror, tag: string): number => mirror.logs().filter((l) => l['msg'] === 'request' && l['tag'] === tag).length

function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = Object.fromEntries((m[2] ?? '').split(',').filter(Boolean).map((kv) => {
      const [k, v] = kv.split('=')
      return [k, (v ?? '').replace(/^"|"$/g, '')]
    }))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3])
  }
  return total
}

t.test('tags: stale-while-revalidate, maximum stale age, remembered 404s, single flight', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t, { cache: { tagTtl: '1s', maxStaleAge: '3s', notFoundTtl: '1h' } })
  const base = `${s.mirror.url}/v2/${s.repo}`

  await t.test('20 concurrent misses of one tag make one HEAD and one GET', async (t) => {
    s.registry.resetRequests()
    const answers = await Promise.all(Array.from({ length: 20 }, () => fetchAll(`${base}/manifests/oci`)))
    t.ok(answers.every((a) => a.status === 200 && a.body.equals(s.oci.manifest)))
    await s.registry.settle()
    t.equal(s.registry.count('HEAD', '/manifests/oci'), 1, 'one HEAD')
    t.equal(s.registry.count('GET', '/manifests/'), 1, 'one GET')
  })

  await t.test('past the TTL: the cached answer at once, one background HEAD, then the new digest', async (t) => {
    // Move the tag upstream: `oci` now points at the Docker image's manifest.
    await pushManifest(s.registry, s.repo, 'oci', s.docker.manifest, s.docker.mediaType)
    await sleep(1100)
    s.registry.resetRequests()
    const n = tagLines(s.mirror, 'oci')
    const answers = await Promise.all(Array.from({ length: 10 }, () => fetchAll(`${base}/manifests/oci`)))
    await lastLog(s.mirror, 'oci', n + 10)
    const lines = s.mirror.logs().filter((l) => l['msg'] === 'request' && l['tag'] === 'oci').slice(n)
    // Ten clients at once are not at once on a loaded machine: the background HEAD may
    // land between two of them. Each answer is then the old digest served stale, or the
    // new one as a hit; none waited for the upstream.
    t.ok(lines.every((l) => (l['cache'] === 'stale' && l['digest'] === s.oci.digest) || (l['cache'] === 'hit' && l['digest'] === s.docker.digest)), `stale old or fresh new only: ${lines.map((l) => l['cache']).join(', ')}`)
    t.ok(lines.some((l) => l['cache'] === 'stale'), 'the first answers were stale')
    t.ok(answers.some((a) => a.headers['docker-content-digest'] === s.oci.digest), 'served the cached (old) digest')
    await waitFor(async () => (await fetchAll(`${base}/manifests/oci`)).headers['docker-content-digest'] === s.docker.digest, 5000, 'the background HEAD updated the tag')
    await s.registry.settle()
    t.equal(s.registry.count('HEAD', '/manifests/oci'), 1, 'one background HEAD for ten stale answers')
  })

  await t.test('past the maximum stale age: revalidated before answering', async (t) => {
    await pushManifest(s.registry, s.repo, 'oci', s.oci.manifest, s.oci.mediaType)
    await sleep(3200)
    let n = tagLines(s.mirror, 'oci')
    const a = await fetchAll(`${base}/manifests/oci`)
    t.equal(a.headers['docker-content-digest'], s.oci.digest, 'the new digest, not the stale one')
    t.equal((await lastLog(s.mirror, 'oci', n + 1))?.['cache'], 'miss', 'answered after asking the upstream')
    await sleep(3200)
    n = tagLines(s.mirror, 'oci')
    await fetchAll(`${base}/manifests/oci`)
    t.equal((await lastLog(s.mirror, 'oci', n + 1))?.['cache'], 'revalidated', 'same digest confirmed: revalidated')
  })

  await t.test('an upstream 404 for a tag is remembered for notFoundTtl', async (t) => {
    s.registry.resetRequests()
    t.equal((await fetchAll(`${base}/manifests/later`)).status, 404)
    t.equal((await fetchAll(`${base}/manifests/later`)).status, 404)
    await s.registry.settle()
    t.equal(s.registry.count('HEAD', '/manifests/later'), 1, 'the second 404 came from memory')
  })
})

// A fake Docker Hub: distribution has no rate limits, so this server plays
// one that announces ratelimit-remaining and answers manifest GETs with 429.
t.test('fake rate-limited upstream: cached tags served, GETs paused until Retry-After, HEADs go on', async (t) => {
  const manifests = [
    Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'),
    Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"v":"2"}}'),
  ]
  const digest = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`
  let current = manifests[0] as Buffer
  let limited = false
  const seen: string[] = []
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    const headers = { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': limited ? '0;w=21600' : '42;w=21600' }
    if (req.url === '/v2/' || req.url === '/v2') {
      res.writeHead(200, headers).end('{}')
      return
    }
    const byDigest = req.url?.includes('/manifests/sha256:') === true
    if (req.method === 'GET' && limited) {
      res.writeHead(429, { ...headers, 'retry-after': '3600', 'content-type': 'application/json' }).end('{"errors":[{"code":"TOOMANYREQUESTS"}]}')
      return
    }
    const body = byDigest ? manifests.find((m) => req.url?.endsWith(digest(m))) : current
    if (body === undefined) {
      res.writeHead(404, headers).end()
      return
    }
    res.writeHead(200, { ...headers, 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': String(body.length), 'docker-content-digest': digest(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const host = `127.0.0.1:${port}`
  const cacheRoot = join(await tempDir(t, 'stevedore-ratelimit'), 'cache')
  const mirror = await startMirror(t, {
    config: { storage: { filesystem: { root: cacheRoot } }, upstreams: { [host]: { url: `http://${host}` } }, defaultUpstream: host, cache: { tagTtl: '1s', maxStaleAge: '1s' } },
  })
  const url = `${mirror.url}/v2/lib/app/manifests/latest`
  t.equal((await fetchAll(url)).headers['docker-content-digest'], digest(manifests[0] as Buffer), 'cached while the upstream is healthy')
  let metrics = (await fetchAll(`${mirror.url}/metrics`)).body.toString()
  t.equal(metric(metrics, 'stevedore_upstream_ratelimit_remaining', { upstream: host }), 42, 'ratelimit-remaining exported')

  // The tag moves, and the upstream is out of pulls.
  current = manifests[1] as Buffer
  limited = true
  await sleep(1100)
  const n = tagLines(mirror, 'latest')
  const a = await fetchAll(url)
  t.equal(a.status, 200, 'the pull is not failed by the rate limit')
  t.equal(a.headers['docker-content-digest'], digest(manifests[0] as Buffer), 'the cached tag is served')
  t.equal((await lastLog(mirror, 'latest', n + 1))?.['cache'], 'stale')
  const getsAfterLimit = seen.filter((l) => l.startsWith('GET') && l.includes('/manifests/')).length
  await sleep(1100)
  for (let i = 0; i < 3; i++) t.equal((await fetchAll(url)).status, 200)
  t.equal(seen.filter((l) => l.startsWith('GET') && l.includes('/manifests/')).length, getsAfterLimit, 'no manifest GET while paused')
  t.ok(seen.filter((l) => l.startsWith('HEAD')).length >= 2, 'revalidation HEADs go on')
  metrics = (await fetchAll(`${mirror.url}/metrics`)).body.toString()
  t.equal(metric(metrics, 'stevedore_upstream_ratelimit_remaining', { upstream: host }), 0)
  const miss = await fetchAll(`${mirror.url}/v2/lib/other/manifests/latest`)
  t.equal(miss.status, 429, 'an uncached tag answers 429 while paused')
  t.equal((JSON.parse(miss.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS')
})

t.test('metrics move, health and readiness answer', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t)
  const before = (await fetchAll(`${s.mirror.url}/metrics`)).body.toString()
  const layer = s.oci.layers[0]
  if (layer === undefined) throw new Error('no layer')
  await fetchAll(`${s.mirror.url}/v2/${s.repo}/manifests/oci`)
  await fetchAll(`${s.mirror.url}/v2/${s.repo}/manifests/oci`)
  await fetchAll(`${s.mirror.url}/v2/${s.repo}/blobs/${layer.digest}`)
  await waitFor(async () => existsSync(cachedBlobPath(s.cacheRoot, layer.digest)), 5000, 'blob published')
  await fetchAll(`${s.mirror.url}/v2/${s.repo}/blobs/${layer.digest}`)
  await sleep(100)
  const m = await fetchAll(`${s.mirror.url}/metrics`)
  t.equal(m.status, 200)
  t.match(String(m.headers['content-type']), /^text\/plain/)
  const after = m.body.toString()
  const moved = (name: string, labels: Record<string, string> = {}): number => metric(after, name, labels) - metric(before, name, labels)
  t.equal(moved('stevedore_cache_results_total', { kind: 'manifest', result: 'miss' }), 1)
  t.equal(moved('stevedore_cache_results_total', { kind: 'manifest', result: 'hit' }), 1)
  t.equal(moved('stevedore_cache_results_total', { kind: 'blob', result: 'miss' }), 1)
  t.equal(moved('stevedore_cache_results_total', { kind: 'blob', result: 'hit' }), 1)
  t.equal(moved('stevedore_bytes_served_total', { source: 'upstream' }), layer.size, 'bytes from a fill')
  t.equal(moved('stevedore_bytes_served_total', { source: 'cache' }), layer.size + s.oci.manifest.length * 2, 'bytes from the cache')
  t.ok(moved('stevedore_upstream_requests_total', { upstream: s.registry.host }) >= 3, 'upstream requests counted')
  t.ok(moved('stevedore_upstream_request_duration_seconds_count', { upstream: s.registry.host }) >= 3, 'upstream latency observed')
  t.equal(moved('stevedore_blob_fills_total', { outcome: 'published' }), 1)
  t.equal(metric(after, 'stevedore_blob_fills_in_progress'), 0)
  t.ok(moved('stevedore_time_to_first_byte_seconds_count', { kind: 'blob' }) >= 2, 'time to first byte observed')
  t.ok(moved('stevedore_request_duration_seconds_count', { kind: 'blob' }) >= 2, 'total time observed')
  t.ok(moved('stevedore_http_requests_total', { route: 'manifest', status: '200' }) >= 2, 'requests by route and status')
  t.ok(metric(after, 'stevedore_cache_size_bytes') >= layer.size, 'cache size exported without a quota')

  t.equal((await fetchAll(`${s.mirror.url}/healthz`)).status, 200)
  t.equal((await fetchAll(`${s.mirror.url}/readyz`)).status, 200)
  // Make the cache unwritable (root ignores permissions: put a file where the temp folder was).
  await rm(join(s.cacheRoot, 'tmp'), { recursive: true, force: true })
  await writeFile(join(s.cacheRoot, 'tmp'), 'not a folder')
  t.equal((await fetchAll(`${s.mirror.url}/readyz`)).status, 503, 'not ready when storage is not writable')
  t.equal((await fetchAll(`${s.mirror.url}/healthz`)).status, 200, 'but still alive')
})
