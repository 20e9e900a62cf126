// The OCI distribution API as served by the mirror, against a real
// distribution registry seeded with OCI and Docker images, an OCI index and a
// Docker manifest list.
import { existsSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { request } from 'undici'
import { cachedBlobPath, startStack } from '../harness/stack.js'
import { requireTools, sleep, waitFor } from '../harness/tools.js'

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'PUT' | 'DELETE' | 'POST' = 'GET') {
  const res = await request(url, { method, headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

t.test('mirror API against a real distribution registry', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t, { cache: { tagTtl: '1h' } })
  const base = `${s.mirror.url}/v2/${s.repo}`
  const upstreamKey = encodeURIComponent(s.registry.host)

  await t.test('GET /v2/ answers 200 {} with the API version header, never 401', async (t) => {
    const r = await get(`${s.mirror.url}/v2/`)
    t.equal(r.status, 200)
    t.equal(r.body.toString(), '{}')
    t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0')
    t.equal((await get(`${s.mirror.url}/v2/`, {}, 'HEAD')).status, 200)
  })

  await t.test('manifests by tag keep the upstream bytes and media type, for every type', async (t) => {
    for (const [tag, m] of [['oci', s.oci], ['docker', s.docker], ['index', s.index], ['list', s.list]] as const) {
      const r = await get(`${base}/manifests/${tag}?ns=${upstreamKey}`)
      t.equal(r.status, 200, `${tag}: 200`)
      t.ok(r.body.equals(m.manifest), `${tag}: exact bytes`)
      t.equal(r.headers['content-type'], m.mediaType, `${tag}: media type`)
      t.equal(r.headers['docker-content-digest'], m.digest, `${tag}: digest`)
      t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0')
      t.equal(r.headers['oci-namespace'], s.registry.host, 'echoes the namespace it routed to')
      const h = await get(`${base}/manifests/${tag}`, {}, 'HEAD')
      t.equal(h.status, 200, `${tag}: HEAD 200`)
      t.equal(h.headers['docker-content-digest'], m.digest, `${tag}: HEAD carries the digest`)
      t.equal(h.headers['content-length'], String(m.manifest.length), `${tag}: HEAD carries the length`)
      t.equal(h.body.length, 0, `${tag}: HEAD has no body`)
      const d = await get(`${base}/manifests/${m.digest}`)
      t.ok(d.body.equals(m.manifest), `${tag}: by digest, exact bytes`)
    }
  })

  await t.test('a tag within its TTL is answered without asking the upstream', async (t) => {
    s.registry.resetRequests()
    for (let i = 0; i < 5; i++) t.equal((await get(`${base}/manifests/oci`)).status, 200)
    await s.registry.settle()
    t.equal(s.registry.count('*', '/manifests/'), 0, 'no upstream manifest request')
    await s.mirror.settle()
    const log = s.mirror.logs().filter((l) => l['msg'] === 'request' && l['tag'] === 'oci').at(-1)
    t.equal(log?.['cache'], 'hit')
  })

  await t.test('blobs: GET, HEAD, Range, 416, from a fill and from disk', async (t) => {
    const layer = s.oci.layers[0]
    if (layer === undefined) throw new Error('no layer')
    const want = await readFile(layer.path)
    s.registry.resetRequests()
    const head = await get(`${base}/blobs/${layer.digest}`, {}, 'HEAD')
    t.equal(head.status, 200, 'HEAD on a miss')
    t.equal(head.headers['content-length'], String(layer.size))
    await s.registry.settle()
    t.equal(s.registry.count('HEAD', `/blobs/${layer.digest}`), 1, 'a HEAD on a miss asks the upstream (never a false 404)')
    t.notOk(existsSync(cachedBlobPath(s.cacheRoot, layer.digest)), 'a HEAD does not fill the cache')

    const ranged = await get(`${base}/blobs/${layer.digest}`, { range: 'bytes=100-' })
    t.equal(ranged.status, 206, 'a range on a miss is served from the fill')
    t.equal(ranged.headers['content-range'], `bytes 100-${layer.size - 1}/${layer.size}`)
    t.ok(ranged.body.equals(want.subarray(100)), 'range bytes from the fill')
    await waitFor(async () => existsSync(cachedBlobPath(s.cacheRoot, layer.digest)), 10_000, 'blob cached')

    const full = await get(`${base}/blobs/${layer.digest}`)
    t.equal(full.status, 200)
    t.equal(sha(full.body), layer.digest, 'full body hashes to the digest')
    t.equal(full.headers['content-type'], 'application/octet-stream')
    t.equal(full.headers['accept-ranges'], 'bytes')
    t.equal(full.headers['docker-content-digest'], layer.digest)
    t.equal(full.headers['content-length'], String(layer.size))
    await s.registry.settle()
    t.equal(s.registry.count('GET', `/blobs/${layer.digest}`), 1, 'one upstream GET in all')

    const mid = await get(`${base}/blobs/${layer.digest}`, { range: 'bytes=10-19' })
    t.equal(mid.status, 206)
    t.ok(mid.body.equals(want.subarray(10, 20)))
    const suffix = await get(`${base}/blobs/${layer.digest}`, { range: 'bytes=-5' })
    t.ok(suffix.body.equals(want.subarray(want.length - 5)), 'suffix range')
    const bad = await get(`${base}/blobs/${layer.digest}`, { range: `bytes=${layer.size}-` })
    t.equal(bad.status, 416)
    t.equal(bad.headers['content-range'], `bytes */${layer.size}`)
    const multi = await get(`${base}/blobs/${layer.digest}`, { range: 'bytes=0-1,5-6' })
    t.equal(multi.status, 200, 'multi-range gets the whole blob')
    t.equal(multi.body.length, layer.size)
  })

  await t.test('tags/list passes through with its query', async (t) => {
    s.registry.resetRequests()
    const r = await get(`${base}/tags/list?n=2&last=a&ns=${upstreamKey}`)
    t.equal(r.status, 200)
    t.equal(r.headers['content-type']?.toString().split(';')[0], 'application/json')
    // distribution 2.8 does not paginate tags; Link rewriting is covered by test/unit/link.test.ts.
    t.same((JSON.parse(r.body.toString()) as { tags: string[] }).tags.sort(), ['docker', 'index', 'list', 'oci'])
    const sent = s.registry.requests().find((q) => q.path.includes('/tags/list'))
    t.match(sent?.path ?? '', /\?(?=.*n=2)(?=.*last=a)/, 'n and last are passed on')
    t.notMatch(sent?.path ?? '', /ns=/, 'ns is ours, not the upstream\'s')
    const prefixed = await get(`${s.mirror.url}/v2/${s.registry.host}/${s.repo}/tags/list`)
    t.equal(prefixed.status, 200, 'host-prefixed names work too')
  })

  await t.test('referrers pass through; an upstream 404 stays 404', async (t) => {
    const r = await get(`${base}/referrers/${s.oci.digest}`)
    t.equal(r.status, 404, 'distribution 2.8 has no referrers API')
    t.equal(r.headers['content-type']?.toString().split(';')[0], 'application/json')
  })

  await t.test('read-only: write methods answer 405 UNSUPPORTED', async (t) => {
    for (const [method, path] of [['PUT', `${base}/manifests/x`], ['DELETE', `${base}/manifests/${s.oci.digest}`], ['POST', `${base}/blobs/uploads/`], ['PUT', `${s.mirror.url}/v2/`]] as const) {
      const r = await get(path, { 'content-type': 'application/octet-stream' }, method)
      t.equal(r.status, 405, `${method} ${path}`)
      t.equal((JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNSUPPORTED')
    }
  })

  await t.test('bad input gets the right 4xx and the spec error body', async (t) => {
    const cases: Array<[string, number, string]> = [
      [`/v2/Team/App/manifests/oci`, 400, 'NAME_INVALID'],
      [`/v2/${s.repo}/manifests/bad:tag:x`, 400, 'DIGEST_INVALID'],
      [`/v2/${s.repo}/manifests/-bad`, 400, 'TAG_INVALID'],
      [`/v2/${s.repo}/blobs/sha256:1234`, 400, 'DIGEST_INVALID'],
      [`/v2/${s.repo}/blobs/md5:${'a'.repeat(32)}`, 400, 'DIGEST_INVALID'],
      [`/v2/${s.repo}/manifests/oci?ns=evil.example.com`, 403, 'DENIED'],
      [`/v2/evil.example.com/x/manifests/oci`, 403, 'DENIED'],
      [`/v2/169.254.169.254/latest/manifests/x`, 403, 'DENIED'],
      [`/v2/${s.repo}/manifests/nope`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/${s.repo}/manifests/sha256:${'0'.repeat(64)}`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/${s.repo}/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
      [`/v2/nosuch/repo/tags/list`, 404, 'NAME_UNKNOWN'],
    ]
    for (const [path, status, code] of cases) {
      const r = await get(`${s.mirror.url}${path}`)
      t.equal(r.status, status, `${path} → ${status}`)
      t.equal(r.headers['content-type']?.toString().split(';')[0], 'application/json', `${path}: JSON`)
      t.equal((JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, code, `${path} → ${code}`)
    }
    const head = await get(`${s.mirror.url}/v2/${s.repo}/blobs/sha256:${'0'.repeat(64)}`, {}, 'HEAD')
    t.equal(head.status, 404, 'HEAD of an unknown blob: 404')
  })

  await t.test('one JSON log line per request with upstream, digest, cache result and bytes', async (t) => {
    const layer = s.oci.layers[0]
    if (layer === undefined) throw new Error('no layer')
    await get(`${base}/blobs/${layer.digest}`)
    await sleep(100)
    await s.mirror.settle()
    const line = s.mirror.logs().filter((l) => l['msg'] === 'request' && l['digest'] === layer.digest && l['method'] === 'GET').at(-1)
    t.ok(line, 'found the line')
    t.equal(line?.['upstream'], s.registry.host)
    t.equal(line?.['repository'], s.repo)
    t.equal(line?.['cache'], 'hit')
    t.equal(line?.['bytes'], layer.size)
    t.equal(line?.['status'], 200)
    t.type(line?.['ms'], 'number')
    t.equal(line?.['level'], 30, 'info')
  })
})
