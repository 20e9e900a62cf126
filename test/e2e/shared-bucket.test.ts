// Two Stevedore processes on one S3 bucket (s3rver) in front of one real
// registry: each serves what the other cached, containerd pulls through
// either, and both filling one blob at once end with one correct object.
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { startContainerd, writeHostsToml } from '../harness/containerd.js'
import { fetchHashed } from '../harness/http.js'
import { buildImage, pushBlob, pushImage, randomBytesFile } from '../harness/images.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { requireTools, tempDir, waitFor } from '../harness/tools.js'
import { S3_KEY, s3StorageDocument, startS3 } from '../storage/s3-helpers.js'
import { startThrottle } from '../storage/throttle.js'

const MB = 1024 * 1024

t.test('two replicas share one bucket', async (t) => {
  if (!requireTools(t, 'docker-registry', 'containerd', 'ctr')) return
  const work = await tempDir(t, 'stevedore-replicas')
  const registry = await startRegistry(t)
  const throttle = await startThrottle(t, { host: '127.0.0.1', port: registry.port }, 1024 * MB)
  const s3 = await startS3(t)
  const replica = async (name: string): Promise<Mirror> => startMirror(t, {
    config: {
      storage: { s3: s3StorageDocument(s3, { prefix: 'shared/', spoolDir: join(work, `spool-${name}`) }) },
      // Routed by the registry's own host name (containerd's ?ns=), reached through the throttle.
      upstreams: { [registry.host]: { url: throttle.url } },
      defaultUpstream: registry.host,
    },
  })
  const [one, two] = await Promise.all([replica('one'), replica('two')])

  const repo = 'replicas/app'
  const image = await buildImage(join(work, 'image'), { layers: [3 * MB, 2 * MB] })
  await pushImage(registry, repo, 'v1', image)
  registry.resetRequests()
  const blobs = [image.config, ...image.layers]

  await t.test('containerd pulls through one replica, then through the other with no upstream blob GET', async (t) => {
    const ctrd = await startContainerd(t)
    const ref = `${registry.host}/${repo}:v1`
    const hostsOne = join(work, 'hosts-one')
    const hostsTwo = join(work, 'hosts-two')
    await writeHostsToml(hostsOne, registry.host, registry.url, one.url)
    await writeHostsToml(hostsTwo, registry.host, registry.url, two.url)

    const first = await ctrd.pull(ref, { hostsDir: hostsOne, plainHttp: true })
    t.equal(first.code, 0, `pull through replica one: ${first.stderr.slice(-300)}`)
    const coldRequests = registry.requests().length
    for (const b of blobs) t.equal(registry.count('GET', `/blobs/${b.digest}`), 1, `${b.digest.slice(7, 19)} fetched once`)
    for (const b of blobs) {
      await waitFor(async () => (await s3.objects('shared/blobs/')).has(`shared/blobs/sha256/${b.digest.slice(7)}`), 10_000, 'published to S3')
    }

    registry.resetRequests()
    await ctrd.clean()
    const second = await ctrd.pull(ref, { hostsDir: hostsTwo, plainHttp: true })
    t.equal(second.code, 0, `pull through replica two: ${second.stderr.slice(-300)}`)
    const warm = registry.requests()
    t.same(warm.filter((r) => r.path.includes('/blobs/')), [], 'replica two fetched no blob from the upstream')
    t.comment(`upstream requests: ${coldRequests} for the first pull (replica one), ${warm.length} for the second (replica two)`)
    t.equal(warm.length, 0, 'nor anything else: the tag and manifest came from the bucket too')
    const blobLines = (): Array<Record<string, unknown>> => two.logs().filter((l) => l['msg'] === 'request' && String(l['ua']).startsWith('containerd/') && String(l['path']).includes('/blobs/'))
    await waitFor(async () => blobLines().length >= blobs.length, 5000, 'request log lines for every blob')
    const served = blobLines()
    t.ok(served.length >= blobs.length && served.every((l) => l['cache'] === 'hit' && l['status'] === 200), 'replica two answered every blob as a cache hit')
    t.equal(registry.requests().filter((r) => r.userAgent.startsWith('containerd/')).length, 0, 'containerd never went to the upstream itself')
  })

  await t.test('a blob cached by one replica is served by the other without an upstream GET', async (t) => {
    const path = join(work, 'direct')
    const digest = await randomBytesFile(path, 5 * MB)
    await pushBlob(registry, repo, path, digest)
    registry.resetRequests()
    t.equal((await fetchHashed(`${one.url}/v2/${repo}/blobs/${digest}`)).digest, digest, 'replica one fills it')
    await waitFor(async () => (await s3.objects('shared/blobs/')).has(`shared/blobs/sha256/${digest.slice(7)}`), 10_000, 'published')
    t.equal(registry.count('GET', `/blobs/${digest}`), 1)
    const viaTwo = await fetchHashed(`${two.url}/v2/${repo}/blobs/${digest}`)
    t.equal(viaTwo.digest, digest, 'replica two serves the right bytes')
    t.equal(registry.count('GET', `/blobs/${digest}`), 1, 'with no upstream GET (counted in the registry access log)')
    // The request line is written once the response has gone out: wait for it.
    await waitFor(async () => two.logs().some((l) => l['msg'] === 'request' && l['digest'] === digest), 5000, 'the request log line')
    t.equal(two.logs().filter((l) => l['msg'] === 'request' && l['digest'] === digest).at(-1)?.['cache'], 'hit', 'logged as a hit')
  })

  await t.test('both replicas filling one blob at once end with one correct object', async (t) => {
    const path = join(work, 'race')
    const size = 48 * MB
    const digest = await randomBytesFile(path, size)
    await pushBlob(registry, repo, path, digest)
    registry.resetRequests()
    throttle.rate = 16 * MB // ~3 s per fill: the two overlap for sure
    const [a, b] = await Promise.all([one, two].map((m) => fetchHashed(`${m.url}/v2/${repo}/blobs/${digest}`)))
    throttle.rate = 1024 * MB
    t.equal(a?.digest, digest, 'replica one served the right bytes')
    t.equal(b?.digest, digest, 'replica two served the right bytes')
    const fills = registry.count('GET', `/blobs/${digest}`)
    t.ok(fills >= 1 && fills <= 2, `each replica fills on its own (${fills} upstream GETs): single-flight is per process`)
    const key = `shared/blobs/sha256/${digest.slice(7)}`
    await waitFor(async () => (await s3.objects('shared/blobs/')).get(key) === size, 10_000, 'published')
    // s3rver writes a completed multipart object in place (real S3 swaps it atomically):
    // read it only once neither replica is still completing its own upload.
    const fillsIdle = async (m: Mirror): Promise<boolean> => /\nstevedore_blob_fills_in_progress 0\n/.test(`\n${await (await fetch(`${m.url}/metrics`)).text()}`)
    await waitFor(async () => (await fillsIdle(one)) && (await fillsIdle(two)), 30_000, 'both replicas done with their fills')
    const objects = await s3.objects('shared/')
    t.same([...objects.keys()].filter((k) => (k.includes(digest.slice(7)) && !k.startsWith('shared/docs/scopes/')) || k.startsWith('shared/uploads/')), [key], 'one object under the digest, no staged leftovers')
    const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_KEY } })
    t.teardown(() => client.destroy())
    const out = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }))
    const hash = createHash('sha256')
    for await (const chunk of out.Body as AsyncIterable<Uint8Array>) hash.update(chunk)
    t.equal(`sha256:${hash.digest('hex')}`, digest, 'and its bytes hash to the digest')
    for (const m of [one, two]) t.equal((await fetchHashed(`${m.url}/v2/${repo}/blobs/${digest}`)).digest, digest, 'both serve it from the bucket now')
    t.equal(registry.count('GET', `/blobs/${digest}`), fills, 'with no further upstream GET')
  })
})
