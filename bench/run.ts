// Stevedore's bench: `npm run bench` (full) or `npm run bench -- --quick`
// (small sizes, short runs: checks that every system answers correctly, not
// how fast; .ci/run calls it). See bench/README.md.
//
// On loopback it starts: an upstream distribution seeded with images built
// here; a pacing proxy modelling a 100 MB/s WAN link in front of it; and the
// three systems, each once straight on the upstream and once behind the
// link: Stevedore, distribution in proxy mode, nginx (a proxy_cache with
// proxy_cache_lock, and a plain sendfile server over the upstream's files).
// Then it measures, prints one table and writes the raw figures as JSON.
import { createReadStream } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { request } from 'undici'
import { checkFanOut, fanOut, wrk, type ClientResult, type FanOutResult, type WrkResult } from './clients.js'
import { startNginx } from './nginx.js'
import { startPacer } from './pacer.js'
import { replicas } from './replicas.js'
import { rollout } from './rollout.js'
import { Scope } from './scope.js'
import { stalledReaders, type StalledResult } from './stalled.js'
import { cpuSeconds, machineBusySeconds, memoryOf, sampleMemory, startDistributionProxy, startStevedore, threadCpuDelta, threadCpuSeconds } from './systems.js'
import { SYSTEMS, col, fmt, fmtRatio, maxOf, median, ratio, walls, type FanRound, type Row, type SystemKey } from './table.js'
import { coldPathRows, loadRecorded, regressionRows, type CurrentFigures } from './targets.js'
import { sha256SecondsPerGB } from './hash-floor.js'
import { startContainerd, writeHostsToml } from '../test/harness/containerd.js'
import { buildImage, MT, pushImage } from '../test/harness/images.js'
import { startRegistry, type Registry } from '../test/harness/registry.js'
import { errMessage, freePort, makeTemp, removeDir, sha256, sleep, which } from '../test/harness/tools.js'

// ------------------------------------------------------------------ parameters

const MB = 1_000_000
const SECTIONS = ['cold', 'warm', 'rss', 'stalled', 'manifests', 'paced', 'containerd', 'rollout', 'replicas'] as const
type Section = (typeof SECTIONS)[number]

const USAGE = `usage: npm run bench [-- --quick] [--only SECTION,...] [--rounds N] [--cpu-prof DIR] [--stalled-hold S]
  --quick       small sizes, short runs, one round: checks answers, not speed (CI)
  --only        run only these sections: ${SECTIONS.join(', ')}
  --rounds N    rounds per wall-time figure (default 3, quick 1)
  --cpu-prof D  run Stevedore with --cpu-prof, profiles in D (one per Stevedore process)
  --stalled-hold S  keep the stalled readers S seconds after the fetches under load (default 5, quick 2)`

interface Args {
  quick: boolean
  only: Set<Section>
  rounds?: number
  cpuProf?: string
  stalledHoldS?: number
}

function parseArgs(argv: string[]): Args {
  const out: Args = { quick: false, only: new Set(SECTIONS) }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`)
      return v
    }
    if (a === '--quick') out.quick = true
    else if (a === '--only') {
      const names = value().split(',').filter(Boolean)
      for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`unknown section ${n}\n${USAGE}`)
      out.only = new Set(names as Section[])
    } else if (a === '--rounds') {
      const n = Number(value())
      if (!Number.isInteger(n) || n < 1) throw new Error(`--rounds: a positive integer\n${USAGE}`)
      out.rounds = n
    } else if (a === '--cpu-prof') out.cpuProf = value()
    else if (a === '--stalled-hold') {
      const n = Number(value())
      if (!Number.isFinite(n) || n < 0) throw new Error(`--stalled-hold: seconds, 0 or more\n${USAGE}`)
      out.stalledHoldS = n
    }
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`)
      process.exit(0)
    } else throw new Error(`unknown argument ${a}\n${USAGE}`)
  }
  return out
}

const ARGS = parseArgs(process.argv.slice(2))
const QUICK = ARGS.quick
const run = (s: Section): boolean => ARGS.only.has(s)

const P = QUICK
  ? { blob: 8 * MB, layers: [2 * MB, 2 * MB, 2 * MB, 2 * MB], clients: 20, streams: 50, rounds: 1, peerRounds: 1, wrkSeconds: 1, connections: 32, linkRate: 100 * MB, hashClients: 1000, maxTimeS: 60, settleCapMs: 10_000, stalled: { readers: 60, rate: '2k', settleMs: 3000, holdMs: 2000, fetches: 1 } }
  : { blob: 200 * MB, layers: [100 * MB, 100 * MB, 100 * MB, 100 * MB], clients: 20, streams: 50, rounds: 3, peerRounds: 1, wrkSeconds: 8, connections: 32, linkRate: 100 * MB, hashClients: 1, maxTimeS: 300, settleCapMs: 60_000, stalled: { readers: 300, rate: '2k', settleMs: 15_000, holdMs: 5000, fetches: 3 } }
if (ARGS.rounds !== undefined) P.rounds = ARGS.rounds
if (ARGS.stalledHoldS !== undefined) P.stalled.holdMs = ARGS.stalledHoldS * 1000
// Figures that only give context (no Stevedore target is a ratio to them) and
// take long: distribution behind the link (~45 s a round: its 21 fetches share
// the link) and the peers' containerd pulls. One round each keeps the full
// run under 10 minutes.
P.peerRounds = Math.min(P.peerRounds, P.rounds)

const ACCEPT = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ')

// ------------------------------------------------------------------ helpers

const started = performance.now()
function progress(msg: string): void {
  const s = Math.round((performance.now() - started) / 1000)
  process.stderr.write(`[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}\n`)
}

const problems: string[] = []
function problem(what: string): void {
  problems.push(what)
  progress(`WRONG: ${what}`)
}

const ttfbs = (r: FanOutResult): number[] => r.clients.map((c) => c.ttfb)

const byThread = (t: Record<string, number>): string => Object.entries(t).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')

/** a fan-out, with the CPU the system spent per GB and the machine's busy cores */
interface Measured {
  res: FanOutResult
  cpuPerGB: number
  machineCores: number
}

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  const missing = ['docker-registry', 'nginx', 'wrk', 'curl', 'openssl', 'containerd', 'ctr', 'bash'].filter((t) => which(t) === null)
  if (missing.length > 0) {
    process.stderr.write(`bench: missing tools: ${missing.join(', ')}\n`)
    return 2
  }
  const machine = {
    date: new Date().toISOString(),
    mode: QUICK ? 'quick' : 'full',
    sections: [...ARGS.only].join(','),
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? '?',
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
  }
  progress(`${machine.mode} mode (${machine.sections}); ${machine.cores} cores, ${machine.memGiB} GiB, node ${machine.node}, load ${machine.loadAtStart}`)

  const scope = new Scope()
  try {
    // -------------------------------------------------------------- upstream
    const upstream = await startRegistry(scope.asTest(), {})
    const work = await makeTemp('stevedore-bench')
    scope.teardown(() => removeDir(work))
    progress(`upstream distribution on ${upstream.host}; building and pushing images`)
    const fan = await buildImage(join(work, 'fanout'), { layers: [P.blob] })
    await pushImage(upstream, 'bench/fanout', '1', fan)
    await rm(join(work, 'fanout'), { recursive: true, force: true })
    const blob = fan.layers[0]
    if (blob === undefined) throw new Error('no layer')
    const big = run('containerd') ? await buildImage(join(work, 'big'), { layers: P.layers }) : undefined
    if (big !== undefined) {
      await pushImage(upstream, 'bench/big', '1', big)
      await rm(join(work, 'big'), { recursive: true, force: true })
    }
    const blobPath = (base: string): string => `${base}/v2/bench/fanout/blobs/${blob.digest}`
    const imageBytes = big === undefined ? 0 : big.layers.reduce((a, l) => a + l.size, 0) + big.config.size
    // the upstream's copy in the page cache, as for every later read
    await new Promise<void>((resolve, reject) => {
      const s = createReadStream(upstream.blobDataPath(blob.digest), { highWaterMark: 1 << 20 })
      s.on('data', () => undefined)
      s.on('end', resolve)
      s.on('error', reject)
    })
    progress(`fan-out blob ${blob.digest.slice(0, 19)}… ${blob.size} bytes${big ? `; image bench/big:1 ${imageBytes} bytes in ${big.layers.length} layers` : ''}`)

    // -------------------------------------------------------------- systems
    const pacer = await startPacer({ upstream: upstream.url, bytesPerSecond: P.linkRate, port: await freePort() })
    scope.teardown(() => pacer.close())
    const distD = await startDistributionProxy(scope, upstream.url)
    const distP = await startDistributionProxy(scope, pacer.url)
    const nginx = await startNginx(scope, {
      registryDataDir: upstream.dataDir,
      caches: [
        { name: 'direct', upstream: upstream.url },
        { name: 'paced', upstream: pacer.url },
      ],
    })
    const nginxDirect = nginx.caches.get('direct')
    const nginxPaced = nginx.caches.get('paced')
    if (!nginxDirect || !nginxPaced) throw new Error('nginx caches missing')
    const stvEnv =
      ARGS.cpuProf !== undefined ? { NODE_OPTIONS: `--import=${new URL('./cpu-prof.mjs', import.meta.url).href}`, STEVEDORE_BENCH_CPU_PROF_DIR: resolve(ARGS.cpuProf) } : undefined
    if (ARGS.cpuProf !== undefined) await mkdir(ARGS.cpuProf, { recursive: true })
    const stvD = await startStevedore(scope, 'direct', upstream.host, upstream.url, stvEnv)
    const stvP = await startStevedore(scope, 'paced', upstream.host, pacer.url, stvEnv)
    progress(`pacer ${pacer.url} (${P.linkRate / MB} MB/s); distribution proxies ${distD.url}, ${distP.url} (paced); nginx cache ${nginxDirect.url}, ${nginxPaced.url} (paced), sendfile ${nginx.static.url}; stevedore ${stvD.url}, ${stvP.url} (paced)`)

    const direct: Record<SystemKey, { url: string; reset: () => Promise<void> }> = {
      stevedore: { url: stvD.url, reset: () => stvD.restart({ wipe: true }) },
      distribution: { url: distD.url, reset: () => distD.restart({ wipe: true }) },
      nginx: { url: nginxDirect.url, reset: () => nginx.restart({ wipeCaches: true }) },
    }
    const paced: Record<SystemKey, { url: string; reset: () => Promise<void> }> = {
      stevedore: { url: stvP.url, reset: () => stvP.restart({ wipe: true }) },
      distribution: { url: distP.url, reset: () => distP.restart({ wipe: true }) },
      nginx: { url: nginxPaced.url, reset: () => nginx.restart({ wipeCaches: true }) },
    }
    const pidsOf: Record<SystemKey, () => Promise<number[]>> = {
      stevedore: async () => [stvD.mirror.pid(), stvP.mirror.pid()].filter((p): p is number => p !== undefined),
      distribution: async () => [...(await distD.pids()), ...(await distP.pids())],
      nginx: () => nginx.pids(),
    }
    /** a fan-out of `n` clients, with the CPU time `key`'s processes spent on it */
    const measuredFanOut = async (key: SystemKey, url: string, n: number): Promise<Measured> => {
      const pids = await pidsOf[key]()
      const before = await cpuSeconds(pids)
      const machine0 = await machineBusySeconds()
      const t0 = performance.now()
      const res = await fanOut(url, n, { hashClients: P.hashClients, maxTimeS: P.maxTimeS })
      // over the whole window the machine was measured in (the clients' start and their hashing included)
      const machineCores = ((await machineBusySeconds()) - machine0) / ((performance.now() - t0) / 1000)
      const cpu = (await cpuSeconds(pids)) - before
      return { res, cpuPerGB: cpu / ((n * blob.size) / 1e9), machineCores }
    }
    /** systems (direct) whose cache holds the fan-out blob */
    const cached = new Set<SystemKey>()
    const ensureCached = async (key: SystemKey): Promise<void> => {
      if (cached.has(key)) return
      const res = await fanOut(blobPath(direct[key].url), 1, { hashClients: 1, maxTimeS: P.maxTimeS })
      for (const b of checkFanOut(res, blob.size, blob.digest)) problem(`filling ${key}: ${b}`)
      await settledUpstreamGets(upstream, blob.digest, blob.size)
      cached.add(key)
    }

    /** Full GETs of the blob at the upstream once the traffic for it has stopped (distribution finishes its store copy after the clients). */
    const settledUpstreamGets = async (reg: Registry, digest: string, size: number): Promise<number> => {
      const deadline = Date.now() + P.settleCapMs
      let last = -1
      let stableSince = Date.now()
      for (;;) {
        const n = reg.requests().filter((r) => r.path.includes(digest)).length
        if (n !== last) {
          last = n
          stableSince = Date.now()
        } else if (Date.now() - stableSince >= 1000 || Date.now() > deadline) break
        await sleep(100)
      }
      return reg.requests().filter((r) => r.method === 'GET' && r.path.includes(digest) && r.status === 200 && r.size === size).length
    }
    const settledPacerGets = async (digest: string, size: number): Promise<number> => {
      const deadline = Date.now() + P.settleCapMs
      while (pacer.inflight() > 0 && Date.now() < deadline) await sleep(50)
      return pacer.fullGets(digest, size)
    }

    const fanRound = (m: Measured, fullGets: number, label: string, size: number, digest: string): FanRound => {
      const bad = checkFanOut(m.res, size, digest)
      for (const b of bad) problem(`${label}: ${b}`)
      const t = ttfbs(m.res)
      return { wall: m.res.wall, machineCores: m.machineCores, cpuPerGB: m.cpuPerGB, fullGets, correct: bad.length === 0, ttfbMedian: median(t), ttfbMax: maxOf(t), result: m.res }
    }
    const describe = (r: FanRound): string => `${r.wall.toFixed(2)} s, ${r.fullGets} full upstream GETs, TTFB max ${r.ttfbMax.toFixed(3)} s, ${r.cpuPerGB.toFixed(2)} CPU s/GB${r.correct ? '' : ', WRONG BYTES'}`

    // -------------------------------------------------------------- cold fan-out
    const cold: Record<SystemKey, FanRound[]> = { stevedore: [], distribution: [], nginx: [] }
    const peakRssCold: number[] = []
    if (run('cold')) {
      for (let round = 1; round <= P.rounds; round++) {
        for (const key of SYSTEMS) {
          await direct[key].reset()
          upstream.resetRequests()
          const pid = key === 'stevedore' ? stvD.mirror.pid() : undefined
          const m = await measuredFanOut(key, blobPath(direct[key].url), P.clients)
          const gets = await settledUpstreamGets(upstream, blob.digest, blob.size)
          if (pid !== undefined) peakRssCold.push((await memoryOf(pid)).hwm)
          const r = fanRound(m, gets, `cold fan-out ${key} round ${round}`, blob.size, blob.digest)
          cold[key].push(r)
          if (r.correct) cached.add(key)
          progress(`cold fan-out ×${P.clients} round ${round}: ${key}: ${describe(r)}`)
        }
      }
    }

    // -------------------------------------------------------------- warm fan-out
    const warm: Record<SystemKey, FanRound[]> = { stevedore: [], distribution: [], nginx: [] }
    if (run('warm')) {
      await ensureCached('stevedore')
      await ensureCached('distribution')
      const warmUrl: Record<SystemKey, string> = { stevedore: blobPath(stvD.url), distribution: blobPath(distD.url), nginx: blobPath(nginx.static.url) }
      for (let round = 1; round <= P.rounds; round++) {
        for (const key of SYSTEMS) {
          upstream.resetRequests()
          const m = await measuredFanOut(key, warmUrl[key], P.clients)
          const gets = upstream.requests().filter((x) => x.method === 'GET' && x.path.includes(blob.digest)).length
          const r = fanRound(m, gets, `warm fan-out ${key} round ${round}`, blob.size, blob.digest)
          warm[key].push(r)
          progress(`warm fan-out ×${P.clients} round ${round}: ${key}: ${r.wall.toFixed(2)} s = ${fmt((P.clients * blob.size) / r.wall / MB, 0)} MB/s, ${r.cpuPerGB.toFixed(2)} CPU s/GB${gets > 0 ? `, ${gets} upstream GETs` : ''}`)
        }
      }
    }

    // -------------------------------------------------------------- peak RSS, 50 streams
    let rss: { idle: number; peak: number; hwm: number; sampled: number; wall: number } | undefined
    if (run('rss')) {
      await ensureCached('stevedore')
      await stvD.restart({ wipe: false })
      const pid = stvD.mirror.pid()
      if (pid === undefined) throw new Error('stevedore not running')
      const idle = await memoryOf(pid)
      const sampler = sampleMemory(pid)
      const res = await fanOut(blobPath(stvD.url), P.streams, { hashClients: QUICK ? P.streams : 1, maxTimeS: P.maxTimeS })
      const mem = await sampler.stop()
      for (const b of checkFanOut(res, blob.size, blob.digest)) problem(`${P.streams} streams: ${b}`)
      rss = { idle: idle.rss, peak: Math.max(mem.hwm, mem.peakRss), hwm: mem.hwm, sampled: mem.peakRss, wall: res.wall }
      progress(`${P.streams} cached streams: ${res.wall.toFixed(2)} s (${fmt((P.streams * blob.size) / res.wall / MB, 0)} MB/s); stevedore RSS idle ${(idle.rss / 2 ** 20).toFixed(0)} MiB, peak ${(rss.peak / 2 ** 20).toFixed(0)} MiB`)
    }

    // -------------------------------------------------------------- stalled readers
    // Each system restarted on its warm cache (idle = before any request), then
    // N readers at --limit-rate on the cached blob; see bench/stalled.ts.
    const stalled: Partial<Record<SystemKey, StalledResult>> = {}
    if (run('stalled')) {
      const S = P.stalled
      const stalledOf: Record<SystemKey, { url: string; restart: () => Promise<void>; pids: () => Promise<number[]> }> = {
        stevedore: { url: stvD.url, restart: () => stvD.restart({ wipe: false }), pids: async () => [stvD.mirror.pid()].filter((p): p is number => p !== undefined) },
        distribution: { url: distD.url, restart: () => distD.restart({ wipe: false }), pids: () => distD.pids() },
        nginx: { url: nginxDirect.url, restart: () => nginx.restart({ wipeCaches: false }), pids: () => nginx.pids() },
      }
      for (const key of SYSTEMS) {
        const sys = stalledOf[key]
        await ensureCached(key)
        await sys.restart()
        const pids = await sys.pids()
        if (pids.length === 0) throw new Error(`${key} not running`)
        upstream.resetRequests()
        const r = await stalledReaders({
          url: blobPath(sys.url),
          port: Number(new URL(sys.url).port),
          pids,
          size: blob.size,
          digest: blob.digest,
          readers: S.readers,
          rate: S.rate,
          settleMs: S.settleMs,
          holdMs: S.holdMs,
          fetches: S.fetches,
          hashFetches: QUICK ? S.fetches + 1 : 1,
          maxTimeS: P.maxTimeS,
          log: (m) => progress(`${key}: ${m}`),
        })
        for (const b of r.problems) problem(`stalled readers, ${key}: ${b}`)
        const refetched = upstream.requests().filter((x) => x.method === 'GET' && x.path.includes(blob.digest)).length
        stalled[key] = r
        const mibOf = (b: number): string => (b / 2 ** 20).toFixed(0)
        progress(
          `stalled readers ×${S.readers} at ${S.rate}/s: ${key}: RSS idle ${mibOf(r.idleRss)} MiB, before readers ${mibOf(r.beforeRss)}, peak ${mibOf(r.peakRss)} MiB` +
            `${key === 'stevedore' ? ` (≤ 256 MiB: ${r.peakRss <= 256 * 2 ** 20 ? 'PASS' : 'FAIL'})` : ''}; ${r.served}/${r.readers} served (${fmt(r.received / MB)} MB in all), ${r.open} connections open; ` +
            `fresh client ${fmt(median(r.alone.map((c) => c.total)), 3)} s alone, ${fmt(median(r.loaded.map((c) => c.total)), 3)} s under load${refetched > 0 ? `; ${refetched} upstream GETs of the blob` : ''}`,
        )
      }
    }

    // -------------------------------------------------------------- manifests
    const manifests: Record<SystemKey, { tag?: WrkResult; digest?: WrkResult }> = { stevedore: {}, distribution: {}, nginx: {} }
    if (run('manifests')) {
      const manifestUrls = (base: string): { tag: string; digest: string } => ({ tag: `${base}/v2/bench/fanout/manifests/1`, digest: `${base}/v2/bench/fanout/manifests/${fan.digest}` })
      const manifestBase: Record<SystemKey, string> = { stevedore: stvD.url, distribution: distD.url, nginx: nginxDirect.url }
      for (const key of SYSTEMS) {
        for (const kind of ['tag', 'digest'] as const) {
          const url = manifestUrls(manifestBase[key])[kind]
          // prime, and check the answer
          const res = await request(url, { headers: { accept: ACCEPT } })
          const body = Buffer.from(await res.body.arrayBuffer())
          const dcd = res.headers['docker-content-digest']
          if (res.statusCode !== 200 || sha256(body) !== fan.digest || (dcd !== undefined && dcd !== fan.digest)) {
            problem(`manifest by ${kind} from ${key}: HTTP ${res.statusCode}, body ${sha256(body)}, Docker-Content-Digest ${String(dcd)}; expected ${fan.digest}`)
            continue
          }
          const w = await wrk(url, { connections: P.connections, durationS: P.wrkSeconds, headers: { Accept: ACCEPT } })
          if (w.non2xx > 0 || w.requests === 0) problem(`manifest by ${kind} from ${key}: ${w.non2xx} non-2xx answers of ${w.requests}`)
          manifests[key][kind] = w
          progress(`manifest by ${kind}: ${key}: ${fmt(w.rps, 0)} req/s, p50 ${(w.p50 * 1000).toFixed(2)} ms, p99 ${(w.p99 * 1000).toFixed(2)} ms${w.socketErrors > 0 ? `, ${w.socketErrors} socket errors` : ''}`)
        }
      }
    }

    // -------------------------------------------------------------- behind the paced link
    const alone: number[] = []
    const pacedRounds: Record<SystemKey, FanRound[]> = { stevedore: [], distribution: [], nginx: [] }
    if (run('paced')) {
      for (let round = 1; round <= P.rounds; round++) {
        pacer.reset()
        const one = await fanOut(blobPath(pacer.url), 1, { hashClients: 1, maxTimeS: P.maxTimeS })
        for (const b of checkFanOut(one, blob.size, blob.digest)) problem(`one client through the link, round ${round}: ${b}`)
        alone.push(one.wall)
        progress(`paced round ${round}: one client alone through the link: ${one.wall.toFixed(2)} s`)
        for (const key of SYSTEMS) {
          if (key === 'distribution' && round > P.peerRounds) continue
          await paced[key].reset()
          pacer.reset()
          const m = await measuredFanOut(key, blobPath(paced[key].url), P.clients)
          const gets = await settledPacerGets(blob.digest, blob.size)
          const r = fanRound(m, gets, `paced fan-out ${key} round ${round}`, blob.size, blob.digest)
          pacedRounds[key].push(r)
          progress(`paced fan-out ×${P.clients} round ${round}: ${key}: ${describe(r)}`)
        }
      }
    }

    // -------------------------------------------------------------- containerd
    const ref = `${upstream.host}/bench/big:1`
    const pullDirect: number[] = []
    const pullCold: Record<SystemKey, number[]> = { stevedore: [], distribution: [], nginx: [] }
    const pullWarm: Record<SystemKey, number[]> = { stevedore: [], distribution: [], nginx: [] }
    const warmRefetch: Record<SystemKey, number> = { stevedore: 0, distribution: 0, nginx: 0 }
    const pullCpu: Record<SystemKey, { cold: number[]; warm: number[] }> = { stevedore: { cold: [], warm: [] }, distribution: { cold: [], warm: [] }, nginx: { cold: [], warm: [] } }
    const stvThreads: { cold: Record<string, number>; warm: Record<string, number> }[] = []
    const pullCores: { direct: number[]; cold: Record<SystemKey, number[]> } = { direct: [], cold: { stevedore: [], distribution: [], nginx: [] } }
    // measured while nothing else runs, next to the figures it is the floor of
    const sha256PerGB = big !== undefined ? sha256SecondsPerGB(QUICK ? 32 * 2 ** 20 : 256 * 2 ** 20) : NaN
    if (big !== undefined) progress(`sha256 floor: ${sha256PerGB.toFixed(3)} CPU s per GB (node's sha256, 1 MiB updates)`)
    if (big !== undefined) {
      const ctrd = await startContainerd(scope.asTest())
      const layerDigests = big.layers.map((l) => l.digest)
      const hostsDirs: Record<SystemKey, string> = { stevedore: join(work, 'hosts-stevedore'), distribution: join(work, 'hosts-distribution'), nginx: join(work, 'hosts-nginx') }
      for (const key of SYSTEMS) await writeHostsToml(hostsDirs[key], upstream.host, upstream.url, direct[key].url)
      const pull = async (label: string, hostsDir: string | undefined, mirror: SystemKey | undefined): Promise<{ seconds: number; upstreamBlobGets: number; mirrorCpu: number; machineCores: number; threads: Record<string, number> }> => {
        const viaMirror = mirror !== undefined
        await ctrd.clean()
        upstream.resetRequests()
        const pids = mirror !== undefined ? await pidsOf[mirror]() : []
        const cpu0 = await cpuSeconds(pids)
        // where Stevedore's CPU goes: its main thread, the thread pool's file I/O, V8's helpers
        const stvPid = mirror === 'stevedore' ? stvD.mirror.pid() : undefined
        const threads0 = stvPid !== undefined ? await threadCpuSeconds(stvPid) : new Map<string, number>()
        const machine0 = await machineBusySeconds()
        const t0 = performance.now()
        const r = await ctrd.pull(ref, { plainHttp: true, timeoutMs: P.maxTimeS * 1000, ...(hostsDir !== undefined ? { hostsDir } : {}) })
        const seconds = (performance.now() - t0) / 1000
        const machineCores = ((await machineBusySeconds()) - machine0) / seconds
        const mirrorCpu = (await cpuSeconds(pids)) - cpu0
        const threads = stvPid !== undefined ? threadCpuDelta(threads0, await threadCpuSeconds(stvPid)) : {}
        if (r.code !== 0) problem(`containerd pull ${label}: ctr exited ${r.code}: ${r.stderr.trim().slice(-500)}`)
        const reqs = upstream.requests()
        // containerd talks to the upstream itself only when the mirror failed it (it falls back to `server`);
        // through nginx its requests reach the upstream, but with ?ns=
        const fellBack = reqs.filter((x) => x.userAgent.startsWith('containerd') && !x.path.includes('ns='))
        if (viaMirror && fellBack.length > 0) problem(`containerd pull ${label}: containerd fell back to the upstream (${fellBack.length} requests, e.g. ${fellBack[0]?.method} ${fellBack[0]?.path})`)
        const upstreamBlobGets = reqs.filter((x) => x.method === 'GET' && layerDigests.some((d) => x.path.includes(d)) && x.status === 200).length
        return { seconds, upstreamBlobGets, mirrorCpu, machineCores, threads }
      }
      for (let round = 1; round <= P.rounds; round++) {
        const d = await pull(`direct round ${round}`, undefined, undefined)
        pullDirect.push(d.seconds)
        pullCores.direct.push(d.machineCores)
        const line = [`containerd pull round ${round}: direct ${d.seconds.toFixed(2)} s`]
        for (const key of SYSTEMS) {
          if (key !== 'stevedore' && round > P.peerRounds) continue
          await direct[key].reset()
          cached.delete(key)
          const c = await pull(`via ${key} cold round ${round}`, hostsDirs[key], key)
          const w = await pull(`via ${key} warm round ${round}`, hostsDirs[key], key)
          pullCold[key].push(c.seconds)
          pullWarm[key].push(w.seconds)
          pullCpu[key].cold.push(c.mirrorCpu)
          pullCores.cold[key].push(c.machineCores)
          if (key === 'stevedore') stvThreads.push({ cold: c.threads, warm: w.threads })
          pullCpu[key].warm.push(w.mirrorCpu)
          warmRefetch[key] += w.upstreamBlobGets
          if (key === 'stevedore') progress(`stevedore CPU s by thread: cold ${byThread(c.threads)}; warm ${byThread(w.threads)}`)
          line.push(`${key} cold ${c.seconds.toFixed(2)} s (mirror CPU ${c.mirrorCpu.toFixed(2)} s), warm ${w.seconds.toFixed(2)} s (${w.mirrorCpu.toFixed(2)} s)${w.upstreamBlobGets > 0 ? ` (warm pull fetched ${w.upstreamBlobGets} layers upstream)` : ''}`)
        }
        progress(line.join('; '))
      }
      await ctrd.clean()
    }

    const roll = run('rollout') ? await rollout({ upstream, pacer, linkRate: P.linkRate, rounds: P.rounds, quick: QUICK, progress, problem }) : undefined
    const reps = run('replicas')
      ? await replicas({ upstreamHost: upstream.host, pacer, linkRate: P.linkRate, blob, blobPath, clients: P.clients, rounds: P.rounds, peerRounds: P.peerRounds, hashClients: QUICK ? P.clients : 3, maxTimeS: P.maxTimeS, settleCapMs: P.settleCapMs, progress, problem })
      : undefined

    // -------------------------------------------------------------- table
    const getsList = (rs: FanRound[]): string => rs.map((r) => String(r.fullGets)).join(', ')
    const allCorrect = (rs: FanRound[]): string => (rs.every((r) => r.correct) ? `yes (${rs.length * P.clients}/${rs.length * P.clients})` : 'NO')
    const mbs = (rs: FanRound[]): number[] => rs.map((r) => (P.clients * blob.size) / r.wall / MB)
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`
    /** marks a figure measured in fewer rounds than the others */
    const few = (n: number): string => (n < P.rounds ? '¹' : '')
    const blobMB = `${fmt(blob.size / MB, 0)} MB`
    const imgMB = `${fmt(imageBytes / MB, 0)} MB`

    const rows: Row[] = []
    const row = (figure: string, cells: Record<SystemKey, string>, target = '', met?: boolean, baseline = ''): void => {
      rows.push({ figure, baseline, cells, target, met })
    }

    if (run('cold')) {
      const coldVsDist = col((k) => ratio(walls(cold[k]), walls(cold.distribution)))
      row(`cold fan-out, ${P.clients} clients × one ${blobMB} blob: wall time, s (× distribution)`, col((k) => `${fmt(median(walls(cold[k])))} (${fmtRatio(coldVsDist[k])})`))
      row('cold fan-out: full upstream GETs, per round', col((k) => getsList(cold[k])), 'exactly 1', cold.stevedore.every((r) => r.fullGets === 1))
      row('cold fan-out: bytes correct (all clients)', col((k) => allCorrect(cold[k])), 'yes', cold.stevedore.every((r) => r.correct))
      row('cold fan-out: time to first byte, median / max, s', col((k) => `${fmt(median(cold[k].map((r) => r.ttfbMedian)), 3)} / ${fmt(median(cold[k].map((r) => r.ttfbMax)), 3)}`))
      row('cold fan-out: CPU seconds of the system per GB served', col((k) => fmt(median(cold[k].map((r) => r.cpuPerGB)))))
    }
    if (run('paced')) {
      const pacedVsAlone = col((k) => ratio(walls(pacedRounds[k]), alone))
      const pacedTtfbMax = col((k) => median(pacedRounds[k].map((r) => r.ttfbMax)))
      row(
        `behind a ${P.linkRate / MB} MB/s link: fan-out wall time, s (× one client alone)`,
        col((k) => `${fmt(median(walls(pacedRounds[k])))}${few(pacedRounds[k].length)} (${fmtRatio(pacedVsAlone[k])})`),
        '',
        undefined,
        `${fmt(median(alone))} alone`,
      )
      row('behind the link: full upstream GETs, per round', col((k) => getsList(pacedRounds[k])), 'exactly 1', pacedRounds.stevedore.every((r) => r.fullGets === 1))
      row('behind the link: max time to first byte of the clients, s', col((k) => fmt(pacedTtfbMax[k], 3)), '≤ 0.2 s', pacedTtfbMax.stevedore <= 0.2)
      row('behind the link: bytes correct (all clients)', col((k) => allCorrect(pacedRounds[k])), 'yes', pacedRounds.stevedore.every((r) => r.correct))
    }
    if (run('warm')) {
      const warmVsNginx = col((k) => ratio(mbs(warm[k]), mbs(warm.nginx)))
      row(`warm fan-out, ${P.clients} clients, cached: aggregate MB/s (× nginx sendfile)`, col((k) => `${fmt(median(mbs(warm[k])), 0)} (${fmtRatio(warmVsNginx[k])})`), '≥ 0.8 × nginx sendfile', warmVsNginx.stevedore >= 0.8)
      row('warm fan-out: bytes correct (all clients)', col((k) => allCorrect(warm[k])), 'yes', warm.stevedore.every((r) => r.correct))
      row('warm fan-out: CPU seconds of the system per GB served', col((k) => fmt(median(warm[k].map((r) => r.cpuPerGB)))))
    }
    if (run('manifests')) {
      const tagRps = col((k) => manifests[k].tag?.rps ?? NaN)
      const digestRps = col((k) => manifests[k].digest?.rps ?? NaN)
      row(
        `manifest by tag, ${P.connections} connections: req/s (× distribution), p99 ms`,
        col((k) => `${fmt(tagRps[k], 0)} (${fmtRatio(tagRps[k] / tagRps.distribution)}), ${fmt((manifests[k].tag?.p99 ?? NaN) * 1000)}`),
        '≥ 10 × distribution',
        tagRps.stevedore / tagRps.distribution >= 10,
      )
      row(
        `manifest by digest, ${P.connections} connections: req/s (× distribution), p99 ms`,
        col((k) => `${fmt(digestRps[k], 0)} (${fmtRatio(digestRps[k] / digestRps.distribution)}), ${fmt((manifests[k].digest?.p99 ?? NaN) * 1000)}`),
        '≥ 3 × distribution',
        digestRps.stevedore / digestRps.distribution >= 3,
      )
    }
    if (big !== undefined) {
      const warmPullVsDirect = col((k) => ratio(pullWarm[k], pullDirect))
      row('containerd pull via the mirror: CPU seconds of the mirror, cold / warm', col((k) => `${fmt(median(pullCpu[k].cold))} / ${fmt(median(pullCpu[k].warm))}${few(pullCpu[k].cold.length)}`))
      row('containerd pull via the mirror, warm: s (× direct)', col((k) => `${fmt(median(pullWarm[k]))}${few(pullWarm[k].length)} (${fmtRatio(warmPullVsDirect[k])})`), '', undefined, `${fmt(median(pullDirect))} direct`)
    }
    if (rss !== undefined) {
      row(`peak RSS, ${P.streams} concurrent streams of the cached ${blobMB} blob (their MB/s)`, { stevedore: `${mib(rss.peak)} (${fmt((P.streams * blob.size) / rss.wall / MB, 0)} MB/s)`, distribution: '—', nginx: '—' }, '≤ 256 MiB', rss.peak <= 256 * 2 ** 20)
    }
    if (run('stalled')) {
      const S = P.stalled
      const peak = col((k) => stalled[k]?.peakRss ?? NaN)
      const mibN = (b: number): string => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : '—')
      const fresh = (rs: ClientResult[] | undefined): number => median((rs ?? []).map((c) => c.total))
      row(
        `${S.readers} stalled readers (curl --limit-rate ${S.rate}) of the cached ${blobMB} blob: RSS idle → peak, MiB (peak × distribution)`,
        col((k) => `${mibN(stalled[k]?.idleRss ?? NaN)} → ${mibN(peak[k])} (${fmtRatio(peak[k] / peak.distribution)})`),
        '≤ 256 MiB',
        peak.stevedore <= 256 * 2 ** 20,
      )
      row(
        'stalled readers: still served at the end (curl running, its connection ESTABLISHED at the server); connections the server held',
        col((k) => (stalled[k] === undefined ? '—' : `${stalled[k]?.served}/${stalled[k]?.readers}; ${stalled[k]?.open}`)),
        `all ${S.readers}`,
        stalled.stevedore?.served === S.readers,
      )
      row(
        `stalled readers: one fresh client, whole blob at full speed, alone → under load, s (× alone)`,
        col((k) => `${fmt(fresh(stalled[k]?.alone), 3)} → ${fmt(fresh(stalled[k]?.loaded), 3)} (${fmtRatio(fresh(stalled[k]?.loaded) / fresh(stalled[k]?.alone))})`),
      )
    }
    if (peakRssCold.length > 0) row('Stevedore peak RSS after the cold fan-outs (VmHWM)', { stevedore: mib(maxOf(peakRssCold)), distribution: '—', nginx: '—' })
    rows.push(
      ...coldPathRows({
        sha256PerGB,
        clients: P.clients,
        blobMB,
        imageBytes,
        imageMB: imgMB,
        ...(run('cold') ? { cold } : {}),
        ...(run('warm') ? { warm } : {}),
        ...(run('paced') ? { paced: { alone, rounds: pacedRounds } } : {}),
        ...(big !== undefined ? { containerd: { direct: pullDirect, cold: pullCold, coldCpu: col((k) => pullCpu[k].cold), directCores: pullCores.direct, coldCores: pullCores.cold } } : {}),
      }),
    )
    const currentFigures = (): CurrentFigures => {
      const fresh = (rs: ClientResult[] | undefined): number => median((rs ?? []).map((c) => c.total))
      const st = stalled.stevedore
      const vsFloor = (k: 'cold' | 'prefetched'): number => (roll === undefined ? NaN : ratio(walls(roll.runs[k]), walls(roll.runs.floor)))
      return {
        warmMBps: median(mbs(warm.stevedore)),
        warmCpuPerGB: median(warm.stevedore.map((r) => r.cpuPerGB)),
        manifestTagRps: manifests.stevedore.tag?.rps ?? NaN,
        manifestDigestRps: manifests.stevedore.digest?.rps ?? NaN,
        rss50MiB: rss === undefined ? NaN : rss.peak / 2 ** 20,
        coldTtfbMaxS: median(cold.stevedore.map((r) => r.ttfbMax)),
        pacedTtfbMaxS: median(pacedRounds.stevedore.map((r) => r.ttfbMax)),
        stalledPeakMiB: st === undefined ? NaN : st.peakRss / 2 ** 20,
        stalledFreshLoadedVsAlone: st === undefined ? NaN : fresh(st.loaded) / fresh(st.alone),
        rolloutColdVsFloor: vsFloor('cold'),
        rolloutPrefetchedVsFloor: vsFloor('prefetched'),
      }
    }
    const recorded = loadRecorded()
    // the recorded figures are full-mode ones: quick sizes are not comparable
    if (!QUICK) rows.push(...regressionRows(currentFigures(), recorded))

    const header = ['figure', 'baseline', 'Stevedore', 'distribution (proxy)', 'nginx', 'target (Stevedore)', 'met?']
    const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`]
    for (const r of rows) {
      const met = r.met === undefined ? '' : QUICK ? '(quick)' : `${r.met ? 'met' : '**missed**'}${r.moonshot === undefined ? '' : `; moonshot ${r.moonshot ? 'met' : 'missed'}`}`
      lines.push(`| ${[r.figure, r.baseline, r.cells.stevedore, r.cells.distribution, r.cells.nginx, r.target, met].join(' | ')} |`)
    }
    const endLoad = loadavg().map((x) => x.toFixed(2)).join(' ')
    const elapsed = (performance.now() - started) / 1000
    process.stdout.write(
      `\nStevedore bench, ${machine.mode} mode, ${machine.date.slice(0, 10)}; ${machine.cores} cores (${machine.cpu}), ${machine.memGiB} GiB, node ${machine.node}; ` +
        `load average at start ${machine.loadAtStart}, at end ${endLoad}; ${P.rounds === 1 ? '1 round' : `medians of ${P.rounds} rounds`}; ran ${elapsed.toFixed(0)} s\n` +
        `nginx: cold, paced and stalled rows = proxy_cache with proxy_cache_lock; warm row = sendfile of the upstream's own files. distribution: 2.8 in proxy mode.\n\n${rows.length > 0 ? `${lines.join('\n')}\n` : ''}` +
        (!QUICK && rows.some((r) => r.figure.startsWith('no regression')) ? `\nno regression rows: recorded = ${recorded.source}; the allowance is this machine's spread between runs of unchanged code.\n` : '') +
        (P.peerRounds < P.rounds && rows.length > 0 ? `\n¹ ${P.peerRounds === 1 ? 'one round' : `${P.peerRounds} rounds`}: a peer's figure for context, no target is a ratio to it.\n` : '') +
        (roll !== undefined ? `\n${roll.caption}\n\n${roll.table.join('\n')}\n\n${roll.targets.join('\n')}\n` : '') +
        (reps !== undefined ? `\n${reps.caption}\n\n${reps.table.join('\n')}\n` : '') +
        '\n',
    )
    const out = join(tmpdir(), `stevedore-bench-${machine.date.replace(/[:.]/g, '-')}.json`)
    const raw = {
      machine: { ...machine, loadAtEnd: endLoad, elapsedS: elapsed },
      params: P,
      blob: { digest: blob.digest, size: blob.size },
      image: { ref, bytes: imageBytes },
      cold,
      warm,
      paced: { alone, rounds: pacedRounds },
      manifests,
      rss: { ...rss, peakRssCold },
      stalled,
      rollout: roll,
      replicas: reps?.runs,
      containerd: { direct: pullDirect, cold: pullCold, warm: pullWarm, warmRefetch, mirrorCpu: pullCpu, machineCores: pullCores, stevedoreThreads: stvThreads },
      sha256PerGB,
      rows,
      problems,
    }
    await writeFile(out, JSON.stringify(raw, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2))
    process.stdout.write(`raw figures: ${out}\n`)
    if (ARGS.cpuProf !== undefined) process.stdout.write(`Stevedore CPU profiles (written when each process stopped): ${ARGS.cpuProf}\n`)
  } finally {
    await scope.close()
  }
  if (problems.length > 0) {
    process.stdout.write(`\n${problems.length} wrong answer(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\n`)
    return 1
  }
  process.stdout.write('every system answered correctly\n')
  return 0
}

// exit explicitly: idle keep-alive sockets must not hold the process open
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${errMessage(err)}\n${err instanceof Error ? (err.stack ?? '') : ''}\n`)
    process.exit(1)
  },
)
