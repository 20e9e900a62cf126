// Replicas that share the fetching: an owner per digest (rendezvous hashing
// over the live members), misses forwarded to it, one upstream GET between
// them. Real parts: docker-registry upstream behind a throttle, s3rver as
// the shared bucket (a recording proxy per replica shows who writes), the
// mirrors as real processes.
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import t, { type Test } from 'tap'
import { signPeerRequest } from '../../src/cluster/peer-auth.js'
import { ownerOf } from '../../src/cluster/ring.js'
import { PEER_REFUSED_HEADER, peerBlobPath } from '../../src/cluster/paths.js'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { pushBlob, randomBytesFile } from '../harness/images.js'
import { startMirror } from '../harness/mirror.js'
import { startRegistry, type Registry } from '../harness/registry.js'
import { metricOf, startReplicas } from '../harness/replicas.js'
import { freePort, requireTools, tempDir, waitFor } from '../harness/tools.js'
import { S3_KEY, s3StorageDocument, startS3, startS3Proxy, type S3Proxy, type S3Server } from '../storage/s3-helpers.js'
import { startThrottle, type Throttle } from '../storage/throttle.js'

const MB = 1024 * 1024

interface Upstream {
  registry: Registry
  throttle: Throttle
  digest: string
  size: number
}

async function upstream(tt: Test, repo: string, size: number, rate: number): Promise<Upstream> {
  const dir = await tempDir(tt, 'stevedore-replicas-blob')
  const registry = await startRegistry(tt)
  const path = join(dir, 'blob')
  const digest = await randomBytesFile(path, size)
  await pushBlob(registry, repo, path, digest)
  registry.resetRequests()
  const throttle = await startThrottle(tt, { host: '127.0.0.1', port: registry.port }, rate)
  return { registry, throttle, digest, size }
}

function upstreamConfig(u: Upstream): Record<string, unknown> {
  return { upstreams: { 'registry.test': { url: u.throttle.url } }, defaultUpstream: 'registry.test' }
}

/** Storage for replica i on the shared bucket, through its own recording proxy, with its own spool. */
async function sharedBucket(tt: Test, s3: S3Server, count: number): Promise<{ proxies: S3Proxy[]; storage: (i: number) => Record<string, unknown> }> {
  const proxies: S3Proxy[] = []
  const spools: string[] = []
  for (let i = 0; i < count; i++) {
    proxies.push(await startS3Proxy(tt, s3.endpoint))
    spools.push(await tempDir(tt, `stevedore-spool-${i}`))
  }
  return { proxies, storage: (i) => ({ s3: s3StorageDocument(s3, { prefix: 'shared/', endpoint: (proxies[i] as S3Proxy).endpoint, spoolDir: spools[i] as string }) }) }
}

/** Writes of the blob's object (multipart or single PUT) that a replica's proxy saw. */
function blobWrites(proxy: S3Proxy, digest: string): number {
  // The object itself (a PutObject or a multipart upload of it), not the documents that name it.
  const key = `/shared/blobs/${digest.replace(':', '/')}`
  return proxy.requests.filter((r) => (r.method === 'PUT' || r.method === 'POST') && r.url.includes(key)).length
}

async function storedDigest(s3: S3Server, digest: string): Promise<string | undefined> {
  const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_KEY } })
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `shared/blobs/${digest.replace(':', '/')}` }))
    const hash = createHash('sha256')
    for await (const chunk of out.Body as AsyncIterable<Buffer>) hash.update(chunk)
    return `sha256:${hash.digest('hex')}`
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return undefined
    throw err
  } finally {
    client.destroy()
  }
}

t.test('three replicas on one bucket, thirty clients on one cold 100 MB blob: one upstream GET, every client correct, only the owner writes', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const u = await upstream(t, 'fan/out', 100 * MB, 100 * MB)
  const s3 = await startS3(t)
  const bucket = await sharedBucket(t, s3, 3)
  const r = await startReplicas(t, { count: 3, config: (i) => ({ storage: bucket.storage(i), ...upstreamConfig(u) }) })
  const owner = r.owner(u.digest)
  const clients = Array.from({ length: 30 }, (_, i) => fetchHashed(`${(r.mirrors[i % 3])?.url}/v2/fan/out/blobs/${u.digest}`))
  const answers = await Promise.all(clients)
  t.ok(answers.every((a) => a.status === 200 && a.error === undefined && a.bytes === u.size && a.digest === u.digest), 'all thirty clients got every byte, verified')
  await u.registry.settle()
  const gets = u.registry.requests().filter((q) => q.method === 'GET' && q.path.includes(`/blobs/${u.digest}`))
  t.equal(gets.length, 1, 'exactly one upstream GET of the blob')
  t.equal(gets[0]?.size, u.size, 'and it was the whole blob')
  for (const [i, m] of r.mirrors.entries()) {
    const forwarded = await metricOf(m, 'stevedore_cluster_forwards_total', 'outcome="forwarded"')
    t.equal(forwarded, m === owner ? 0 : 1, `replica ${i} (${m === owner ? 'owner' : 'asker'}) forwarded ${forwarded} fill(s)`)
    t.equal(blobWrites(bucket.proxies[i] as S3Proxy, u.digest) > 0, m === owner, `replica ${i} ${m === owner ? 'wrote' : 'did not write'} the object`)
  }
  t.equal(await metricOf(owner, 'stevedore_cluster_peer_requests_total'), 2, 'the owner served each asker once')
  // Clients get their last byte once the digest is checked, while the upload completes: read it once the fill is over.
  await waitFor(async () => (await metricOf(owner, 'stevedore_blob_fills_in_progress')) === 0, 10_000, 'the owner\'s fill to end')
  t.equal(await storedDigest(s3, u.digest), u.digest, 'the bucket holds the verified blob')
  // The owner's log line for a peer is one line per request, as for any other.
  await owner.settle()
  const peerLines = owner.logs().filter((l) => l['msg'] === 'request' && String(l['path']).startsWith('/_stevedore/peer/blobs/'))
  t.equal(peerLines.length, 2, 'one log line per peer request')
})

t.test('kill -9 the owner mid-fill: its askers finish their clients from the upstream, nothing corrupt is stored', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const u = await upstream(t, 'owner/dies', 40 * MB, 8 * MB)
  const s3 = await startS3(t)
  const bucket = await sharedBucket(t, s3, 3)
  const r = await startReplicas(t, { count: 3, config: (i) => ({ storage: bucket.storage(i), ...upstreamConfig(u) }) })
  const owner = r.owner(u.digest)
  const askers = r.askers(u.digest)
  const clients = askers.flatMap((m) => Array.from({ length: 4 }, () => fetchHashed(`${m.url}/v2/owner/dies/blobs/${u.digest}`)))
  await waitFor(async () => (await metricOf(owner, 'stevedore_upstream_bytes_total')) > 12 * MB, 20_000, 'the owner 12 MiB into its fill')
  await owner.stop('SIGKILL')
  u.throttle.rate = 1024 * MB
  const answers = await Promise.all(clients)
  t.ok(answers.every((a) => a.status === 200 && a.error === undefined && a.bytes === u.size && a.digest === u.digest), `all ${answers.length} clients of the askers got every byte, verified`)
  for (const m of askers) t.equal(await metricOf(m, 'stevedore_cluster_forwards_total', 'outcome="mid_stream"'), 1, 'the asker resumed from the upstream once')
  await u.registry.settle()
  const ranged = u.registry.requests().filter((q) => q.method === 'GET' && q.path.includes(`/blobs/${u.digest}`) && q.size < u.size)
  t.ok(ranged.length >= 2, `the upstream was asked for the rest (${ranged.map((q) => q.size).join(', ')} bytes), not the whole blob again`)
  t.equal(await storedDigest(s3, u.digest), undefined, 'nothing is stored: the owner died before publishing, the askers do not write')
  // With the owner gone from the ring, the next miss has a new owner, which stores the blob.
  const again = await fetchHashed(`${askers[0]?.url}/v2/owner/dies/blobs/${u.digest}`)
  t.equal(again.digest, u.digest, 'served again after the owner left')
  await waitFor(async () => (await storedDigest(s3, u.digest)) === u.digest, 15_000, 'the new owner stored the verified blob')
})

t.test('a replica with a wrong secret is refused, and serves its clients from the upstream itself', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const u = await upstream(t, 'wrong/secret', 4 * MB, 1024 * MB)
  const s3 = await startS3(t)
  const bucket = await sharedBucket(t, s3, 3)
  const r = await startReplicas(t, { count: 2, config: (i) => ({ storage: bucket.storage(i), ...upstreamConfig(u) }) })
  const dir = await tempDir(t, 'stevedore-wrong-secret')
  const wrongFile = join(dir, 'secret')
  await writeFile(wrongFile, 'not the secret the others share\n')
  const port = await freePort()
  const self = `http://127.0.0.1:${port}`
  const rogue = await startMirror(t, {
    port,
    config: { storage: bucket.storage(2), ...upstreamConfig(u), cluster: { peers: [...r.urls, self], self, secretFile: wrongFile, healthInterval: '250ms' } },
  })
  await waitFor(async () => (await metricOf(r.mirrors[0]!, 'stevedore_cluster_peer_requests_total', 'result="refused"')) > 0, 10_000, 'its health checks refused')
  t.equal(await metricOf(rogue, 'stevedore_cluster_members', 'state="live"'), 1, 'the others never join its ring: it is alone')
  const served = await fetchHashed(`${rogue.url}/v2/wrong/secret/blobs/${u.digest}`)
  t.equal(served.digest, u.digest, 'its client is served, from the upstream')
  t.equal(await metricOf(rogue, 'stevedore_cluster_forwards_total'), 0, 'nothing was forwarded')
  // Its upload completes after its client's last byte (s3rver writes the object in place): the owner reads it once whole.
  await waitFor(async () => (await metricOf(rogue, 'stevedore_blob_fills_in_progress')) === 0, 10_000, 'the rogue\'s fill to end')

  const owner = r.mirrors[0]!
  const path = peerBlobPath({ upstream: 'registry.test', repository: 'wrong/secret', digest: u.digest })
  const cases: Array<[string, Record<string, string>]> = [
    ['no signature', {}],
    ['a wrong secret', signPeerRequest(Buffer.from('not the secret the others share'), 'GET', path)],
    ['a signature 61 s old', signPeerRequest(Buffer.from('a shared secret of thirty-two bytes'), 'GET', path, Date.now() - 61_000)],
    ['a signature of another path', signPeerRequest(Buffer.from('a shared secret of thirty-two bytes'), 'GET', `${path}x`)],
  ]
  for (const [what, headers] of cases) {
    const res = await fetchAll(`${owner.url}${path}`, { headers })
    t.equal(res.status, 403, `${what}: 403`)
    t.equal((JSON.parse(res.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED', `${what}: DENIED, the spec's body`)
    t.ok(res.headers[PEER_REFUSED_HEADER] !== undefined, `${what}: marked as a peer refusal`)
  }
  const good = await fetchHashed(`${owner.url}${path}`, { headers: signPeerRequest(Buffer.from('a shared secret of thirty-two bytes'), 'GET', path) })
  t.equal(good.digest, u.digest, 'the right secret is served')
})

t.test('per-replica disks: the asker keeps what it served', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const u = await upstream(t, 'own/disks', 8 * MB, 1024 * MB)
  const roots = [await tempDir(t, 'stevedore-disk-0'), await tempDir(t, 'stevedore-disk-1')]
  const r = await startReplicas(t, { count: 2, config: (i) => ({ storage: { filesystem: { root: roots[i] } }, ...upstreamConfig(u) }) })
  const [asker] = r.askers(u.digest)
  const first = await fetchHashed(`${asker?.url}/v2/own/disks/blobs/${u.digest}`)
  t.equal(first.digest, u.digest, 'served through the owner')
  t.equal(await metricOf(asker!, 'stevedore_cluster_forwards_total', 'outcome="forwarded"'), 1, 'forwarded')
  await r.owner(u.digest).stop()
  await u.registry.stop()
  const second = await fetchHashed(`${asker?.url}/v2/own/disks/blobs/${u.digest}`)
  t.equal(second.digest, u.digest, 'a hit on its own disk with the owner and the upstream gone')
  await u.registry.start()
})

t.test('an owner gone before the asker notices: the upstream serves, and the asker stores the blob, as nobody else will', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const u = await upstream(t, 'owner/gone', 4 * MB, 1024 * MB)
  const s3 = await startS3(t)
  const bucket = await sharedBucket(t, s3, 2)
  // Health checks far apart: the asker learns the owner is gone from its own failed request, not from a probe.
  // The owner starts first, so the asker's first probe (the only one in this test) finds it live;
  // the owner keeps the short interval to see the asker come up.
  const r = await startReplicas(t, { count: 2, config: (i) => ({ storage: bucket.storage(i), ...upstreamConfig(u) }), ownerFirst: u.digest, cluster: (i, urls) => (urls[i] === ownerOf(u.digest, urls) ? {} : { healthInterval: '60s' }) })
  const owner = r.owner(u.digest)
  const [asker] = r.askers(u.digest)
  await owner.stop('SIGKILL')
  const served = await fetchHashed(`${asker!.url}/v2/owner/gone/blobs/${u.digest}`)
  t.equal(served.digest, u.digest, 'its client is served, from the upstream')
  t.equal(await metricOf(asker!, 'stevedore_cluster_forwards_total', 'outcome="unreachable"'), 1, 'the owner could not be reached')
  await waitFor(async () => (await metricOf(asker!, 'stevedore_blob_fills_in_progress')) === 0, 10_000, 'the asker\'s fill to end')
  t.equal(await storedDigest(s3, u.digest), u.digest, 'the bucket holds the verified blob: fetched from the upstream, the asker wrote it')
  t.equal(await metricOf(asker!, 'stevedore_cluster_members', 'state="live"'), 1, 'the owner left its ring on the refused connection')
})

t.test('fills forwarded both ways with every fill slot taken: no replica waits on another for a slot', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const dir = await tempDir(t, 'stevedore-replicas-blobs')
  const registry = await startRegistry(t)
  const digests: string[] = []
  for (let i = 0; i < 8; i++) {
    const path = join(dir, `blob-${i}`)
    const digest = await randomBytesFile(path, 2 * MB)
    await pushBlob(registry, 'both/ways', path, digest)
    digests.push(digest)
  }
  // Slow enough that both forwarded fills hold their replica's one slot while the owners' fills start.
  const throttle = await startThrottle(t, { host: '127.0.0.1', port: registry.port }, 2 * MB)
  const r = await startReplicas(t, {
    count: 2,
    config: () => ({ upstreams: { 'registry.test': { url: throttle.url } }, defaultUpstream: 'registry.test', limits: { fills: 1, fillsReservedForPulls: 0, queueTimeout: '30s' } }),
  })
  const [a, b] = r.mirrors as [typeof r.mirrors[0], typeof r.mirrors[0]]
  const ofA = digests.find((d) => r.owner(d) === a)
  const ofB = digests.find((d) => r.owner(d) === b)
  if (ofA === undefined || ofB === undefined) throw new Error('eight random digests, all owned by one replica')
  registry.resetRequests()
  const started = Date.now()
  // Each replica's client asks for the blob the other owns, at once.
  const [one, two] = await Promise.all([fetchHashed(`${a.url}/v2/both/ways/blobs/${ofB}`), fetchHashed(`${b.url}/v2/both/ways/blobs/${ofA}`)])
  const ms = Date.now() - started
  t.equal(one.digest, ofB, 'the client of A got its blob')
  t.equal(two.digest, ofA, 'the client of B got its blob')
  for (const m of [a, b]) {
    t.equal(await metricOf(m, 'stevedore_cluster_forwards_total', 'outcome="forwarded"'), 1, 'forwarded to the owner')
    t.equal(await metricOf(m, 'stevedore_cluster_forwards_total', 'outcome="owner_error"'), 0, 'which answered, not a 503 after the queue timeout')
  }
  await registry.settle()
  t.equal(registry.requests().filter((q) => q.method === 'GET' && q.path.includes('/blobs/')).length, 2, 'one upstream GET per blob')
  t.ok(ms < 30_000, `both served before any queue timeout (${ms} ms)`)
})
