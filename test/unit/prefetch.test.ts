// Prefetch's pure parts: Docker's reference normalisation, platform choice
// in an index, and the jobs' bounds and order, with a FAKE mirror (WarmDeps
// answered from memory: no registry, no store).
import t from 'tap'
import { loadConfig } from '../../src/config/load.js'
import { ConfigError, validateConfig } from '../../src/config/schema.js'
import { BusyError, Slots } from '../../src/limits/slots.js'
import { RegistryError } from '../../src/oci/errors.js'
import { parseImageReference } from '../../src/oci/reference.js'
import { PrefetchJobs } from '../../src/prefetch/jobs.js'
import { pickPlatform, type PlatformEntry } from '../../src/oci/image-manifest.js'
import type { WarmDeps } from '../../src/prefetch/warm-image.js'
import type { Warming } from '../../src/cache/blobs.js'
import type { UpstreamClient } from '../../src/upstream/client.js'

const D = (c: string): string => `sha256:${c.repeat(64)}`

t.test('image references are normalised as Docker does', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['nginx', 'docker.io/library/nginx:latest'],
    ['nginx:1.27', 'docker.io/library/nginx:1.27'],
    ['user/app', 'docker.io/user/app:latest'],
    ['docker.io/nginx', 'docker.io/library/nginx:latest'],
    ['index.docker.io/library/nginx:1', 'docker.io/library/nginx:1'],
    ['registry-1.docker.io/x/y', 'docker.io/x/y:latest'],
    ['ghcr.io/org/app', 'ghcr.io/org/app:latest'],
    ['GHCR.io/org/app:v1', 'ghcr.io/org/app:v1'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/team/app:v2', 'localhost:5000/team/app:v2'],
    ['127.0.0.1:5000/a/b/c:t', '127.0.0.1:5000/a/b/c:t'],
    [`nginx@${D('a')}`, `docker.io/library/nginx@${D('a')}`],
    [`ghcr.io/org/app:v1@${D('b')}`, `ghcr.io/org/app:v1@${D('b')}`],
    ['  nginx  ', 'docker.io/library/nginx:latest'],
    ['', undefined],
    ['Nginx', undefined],
    ['nginx:', undefined],
    ['nginx@sha256:abc', undefined],
    ['ghcr.io/', undefined],
    ['a b', undefined],
    ['nginx:-bad', undefined],
  ]
  for (const [input, want] of cases) t.equal(parseImageReference(input)?.text, want, JSON.stringify(input))
  const pinned = parseImageReference(`ghcr.io/org/app:v1@${D('b')}`)
  t.equal(pinned?.pullReference, D('b'), 'a digest wins over a tag for pulling')
  t.equal(pinned?.registry, 'ghcr.io')
  t.equal(pinned?.repository, 'org/app')
})

t.test('an index entry is picked per platform as containerd does', async (t) => {
  const entries: PlatformEntry[] = [
    { digest: D('1'), size: 1, platform: 'linux/amd64' },
    { digest: D('2'), size: 1, platform: 'linux/arm64/v8' },
    { digest: D('4'), size: 1, platform: 'linux/arm/v6' },
    { digest: D('3'), size: 1, platform: 'linux/arm/v7' },
    { digest: D('5'), size: 1, platform: 'unknown/unknown' },
  ]
  t.equal(pickPlatform(entries, 'linux/amd64')?.digest, D('1'))
  t.equal(pickPlatform(entries, 'linux/arm64')?.digest, D('2'), 'arm64 without a variant matches v8')
  t.equal(pickPlatform(entries, 'linux/arm64/v8')?.digest, D('2'))
  t.equal(pickPlatform(entries, 'linux/arm/v6')?.digest, D('4'))
  t.equal(pickPlatform(entries, 'linux/arm')?.digest, D('3'), 'no variant asked (as Node objects say it): v7, containerd\'s default, though v6 comes first')
  t.equal(pickPlatform([{ digest: D('7'), size: 1, platform: 'linux/arm64/v9' }, { digest: D('8'), size: 1, platform: 'linux/arm64' }], 'linux/arm64')?.digest, D('8'), 'arm64: no variant beats another than v8')
  t.equal(pickPlatform(entries, 'linux/s390x'), undefined)
  t.equal(pickPlatform([{ digest: D('6'), size: 1, platform: 'linux/arm64' }], 'linux/arm64/v8')?.digest, D('6'), 'v8 asked, entry without a variant')
})

/** A FAKE mirror: one single-platform image per reference, blobs that take `blobMs` to fill. */
function fakeDeps(opts: { blobMs?: number; busyFirst?: number } = {}) {
  const started: string[] = []
  let busy = opts.busyFirst ?? 0
  const manifest = (layer: string): Buffer => Buffer.from(JSON.stringify({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { digest: D('c'), size: 10 },
    layers: [{ digest: layer, size: 100 }],
  }))
  const deps: WarmDeps = {
    route: (ref) => {
      if (ref.registry !== 'docker.io') throw new RegistryError('DENIED', `registry "${ref.registry}" is not mirrored here`)
      return { client: {} as UpstreamClient, repository: ref.repository }
    },
    manifest: async (target) => ({ digest: D('m'), mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: manifest(D(target.repository.endsWith('b') ? 'b' : 'a')) }),
    warmBlob: async (target): Promise<Warming> => {
      if (busy > 0) {
        busy--
        throw new BusyError('UNAVAILABLE', 'too many blob fills at once')
      }
      started.push(`${target.repository} ${target.digest.slice(7, 8)}`)
      const done = new Promise<void>((resolve) => setTimeout(resolve, opts.blobMs ?? 0))
      return { cache: 'miss', size: undefined, bytes: () => 0, done }
    },
    readSmallBlob: async () => Buffer.from('{"os":"linux","architecture":"amd64"}'),
    blobSlots: new Slots({ what: 'prefetched blobs', key: 'prefetch.blobs', capacity: 4, queue: 1000, timeoutMs: 60_000 }),
    sleep: async () => undefined,
  }
  return { deps, started }
}

t.test('jobs: bounded in number (oldest finished forgotten first) and in images', async (t) => {
  const { deps } = fakeDeps({ blobMs: 50 })
  const jobs = new PrefetchJobs(deps, { maxJobs: 2, maxImagesPerJob: 3, imageConcurrency: 2, platforms: ['linux/amd64'] })
  t.throws(() => jobs.submit({ images: ['a', 'b', 'c', 'd'] }), { status: 400, message: /at most 3 images/ })
  const first = jobs.submit({ images: ['a'] })
  const second = jobs.submit({ images: ['b'] })
  t.throws(() => jobs.submit({ images: ['c'] }), BusyError, 'every kept job still runs: 503')
  const done = await first.done
  t.equal(done.state, 'done')
  t.same(done.images[0]?.platforms, ['linux/amd64'], 'from the config')
  const third = jobs.submit({ images: ['c'] })
  t.equal(jobs.get(first.id), undefined, 'the oldest finished job is forgotten')
  t.ok(jobs.get(second.id))
  await Promise.all([second.done, third.done])
})

t.test('jobs: refused images finish at once; client jobs go before low-priority re-warming', async (t) => {
  const { deps, started } = fakeDeps({ blobMs: 20 })
  const jobs = new PrefetchJobs(deps, { maxJobs: 10, maxImagesPerJob: 10, imageConcurrency: 1, platforms: ['linux/amd64'] })
  const refused = await jobs.submit({ images: ['quay.io/x/y:1', 'NOT VALID'] }).done
  t.equal(refused.state, 'failed')
  t.same(refused.images.map((i) => i.state), ['refused', 'refused'])
  const low = jobs.submit({ images: ['low/a', 'low/b'], priority: 'low' })
  const normal = jobs.submit({ images: ['high/b'] })
  await Promise.all([low.done, normal.done])
  t.same(started.map((s) => s.split(' ')[0]), ['low/a', 'low/a', 'high/b', 'high/b', 'low/b', 'low/b'], 'the client job ran before the second low-priority image')
})

t.test('jobs: a fill limit that is full is waited out, not failed', async (t) => {
  const { deps } = fakeDeps({ busyFirst: 3 })
  const jobs = new PrefetchJobs(deps, { maxJobs: 10, maxImagesPerJob: 10, imageConcurrency: 1, platforms: ['linux/amd64'] })
  const status = await jobs.submit({ images: ['app/a'] }).done
  t.equal(status.state, 'done')
  t.equal(status.images[0]?.layers.fetched, 2)
})

t.test('config: prefetch, prewarm and prepull keys, and the one environment switch', async (t) => {
  const base = { upstreams: { 'a.io': { url: 'https://a.io' } } }
  const c = validateConfig(base)
  t.same(c.prefetch, { platforms: ['linux/amd64', 'linux/arm64'], maxJobs: 100, maxImagesPerJob: 256, imageConcurrency: 8 })
  t.same(c.prewarm, { kubernetes: { enabled: false, existing: true } })
  t.same(c.prepull, { images: [] })
  t.equal(validateConfig({ ...base, prefetch: { blobs: 4, images: 2 } }).prefetch.blobConcurrency, 4)
  t.throws(() => validateConfig({ ...base, prefetch: { platforms: ['linux'] } }), { message: /prefetch\.platforms\[0\]: must be a platform/ })
  t.throws(() => validateConfig({ ...base, prefetch: { platforms: [] } }), ConfigError)
  t.throws(() => validateConfig({ ...base, prepull: { images: ['ok/image:1', 'Bad Ref'] } }), { message: /prepull\.images: "Bad Ref" is not an image reference/ })
  t.throws(() => validateConfig({ ...base, prewarm: { kubernetes: { namespaces: ['Not_A_Namespace'] } } }), ConfigError)
  t.throws(() => validateConfig({ ...base, prewarm: { kubernetes: { enable: true } } }), { message: /prewarm\.kubernetes\.enable/ }, 'a misspelt key stops start-up')
  t.equal(loadConfig({ env: { STEVEDORE_PREWARM_KUBERNETES: 'true' } }).prewarm.kubernetes.enabled, true, 'STEVEDORE_PREWARM_KUBERNETES turns it on')
  t.equal(loadConfig({ env: {} }).prewarm.kubernetes.enabled, false)
  t.throws(() => loadConfig({ env: { STEVEDORE_PREWARM_KUBERNETES: 'yes' } }), { message: /STEVEDORE_PREWARM_KUBERNETES: must be true or false/ })
})

t.test('jobs: low-priority re-warming holds at most half the jobs; shutdown settles every job', async (t) => {
  const { deps } = fakeDeps({ blobMs: 200 })
  const jobs = new PrefetchJobs(deps, { maxJobs: 4, maxImagesPerJob: 10, imageConcurrency: 1, platforms: ['linux/amd64'] })
  const low1 = jobs.submit({ images: ['low/a'], priority: 'low' })
  const low2 = jobs.submit({ images: ['low/b'], priority: 'low' })
  t.throws(() => jobs.submit({ images: ['low/c'], priority: 'low' }), BusyError, 'a third low-priority job waits')
  const client = jobs.submit({ images: ['client/a'] })
  jobs.stop()
  const [s1, s2, s3] = await Promise.all([low1.done, low2.done, client.done])
  t.equal(s1.state, 'failed', 'the running image fails once its blobs under way end')
  for (const s of [s2, s3]) {
    t.equal(s.state, 'failed')
    t.equal(s.images[0]?.error, 'the mirror is shutting down', 'a queued image fails at once')
  }
  t.throws(() => jobs.submit({ images: ['x'] }), { message: /shutting down/ })
})

t.test('submitPatiently waits for the store and for room among the jobs', async (t) => {
  const { submitPatiently } = await import('../../src/prefetch/submit-patiently.js')
  const { deps } = fakeDeps({ blobMs: 30 })
  const jobs = new PrefetchJobs(deps, { maxJobs: 1, maxImagesPerJob: 10, imageConcurrency: 1, platforms: ['linux/amd64'] })
  const blocking = jobs.submit({ images: ['first/a'] })
  let ready = false
  setTimeout(() => (ready = true), 30)
  const status = await submitPatiently(jobs, { images: ['second/a'] }, () => ready, 10)
  t.equal((await blocking.done).state, 'done')
  t.equal(status.state, 'done', 'submitted once the store was ready and the first job had ended')
})
