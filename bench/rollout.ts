// The rollout section of the bench (`npm run bench -- --only rollout`): K
// simulated nodes (K private containerd 1.6 instances, each with its own
// root, state and socket) pull one image at the same moment through CRI
// `PullImage`, the kubelet's path (so it is unpacked into the k8s.io
// namespace as on a node), behind the paced 100 MB/s link:
//   straight      each node pulls from the registry itself (through the pacer)
//   distribution  through distribution's proxy, cold (its upstream: the pacer)
//   cold          through Stevedore on an empty cache (its upstream: the pacer)
//   prefetched    through Stevedore after a prefetch (POST /api/v1/prefetch);
//                 the prefetch is timed on its own, not in the rollout time
//   floor         through the same Stevedore, warm: what the K nodes' own
//                 hashing and unpacking cost on this machine
// plus, for context, one node alone pulling from the warm Stevedore.
//
// Every row starts K fresh containerd instances (their start is timed and
// left out), points each one's CRI registry config (`config_path`, the
// harness's certs.d) at the system under test, pulls, checks every node's
// image (its id is the config digest, its repo digest the manifest's, one
// snapshot per layer in k8s.io), then stops them (the harness unmounts what
// is left under their roots) and removes their dirs. Upstream bytes are the
// answer bodies that crossed the pacer during the row (the prefetched row:
// the prefetch's and the rollout's).
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { request } from 'undici'
import type { Pacer } from './pacer.js'
import { Scope } from './scope.js'
import { median } from './table.js'
import { cpuSeconds, machineBusySeconds, pidsMentioning, startDistributionProxy, startStevedore, type DistributionProxy, type Stevedore } from './systems.js'
import { CriImageService } from '../src/prepull/cri-client.js'
import { startContainerd, writeHostsToml, type Containerd } from '../test/harness/containerd.js'
import { buildImage, pushImage, type BuiltImage } from '../test/harness/images.js'
import type { Registry } from '../test/harness/registry.js'
import { errMessage, makeTemp, removeDir, run, sleep } from '../test/harness/tools.js'

const MB = 1_000_000

export const ROLLOUT_ROWS = ['straight', 'distribution', 'cold', 'prefetched', 'floor', 'alone'] as const
export type RolloutRowKey = (typeof ROLLOUT_ROWS)[number]

export interface RolloutDeps {
  upstream: Registry
  pacer: Pacer
  /** the pacer's bytes per second (for the caption) */
  linkRate: number
  /** rounds of the Stevedore rows (the peers' rows and the one node alone run once) */
  rounds: number
  quick: boolean
  progress(msg: string): void
  problem(msg: string): void
}

/** One row of one round. */
export interface RolloutRun {
  nodes: number
  /** seconds from the release of the K PullImage calls to the last node's answer */
  wall: number
  /** each node's seconds from the release to its answer (NaN: failed) */
  perNode: number[]
  /** every node has the image, with the right digests, unpacked */
  correct: boolean
  /** answer bodies that crossed the pacer (the prefetched row: prefetch included) */
  upstreamBytes: number
  /** of them, blob bodies (GET /v2/.../blobs/...) */
  upstreamBlobBytes: number
  upstreamManifestGets: number
  /** CPU seconds during the rollout: the system under test, all K containerds, the bench process (the pacer runs in it), the upstream registry, the whole machine (/proc/stat: all processes, kernel included) */
  cpu: { system: number; containerd: number; bench: number; upstream: number; machine: number }
  /** Stevedore rows: seconds from the release until the mirror had served the last blob request of all nodes (its request log) */
  downloadsDone?: number
  /** starting the K containerd instances (not in `wall`) */
  startSeconds: number
  /** the prefetched row: POST to the job's `done` */
  prefetchSeconds?: number
  prefetchBytes?: number
}

export interface RolloutResult {
  params: { nodes: number; layers: number[]; imageBytes: number; blobBytes: number; rounds: number; ref: string; manifestDigest: string; configDigest: string }
  runs: Record<RolloutRowKey, RolloutRun[]>
  /** one line above the table */
  caption: string
  /** Markdown table lines */
  table: string[]
  /** Markdown table lines: the targets */
  targets: string[]
}

const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '—')
const fr = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(2)}×` : '—')
const fmb = (n: number): string => (Number.isFinite(n) ? (n / MB >= 100 ? (n / MB).toFixed(0) : (n / MB).toFixed(1)) : '—')

interface Node {
  ctrd: Containerd
  cri: CriImageService
  pids: number[]
}

export async function rollout(d: RolloutDeps): Promise<RolloutResult> {
  const envNodes = Number(process.env['STEVEDORE_BENCH_ROLLOUT_NODES'])
  const K = Number.isInteger(envNodes) && envNodes > 0 ? envNodes : d.quick ? 2 : 6
  const layerSizes = d.quick ? Array.from({ length: 8 }, () => 2.5 * MB) : Array.from({ length: 8 }, () => 50 * MB)
  const pullTimeoutMs = (d.quick ? 120 : 600) * 1000
  const scope = new Scope()
  try {
    return await measure(d, scope, K, layerSizes, pullTimeoutMs)
  } finally {
    await scope.close()
  }
}

async function measure(d: RolloutDeps, scope: Scope, K: number, layerSizes: number[], pullTimeoutMs: number): Promise<RolloutResult> {
  const { upstream, pacer, progress, problem } = d
  // ---------------------------------------------------------------- image
  const workDir = await makeTemp('stevedore-bench-rollout')
  scope.teardown(() => removeDir(workDir))
  const work = join(workDir, 'image')
  const t0 = performance.now()
  const img: BuiltImage = await buildImage(work, { layers: layerSizes })
  await pushImage(upstream, 'bench/rollout', '1', img)
  await removeDir(work)
  const ref = `${upstream.host}/bench/rollout:1`
  const blobBytes = img.config.size + img.layers.reduce((a, l) => a + l.size, 0)
  const imageBytes = blobBytes + img.manifest.length
  progress(`rollout: image ${ref} (${img.digest.slice(0, 19)}…), ${img.layers.length} layers, ${imageBytes} bytes, built and pushed in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${K} nodes`)

  // ---------------------------------------------------------------- systems
  const stv: Stevedore = await startStevedore(scope, 'rollout', upstream.host, pacer.url)
  const dist: DistributionProxy = await startDistributionProxy(scope, pacer.url)
  const stvPids = async (): Promise<number[]> => [stv.mirror.pid()].filter((p): p is number => p !== undefined)

  /**
   * hosts.toml of one node: the registry host → `mirror`, falling back to the
   * pacer; straight: the pacer as the one host (containerd 1.6 ignores a
   * hosts.toml without a `[host]` table: it went to the registry itself).
   */
  const pointAt = (certsDir: string, mirror: string | undefined): Promise<void> => writeHostsToml(certsDir, upstream.host, pacer.url, mirror ?? pacer.url)

  const settlePacer = async (): Promise<void> => {
    const deadline = Date.now() + 60_000
    while (pacer.inflight() > 0 && Date.now() < deadline) await sleep(50)
  }
  const pacerBytes = (): { all: number; blobs: number; manifestGets: number } => {
    const reqs = pacer.requests()
    return {
      all: reqs.reduce((a, r) => a + r.bytes, 0),
      blobs: reqs.filter((r) => r.path.includes('/blobs/')).reduce((a, r) => a + r.bytes, 0),
      manifestGets: reqs.filter((r) => r.method === 'GET' && r.path.includes('/manifests/')).length,
    }
  }

  /** K fresh containerd instances (in `rowScope`), CRI answering, hosts.toml pointing at `mirror` */
  const startNodes = async (rowScope: Scope, k: number, mirror: string | undefined): Promise<Node[]> => {
    return Promise.all(
      Array.from({ length: k }, async () => {
        const ctrd = await startContainerd(rowScope.asTest())
        await pointAt(ctrd.certsDir, mirror)
        const cri = new CriImageService(`unix://${ctrd.address}`)
        rowScope.teardown(() => cri.close())
        // the CRI plugin answers a moment after containerd itself; this also opens the channel
        const deadline = Date.now() + 20_000
        for (;;) {
          try {
            if ((await cri.imageStatus(ref, 5000)) !== undefined) throw new Error(`a fresh containerd has ${ref} already`)
            break
          } catch (err) {
            if (Date.now() > deadline) throw new Error(`CRI of ${ctrd.address} not answering: ${errMessage(err)}`)
            await sleep(100)
          }
        }
        return { ctrd, cri, pids: await pidsMentioning(join(ctrd.dir, 'config.toml')) }
      }),
    )
  }

  /** the image as a node holds it: CRI's view, and its snapshots in k8s.io */
  const checkNode = async (label: string, n: Node): Promise<boolean> => {
    const st = await n.cri.imageStatus(ref)
    const bad: string[] = []
    if (st === undefined) bad.push('CRI ImageStatus: no image')
    else {
      if (st.id !== img.config.digest) bad.push(`image id ${st.id}, expected the config digest ${img.config.digest}`)
      const want = `${upstream.host}/bench/rollout@${img.digest}`
      if (!st.repoDigests.includes(want)) bad.push(`repo digests ${st.repoDigests.join(', ')}, expected ${want}`)
    }
    const snaps = await run('ctr', ['--address', n.ctrd.address, '-n', 'k8s.io', 'snapshots', 'ls'], { timeoutMs: 30_000 })
    const committed = snaps.stdout.split('\n').filter((l) => /\sCommitted\s*$/.test(l)).length
    if (snaps.code !== 0 || committed < img.layers.length) bad.push(`${committed} committed snapshots in k8s.io, expected ${img.layers.length}`)
    for (const b of bad) problem(`rollout ${label}: ${n.ctrd.address}: ${b}`)
    return bad.length === 0
  }

  /** One row: K fresh nodes, released at once, through `mirror` (undefined: straight to the pacer). */
  const rolloutRow = async (label: string, k: number, mirror: string | undefined, systemPids: () => Promise<number[]>, before?: () => Promise<Partial<RolloutRun>>): Promise<RolloutRun> => {
    const rowScope = new Scope()
    try {
      const s0 = performance.now()
      const nodes = await startNodes(rowScope, k, mirror)
      const startSeconds = (performance.now() - s0) / 1000
      pacer.reset()
      const extra = before !== undefined ? await before() : {}
      const pre = pacerBytes()
      upstream.resetRequests()
      const sys = await systemPids()
      const ctrdPids = nodes.flatMap((n) => n.pids)
      const cpuSys0 = await cpuSeconds(sys)
      const cpuCtrd0 = await cpuSeconds(ctrdPids)
      const upPids = await pidsMentioning(join(dirname(upstream.dataDir), 'config.yml'))
      const cpuUp0 = await cpuSeconds(upPids)
      const cpuBench0 = process.cpuUsage()
      const machine0 = await machineBusySeconds()
      const epoch0 = Date.now()
      const r0 = performance.now()
      const perNode = await Promise.all(
        nodes.map(async (n) => {
          try {
            await n.cri.pullImage(ref, pullTimeoutMs)
            return (performance.now() - r0) / 1000
          } catch (err) {
            problem(`rollout ${label}: ${n.ctrd.address}: PullImage: ${errMessage(err)}`)
            return NaN
          }
        }),
      )
      const wall = (performance.now() - r0) / 1000
      const cpuB = process.cpuUsage(cpuBench0)
      const cpu = { system: (await cpuSeconds(sys)) - cpuSys0, containerd: (await cpuSeconds(ctrdPids)) - cpuCtrd0, bench: (cpuB.user + cpuB.system) / 1e6, upstream: (await cpuSeconds(upPids)) - cpuUp0, machine: (await machineBusySeconds()) - machine0 }
      let downloadsDone: number | undefined
      if (mirror === stv.url) {
        await stv.mirror.settle()
        const ends = stv.mirror
          .logs()
          .filter((l) => l['msg'] === 'request' && String(l['path']).includes('/blobs/'))
          .map((l) => Date.parse(String(l['time'])))
          .filter((t) => t >= epoch0)
        if (ends.length > 0) downloadsDone = (Math.max(...ends) - epoch0) / 1000
      }
      await settlePacer()
      const bytes = pacerBytes()
      let correct = perNode.every((x) => Number.isFinite(x))
      for (const n of nodes) if (!(await checkNode(label, n))) correct = false
      if (mirror === undefined && bytes.blobs < k * blobBytes) {
        problem(`rollout ${label}: only ${bytes.blobs} blob bytes crossed the link, ${k} nodes need ${k * blobBytes}: the nodes bypassed the pacer`)
        correct = false
      }
      if (mirror !== undefined) {
        await upstream.settle()
        const fellBack = upstream.requests().filter((x) => x.userAgent.startsWith('containerd') && !x.path.includes('ns='))
        if (fellBack.length > 0) {
          problem(`rollout ${label}: containerd fell back past the mirror to the registry (${fellBack.length} requests, e.g. ${fellBack[0]?.method} ${fellBack[0]?.path})`)
          correct = false
        }
      }
      const res: RolloutRun = {
        nodes: k,
        wall,
        perNode,
        correct,
        upstreamBytes: bytes.all,
        upstreamBlobBytes: bytes.blobs,
        upstreamManifestGets: bytes.manifestGets,
        cpu,
        ...(downloadsDone !== undefined ? { downloadsDone } : {}),
        startSeconds,
        ...extra,
      }
      progress(
        `rollout ${label}: ${k} nodes, last ${f2(wall)} s (per node ${perNode.map(f2).join(', ')}); upstream ${fmb(bytes.all)} MB (blobs ${fmb(bytes.blobs)}, ${pre.all > 0 ? `${fmb(pre.all)} of it by the prefetch, ` : ''}${bytes.manifestGets} manifest GETs); ` +
          `CPU system ${f2(cpu.system)} s, containerd ${f2(cpu.containerd)} s, bench ${f2(cpu.bench)} s, upstream registry ${f2(cpu.upstream)} s, machine ${f2(cpu.machine)} s; ${downloadsDone !== undefined ? `all blobs served at ${f2(downloadsDone)} s; ` : ''}nodes started in ${f2(startSeconds)} s${correct ? '' : '; WRONG'}`,
      )
      return res
    } finally {
      const c0 = performance.now()
      await rowScope.close()
      progress(`rollout ${label}: nodes stopped and removed in ${f2((performance.now() - c0) / 1000)} s`)
    }
  }

  /** POST /api/v1/prefetch, poll until done; seconds and bytes across the pacer */
  const prefetch = async (): Promise<Partial<RolloutRun>> => {
    const p0 = performance.now()
    const res = await request(`${stv.url}/api/v1/prefetch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ images: [ref] }) })
    const text = await res.body.text()
    const location = res.headers['location']
    if (res.statusCode !== 202 || typeof location !== 'string') throw new Error(`POST /api/v1/prefetch answered ${res.statusCode}: ${text}`)
    const deadline = Date.now() + pullTimeoutMs
    let state = ''
    let last = ''
    while (state !== 'done' && state !== 'failed') {
      if (Date.now() > deadline) throw new Error(`prefetch job not finished after ${pullTimeoutMs / 1000} s: ${last}`)
      await sleep(50)
      const r = await request(`${stv.url}${location}`)
      last = await r.body.text()
      state = String((JSON.parse(last) as { state?: unknown }).state)
    }
    const prefetchSeconds = (performance.now() - p0) / 1000
    if (state !== 'done') problem(`rollout prefetch: job ${state}: ${last}`)
    await settlePacer()
    const prefetchBytes = pacerBytes().all
    progress(`rollout prefetch: ${state} in ${f2(prefetchSeconds)} s, ${fmb(prefetchBytes)} MB across the link`)
    return { prefetchSeconds, prefetchBytes }
  }

  // ---------------------------------------------------------------- rows
  const runs: Record<RolloutRowKey, RolloutRun[]> = { straight: [], distribution: [], cold: [], prefetched: [], floor: [], alone: [] }
  const none = async (): Promise<number[]> => []
  for (let round = 1; round <= d.rounds; round++) {
    if (round === 1) {
      runs.straight.push(await rolloutRow('straight (round 1)', K, undefined, none))
      runs.distribution.push(await rolloutRow('distribution cold (round 1)', K, dist.url, () => dist.pids()))
    }
    await stv.restart({ wipe: true })
    runs.cold.push(await rolloutRow(`stevedore cold (round ${round})`, K, stv.url, stvPids))
    await stv.restart({ wipe: true })
    runs.prefetched.push(await rolloutRow(`stevedore after prefetch (round ${round})`, K, stv.url, stvPids, prefetch))
    runs.floor.push(await rolloutRow(`stevedore warm, the floor (round ${round})`, K, stv.url, stvPids))
    if (round === 1) runs.alone.push(await rolloutRow('stevedore warm, one node alone (round 1)', 1, stv.url, stvPids))
  }

  // ---------------------------------------------------------------- table
  const floorWalls = runs.floor.map((r) => r.wall)
  /** median over rounds of wall / that round's floor (the peers' single round: round 1's floor) */
  const vsFloor = (rs: RolloutRun[]): number => median(rs.map((r, i) => r.wall / (floorWalls[i] ?? NaN)))
  const judge = (met: boolean): string => (d.quick ? '(quick)' : met ? 'met' : '**missed**')
  const oneImage = (r: RolloutRun): boolean => r.upstreamBlobBytes === blobBytes
  const names: Record<RolloutRowKey, string> = {
    straight: 'straight to the registry (through the link)',
    distribution: 'distribution proxy, cold',
    cold: 'Stevedore, cold',
    prefetched: 'Stevedore after `stevedore prefetch`',
    floor: 'Stevedore, warm (the floor)',
    alone: 'Stevedore, warm, one node alone¹',
  }
  const targetOf: Partial<Record<RolloutRowKey, { text: string; met: (rs: RolloutRun[]) => boolean }>> = {
    cold: { text: '≤ 1.3 × floor; upstream = one image', met: (rs) => vsFloor(rs) <= 1.3 && rs.every(oneImage) },
    prefetched: { text: '≤ 1.1 × floor; upstream = one image', met: (rs) => vsFloor(rs) <= 1.1 && rs.every(oneImage) },
    floor: { text: 'upstream = one image (0 here: warm)', met: (rs) => rs.every((r) => r.upstreamBlobBytes === 0) },
  }
  const header = ['row', 'nodes', 'last node has the image, s (rounds)', '× floor', 'per node min / median / max, s', 'upstream MB (× image), manifest GETs', 'CPU s: system / all containerd / pacer (bench process) / upstream registry / whole machine', 'all blobs served at, s', 'prefetch, s (not in the rollout)', 'target', 'met?']
  const table = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`]
  for (const key of ROLLOUT_ROWS) {
    const rs = runs[key]
    if (rs.length === 0) continue
    const walls = rs.map((r) => r.wall)
    const pooled = rs.flatMap((r) => r.perNode)
    const minN = Math.min(...pooled)
    const maxN = Math.max(...pooled)
    const upB = median(rs.map((r) => r.upstreamBytes))
    const t = targetOf[key]
    const cells = [
      names[key],
      String(rs[0]?.nodes ?? K),
      `${f2(median(walls))}${rs.length > 1 ? ` (${walls.map(f2).join(', ')})` : ''}`,
      key === 'alone' ? '' : fr(vsFloor(rs)),
      `${f2(minN)} / ${f2(median(pooled))} / ${f2(maxN)}`,
      `${fmb(upB)} (${fr(upB / imageBytes)}), ${median(rs.map((r) => r.upstreamManifestGets))}`,
      `${f2(median(rs.map((r) => r.cpu.system)))} / ${f2(median(rs.map((r) => r.cpu.containerd)))} / ${f2(median(rs.map((r) => r.cpu.bench)))} / ${f2(median(rs.map((r) => r.cpu.upstream)))} / ${f2(median(rs.map((r) => r.cpu.machine)))}`,
      f2(median(rs.map((r) => r.downloadsDone ?? NaN))),
      key === 'prefetched' ? `${f2(median(rs.map((r) => r.prefetchSeconds ?? NaN)))} (${fmb(median(rs.map((r) => r.prefetchBytes ?? NaN)))} MB)` : '',
      t?.text ?? '',
      t !== undefined ? judge(t.met(rs)) : rs.every((r) => r.correct) ? '' : 'WRONG',
    ]
    table.push(`| ${cells.join(' | ')} |`)
  }
  const coldR = vsFloor(runs.cold)
  const preR = vsFloor(runs.prefetched)
  const targets = [
    '| target (Stevedore) | measured | |',
    '|---|---|---|',
    `| rollout to ${K} nodes, cold, ≤ 1.3 × floor | ${f2(median(runs.cold.map((r) => r.wall)))} s vs ${f2(median(floorWalls))} s; per-round ratios ${runs.cold.map((r, i) => fr(r.wall / (floorWalls[i] ?? NaN))).join(', ')}, median ${fr(coldR)} | ${judge(coldR <= 1.3)} |`,
    `| rollout to ${K} nodes after a prefetch, ≤ 1.1 × floor | ${f2(median(runs.prefetched.map((r) => r.wall)))} s vs ${f2(median(floorWalls))} s; per-round ratios ${runs.prefetched.map((r, i) => fr(r.wall / (floorWalls[i] ?? NaN))).join(', ')}, median ${fr(preR)} | ${judge(preR <= 1.1)} |`,
    `| upstream bytes = one image, every Stevedore row | blob bytes across the link: cold ${runs.cold.map((r) => fmb(r.upstreamBlobBytes)).join(', ')} MB, prefetched ${runs.prefetched.map((r) => fmb(r.upstreamBlobBytes)).join(', ')} MB, warm ${runs.floor.map((r) => fmb(r.upstreamBlobBytes)).join(', ')} MB (image: ${fmb(blobBytes)} MB of blobs) | ${judge([...runs.cold, ...runs.prefetched].every(oneImage) && runs.floor.every((r) => r.upstreamBlobBytes === 0))} |`,
  ]
  return {
    params: { nodes: K, layers: layerSizes, imageBytes, blobBytes, rounds: d.rounds, ref, manifestDigest: img.digest, configDigest: img.config.digest },
    runs,
    caption:
      `Rollout: ${K} nodes (containerd 1.6, CRI PullImage) pull ${ref} (${fmb(imageBytes)} MB, ${img.layers.length} layers) at once behind the ${d.linkRate / MB} MB/s link; ` +
      `${d.rounds === 1 ? '1 round' : `medians of ${d.rounds} rounds for the Stevedore rows`}, the peers' rows and the one node alone ¹ one round; × floor = median of the per-round ratios to that round's floor.`,
    table,
    targets,
  }
}

