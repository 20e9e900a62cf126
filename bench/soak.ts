// `npm run soak [-- --quick] [--minutes N]`: mixed load against the real
// upstream (distribution) for 30 minutes (quick: 2): containerd pulls, cold
// and warm, through a plain mirror and one that asks for credentials; blob
// GETs, verified; strangers refused; slow readers served; stopped readers
// dropped; an upstream cut at byte N and answering 429 (the fault injector,
// test/harness/fault-proxy.ts); the plain mirror restarted with SIGTERM and
// kill -9 throughout. At the end: every cached blob re-hashed, RSS and open
// fds as a series (the locked mirror is never restarted: its series must be
// flat), every count. Exit 1 on any problem. Everything listens on 127.0.0.1.
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Scope } from './scope.js'
import { memoryOf } from './systems.js'
import { blobGets, containerdPulls, restarts, slowReaders, stoppedReaders, Tally, upstreamFaults, type SoakRig } from './soak-load.js'
import { startContainerd, writeHostsToml } from '../test/harness/containerd.js'
import { startFaultProxy } from '../test/harness/fault-proxy.js'
import { pushBlob, randomBytesFile } from '../test/harness/images.js'
import { cleanEnv, REPO_ROOT, startMirror, type Mirror } from '../test/harness/mirror.js'
import { startRegistry } from '../test/harness/registry.js'
import { makeTemp, removeDir, runOk, sleep, which } from '../test/harness/tools.js'

const MB = 1024 * 1024
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const minutesArg = args.indexOf('--minutes')
const minutes = minutesArg >= 0 ? Number(args[minutesArg + 1]) : quick ? 2 : 30
if (!Number.isFinite(minutes) || minutes <= 0) throw new Error('--minutes: a positive number')
const WRITE_TIMEOUT_MS = 5000

const log = (text: string): void => void process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${text}\n`)

interface Sample {
  readonly s: number
  readonly openRss?: number
  readonly openFds?: number
  readonly lockedRss: number
  readonly lockedFds: number
}

async function fds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

async function sampleOf(rig: SoakRig, started: number): Promise<Sample | undefined> {
  const lockedPid = rig.locked.pid()
  if (lockedPid === undefined) return undefined
  const openPid = rig.restarting ? undefined : rig.open.pid()
  const open = openPid === undefined ? undefined : await Promise.all([memoryOf(openPid), fds(openPid)]).catch(() => undefined)
  const [locked, lockedFds] = await Promise.all([memoryOf(lockedPid), fds(lockedPid)])
  return {
    s: Math.round((Date.now() - started) / 1000),
    ...(open !== undefined ? { openRss: open[0].rss, openFds: open[1] } : {}),
    lockedRss: locked.rss,
    lockedFds,
  }
}

/** Every blob file in a cache, hashed against its name. */
async function rehash(cacheRoot: string, tally: Tally, name: string): Promise<number> {
  const base = join(cacheRoot, 'blobs', 'sha256')
  let n = 0
  for (const prefix of await readdir(base).catch(() => [] as string[])) {
    for (const hex of await readdir(join(base, prefix))) {
      const hash = createHash('sha256')
      for await (const chunk of createReadStream(join(base, prefix, hex))) hash.update(chunk as Buffer)
      if (hash.digest('hex') === hex) n++
      else tally.problem(`${name}: cached blob ${hex} does not hash to its name`)
    }
  }
  return n
}

const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? NaN
}

async function main(): Promise<number> {
  for (const tool of ['docker-registry', 'containerd', 'ctr', 'curl', 'htpasswd']) if (which(tool) === null) throw new Error(`soak: ${tool} is needed`)
  const scope = new Scope()
  // Stopped early: everything it started is stopped too, by pid, through the scope.
  const stop = (): void => void scope.close().finally(() => process.exit(130))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  const tally = new Tally()
  const work = await makeTemp('stevedore-soak')
  scope.teardown(() => removeDir(work))
  try {
    const registry = await startRegistry(scope.asTest())
    const faults = await startFaultProxy(scope.asTest(), registry.url)
    const blobs: string[] = []
    for (let i = 0; i < (quick ? 4 : 12); i++) {
      const path = join(work, `blob-${i}`)
      const digest = await randomBytesFile(path, (quick ? 256 * 1024 : MB) * (i + 1))
      await pushBlob(registry, 'soak/blob', path, digest)
      blobs.push(digest)
    }
    const bigSize = quick ? 40 * MB : 200 * MB
    const bigPath = join(work, 'big')
    const big = await randomBytesFile(bigPath, bigSize)
    await pushBlob(registry, 'soak/blob', bigPath, big)

    const htpasswd = join(work, 'htpasswd')
    await runOk('htpasswd', ['-B', '-b', '-c', htpasswd, 'node-agent', 'soak-secret'])
    const authorization = `Basic ${Buffer.from('node-agent:soak-secret').toString('base64')}`
    const upstreams = { [registry.host]: { url: registry.url }, [faults.host]: { url: faults.url } }
    const common = { upstreams, defaultUpstream: registry.host, limits: { writeTimeout: `${WRITE_TIMEOUT_MS}ms` }, timeouts: { shutdown: '5s', read: '10s' } }
    const openRoot = join(work, 'cache-open')
    const lockedRoot = join(work, 'cache-locked')
    const open = await startMirror(scope.asTest(), { config: { ...common, storage: { filesystem: { root: openRoot } } } })
    const locked = await startMirror(scope.asTest(), { config: { ...common, storage: { filesystem: { root: lockedRoot } }, auth: { htpasswd } } })

    const containerd = await startContainerd(scope.asTest())
    const hostsOpen = join(work, 'hosts-open')
    await writeHostsToml(hostsOpen, registry.host, registry.url, open.url)
    // The locked mirror's hosts.toml as the node agent writes it: with the header.
    const hostsLocked = join(work, 'hosts-locked')
    const authFile = join(work, 'node-auth')
    await writeFile(authFile, 'node-agent:soak-secret\n')
    await runOk(process.execPath, [join(REPO_ROOT, 'dist', 'cli.js'), 'hosts', '--mirror', locked.url, '--dir', hostsLocked, '--config', locked.configPath, '--auth-file', authFile, '--registry', registry.host], { env: cleanEnv() })

    const started = Date.now()
    const rig: SoakRig = {
      work, registry, faults, open, locked, authorization, containerd, hostsOpen, hostsLocked, blobs, big, tally,
      deadline: started + minutes * 60_000, restarting: false, quick,
    }
    log(`soak: ${minutes} min; upstream ${registry.url}, faulty ${faults.url}; mirrors ${open.url} (plain, restarted) and ${locked.url} (credentials)`)
    const samples: Sample[] = []
    const sampler = (async () => {
      while (Date.now() < rig.deadline) {
        const s = await sampleOf(rig, started).catch(() => undefined)
        if (s !== undefined) samples.push(s)
        await sleep(quick ? 2000 : 10_000)
      }
    })()
    const progress = setInterval(() => log([...tally.counts].map(([k, v]) => `${k}: ${v}`).join('; ')), quick ? 30_000 : 120_000)
    await Promise.all([
      containerdPulls(rig),
      blobGets(rig),
      slowReaders(rig),
      stoppedReaders(rig, WRITE_TIMEOUT_MS, bigSize),
      upstreamFaults(rig),
      restarts(rig, quick ? 30_000 : 90_000),
      sampler,
    ])
    clearInterval(progress)

    // Writes after the last byte (renames, access times) settle before the caches are read.
    await Promise.all([open.settle(500), locked.settle(500)])
    await sleep(2000)
    const hashed = (await rehash(openRoot, tally, 'plain')) + (await rehash(lockedRoot, tally, 'locked'))
    // containerd goes to the registry itself only when the mirror fails it: while the plain one restarts.
    const direct = registry.requests().filter((r) => r.userAgent.startsWith('containerd') && r.path.includes('/manifests/')).length
    tally.add('deliberate: containerd manifest requests that fell back to the registry itself', direct)
    const servedLocked = locked.logs().filter((l) => String(l['ua']).startsWith('containerd/') && String(l['path']).includes('/manifests/') && l['status'] === 200).length
    tally.add('containerd manifest requests the locked mirror let in and served', servedLocked)
    // A pull that fell back to the registry would pass too: each pull through the locked mirror must show there.
    const lockedPulls = [...tally.counts].filter(([k]) => k.startsWith('containerd pull through the locked')).reduce((n, [, v]) => n + v, 0)
    if (servedLocked < lockedPulls) tally.problem(`the locked mirror served containerd ${servedLocked} manifests for ${lockedPulls} pulls: some went to the registry itself`)
    const refusedContainerd = locked.logs().filter((l) => String(l['ua']).startsWith('containerd/') && l['status'] === 401).length
    if (refusedContainerd > 0) tally.problem(`the locked mirror refused containerd ${refusedContainerd} times`)
    if (hashed === 0) tally.problem('no cached blob to re-hash')
    const crashes = [open, locked].flatMap((m: Mirror) => m.logs().filter((l) => l['msg'] === 'unhandled rejection'))
    if (crashes.length > 0) tally.problem(`${crashes.length} unhandled rejections logged`)
    if (locked.exitStatus() !== null) tally.problem(`the locked mirror exited: ${JSON.stringify(locked.exitStatus())}`)

    const mib = (b: number | undefined): string => (b === undefined ? '-' : (b / MB).toFixed(0))
    log('series: s, plain RSS MiB, plain fds, locked RSS MiB, locked fds')
    for (const s of samples) process.stdout.write(`  ${String(s.s).padStart(5)} ${mib(s.openRss).padStart(5)} ${String(s.openFds ?? '-').padStart(5)} ${mib(s.lockedRss).padStart(5)} ${String(s.lockedFds).padStart(5)}\n`)
    // Flat: the locked mirror's last quarter against its second (the first is warm-up).
    const quarter = Math.max(1, Math.floor(samples.length / 4))
    const early = samples.slice(quarter, 2 * quarter)
    const late = samples.slice(-quarter)
    const rssRatio = median(late.map((s) => s.lockedRss)) / median(early.map((s) => s.lockedRss))
    const fdRatio = median(late.map((s) => s.lockedFds)) / median(early.map((s) => s.lockedFds))
    log(`locked mirror, last quarter / second quarter: RSS ×${rssRatio.toFixed(2)}, fds ×${fdRatio.toFixed(2)} (peak RSS ${mib(Math.max(...samples.map((s) => s.lockedRss)))} MiB)`)
    if (!(rssRatio < 1.5)) tally.problem(`the locked mirror's RSS grew ×${rssRatio.toFixed(2)}`)
    if (!(fdRatio < 1.5)) tally.problem(`the locked mirror's open fds grew ×${fdRatio.toFixed(2)}`)
    log(`cached blobs re-hashed: ${hashed}, all correct unless listed below`)
    log('counts:')
    for (const [what, n] of [...tally.counts].sort()) process.stdout.write(`  ${String(n).padStart(6)}  ${what}\n`)
    for (const p of tally.problems) process.stdout.write(`  PROBLEM: ${p}\n`)
    log(tally.problems.length === 0 ? 'soak: no problems' : `soak: ${tally.counts.get('problem')} problem(s)`)
    return tally.problems.length === 0 ? 0 : 1
  } finally {
    await scope.close()
  }
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  },
)
