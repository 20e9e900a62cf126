// S3 next to the filesystem backend: `npx tsx bench/s3-vs-fs.ts` after
// `npm run build` (add `--quick` for a 20 MB blob).
//
// On loopback: one distribution upstream holding a 200 MB random blob, an
// S3 endpoint (s3rver, which stores objects as files through a Koa app:
// a stand-in for S3's API, not for its speed), and three Stevedore
// processes: filesystem backend, S3 backend, S3 with `redirect: true`.
// For each: one cold GET (an upstream fill) and three warm ones, with
// `curl -o /dev/null -w '%{time_total}'`; one more warm GET is hashed.
// "stored" is from the cold GET's start until the blob is in the store
// (the object listed, the file there; polled every 25 ms): the client has its
// last byte before the upload completes. "peak RSS" is the mirror process's
// VmHWM after the cold fill: what the fill's part buffers cost.
// Then two replicas on one bucket pull an image one after the other, and
// the upstream's access log says what the second one cost.
import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import { access, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Scope } from './scope.js'
import { buildImage, pushBlob, pushImage, randomBytesFile, MT } from '../test/harness/images.js'
import { startMirror, type Mirror } from '../test/harness/mirror.js'
import { startRegistry, type Registry } from '../test/harness/registry.js'
import { makeTemp, removeDir, run } from '../test/harness/tools.js'
import { s3StorageDocument, startS3, type S3Server } from '../test/storage/s3-helpers.js'

const QUICK = process.argv.includes('--quick')
const MB = 1_000_000
const SIZE = QUICK ? 20 * MB : 200 * MB
const WARM_ROUNDS = 3

interface Timing {
  seconds: number
  bytes: number
  status: number
}

async function curl(url: string, follow = false): Promise<Timing> {
  const r = await run('curl', ['-sS', '--noproxy', '*', ...(follow ? ['-L'] : []), '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', url], { timeoutMs: 600_000 })
  const [status, bytes, seconds] = r.stdout.trim().split(' ').map(Number)
  if (r.code !== 0) throw new Error(`curl ${url}: ${r.stderr}`)
  return { status: status ?? 0, bytes: bytes ?? 0, seconds: seconds ?? NaN }
}

/** sha256 of a GET body, streamed through curl (follows redirects). */
async function hashOf(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '-L', '--noproxy', '*', url], { stdio: ['ignore', 'pipe', 'inherit'] })
    const hash = createHash('sha256')
    child.stdout.on('data', (b: Buffer) => hash.update(b))
    child.once('error', reject)
    child.once('close', () => resolve(`sha256:${hash.digest('hex')}`))
  })
}

const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b)
  return v[Math.floor(v.length / 2)] ?? NaN
}

const rate = (bytes: number, seconds: number): string => `${(bytes / MB / seconds).toFixed(0)} MB/s`

/** Peak resident memory of a process (VmHWM), in MB. */
async function peakRss(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : (Number(m[1]) * 1024) / MB
}

/** Seconds until stored() holds, polled every 25 ms, at most two minutes. */
async function secondsUntil(stored: () => Promise<boolean>, started: number): Promise<number> {
  while (!(await stored())) {
    if (Date.now() - started > 120_000) return NaN
    await new Promise((r) => setTimeout(r, 25))
  }
  return (Date.now() - started) / 1000
}

function mirrorConfig(registry: Registry, storage: Record<string, unknown>): Record<string, unknown> {
  return { storage, upstreams: { [registry.host]: { url: registry.url } }, defaultUpstream: registry.host, log: { level: 'warn' } }
}

async function throughput(scope: Scope, registry: Registry, s3: S3Server, work: string): Promise<void> {
  const path = join(work, 'blob')
  const digest = await randomBytesFile(path, SIZE)
  await pushBlob(registry, 'bench/blob', path, digest)
  const hex = digest.slice('sha256:'.length)
  const inBucket = (prefix: string) => async (): Promise<boolean> => (await s3.objects(`${prefix}blobs/`)).has(`${prefix}blobs/sha256/${hex}`)
  const onDisk = async (): Promise<boolean> => access(join(work, 'fs-cache', 'blobs', 'sha256', hex.slice(0, 2), hex)).then(() => true, () => false)
  const systems: Array<{ name: string; storage: Record<string, unknown>; follow: boolean; stored: () => Promise<boolean> }> = [
    { name: 'filesystem', storage: { filesystem: { root: join(work, 'fs-cache') } }, follow: false, stored: onDisk },
    { name: 's3', storage: { s3: s3StorageDocument(s3, { prefix: 'plain/', spoolDir: join(work, 'spool-plain') }) }, follow: false, stored: inBucket('plain/') },
    { name: 's3 + redirect', storage: { s3: s3StorageDocument(s3, { prefix: 'redirect/', redirect: true, spoolDir: join(work, 'spool-redirect') }) }, follow: true, stored: inBucket('redirect/') },
  ]
  const rows: string[] = []
  for (const sys of systems) {
    const mirror = await startMirror(scope.asTest(), { config: mirrorConfig(registry, sys.storage) })
    const url = `${mirror.url}/v2/bench/blob/blobs/${digest}`
    const started = Date.now()
    const [cold, storedAfter] = await Promise.all([curl(url), secondsUntil(sys.stored, started)])
    if (cold.status !== 200 || cold.bytes !== SIZE) throw new Error(`${sys.name} cold: ${cold.status} ${cold.bytes}`)
    // Settle before timing hits (a fill in progress would be joined, not hit).
    await new Promise((r) => setTimeout(r, 500))
    const rss = await peakRss(mirror.pid())
    const warm: number[] = []
    for (let i = 0; i < WARM_ROUNDS; i++) {
      const w = await curl(url, sys.follow)
      if (w.status !== 200 || w.bytes !== SIZE) throw new Error(`${sys.name} warm: ${w.status} ${w.bytes}`)
      warm.push(w.seconds)
    }
    const hashed = await hashOf(url)
    if (hashed !== digest) throw new Error(`${sys.name}: warm GET hashed to ${hashed}`)
    const w = median(warm)
    rows.push(`| ${sys.name.padEnd(13)} | ${cold.seconds.toFixed(2)} s (${rate(SIZE, cold.seconds)}) | ${storedAfter.toFixed(2)} s | ${rss.toFixed(0)} MB | ${w.toFixed(2)} s (${rate(SIZE, w)}) |`)
    await mirror.stop()
  }
  process.stdout.write(`\n${SIZE / MB} MB blob, one client, curl time_total (warm: median of ${WARM_ROUNDS}); upstream on loopback\n\n`)
  process.stdout.write('| backend       | cold (fill)          | stored  | peak RSS | warm (cache hit)     |\n|---------------|----------------------|---------|----------|----------------------|\n')
  process.stdout.write(`${rows.join('\n')}\n`)
}

async function replicas(scope: Scope, registry: Registry, s3: S3Server, work: string): Promise<void> {
  const image = await buildImage(join(work, 'image'), { layers: QUICK ? [5 * MB, 3 * MB, 1 * MB] : [50 * MB, 30 * MB, 10 * MB] })
  await pushImage(registry, 'bench/app', 'v1', image)
  const start = (name: string): Promise<Mirror> => startMirror(scope.asTest(), {
    config: mirrorConfig(registry, { s3: s3StorageDocument(s3, { prefix: 'shared/', spoolDir: join(work, `spool-${name}`) }) }),
  })
  const [one, two] = await Promise.all([start('one'), start('two')])
  const pull = async (m: Mirror): Promise<{ requests: number; bytes: number }> => {
    registry.resetRequests()
    const accept = [MT.ociManifest, MT.dockerManifest].join(', ')
    const r = await run('curl', ['-sS', '--noproxy', '*', '-H', `Accept: ${accept}`, '-o', '/dev/null', '-w', '%{http_code}', `${m.url}/v2/bench/app/manifests/v1`])
    if (r.stdout !== '200') throw new Error(`manifest: ${r.stdout} ${r.stderr}`)
    for (const b of [image.config, ...image.layers]) {
      const got = await hashOf(`${m.url}/v2/bench/app/blobs/${b.digest}`)
      if (got !== b.digest) throw new Error(`blob ${b.digest}: got ${got}`)
    }
    await new Promise((res) => setTimeout(res, 1000))
    const reqs = registry.requests()
    return { requests: reqs.length, bytes: reqs.reduce((n, q) => n + q.size, 0) }
  }
  const first = await pull(one)
  const second = await pull(two)
  const total = image.layers.reduce((n, l) => n + l.size, image.config.size)
  process.stdout.write(`\nTwo replicas on one bucket, one image (${(total / MB).toFixed(0)} MB in ${image.layers.length + 1} blobs + manifest), pulled through one, then the other\n\n`)
  process.stdout.write('| replica          | upstream requests | upstream bytes |\n|------------------|-------------------|----------------|\n')
  process.stdout.write(`| one (cold)       | ${String(first.requests).padEnd(17)} | ${(first.bytes / MB).toFixed(1).padStart(9)} MB   |\n`)
  process.stdout.write(`| two (same bucket)| ${String(second.requests).padEnd(17)} | ${(second.bytes / MB).toFixed(1).padStart(9)} MB   |\n`)
}

async function main(): Promise<void> {
  const scope = new Scope()
  const work = await makeTemp('stevedore-bench-s3')
  scope.teardown(() => removeDir(work))
  try {
    const registry = await startRegistry(scope.asTest())
    const s3 = await startS3(scope.asTest())
    await throughput(scope, registry, s3, work)
    await replicas(scope, registry, s3, work)
  } finally {
    await scope.close()
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
