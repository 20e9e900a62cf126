// The replicas section of the bench (`npm run bench -- --only replicas`):
// one cold blob, N clients at once spread round-robin over the replicas,
// every replica behind the same paced 100 MB/s link, each row on a fresh
// cache:
//   one           one Stevedore alone on the S3 bucket (s3rver), all clients on it
//   three alone   three Stevedores on one bucket without `cluster` (each coalesces only its own clients)
//   three cluster three Stevedores on one bucket as one cluster (static peers): an owner per digest
//   dist one      distribution's proxy alone
//   dist three    three distribution proxies on one storage root
// Counted: full GETs of the blob that crossed the link (the pacer's log),
// the bytes that crossed it, the wall time from the release of the clients
// to the last one's end, and every client's bytes (some hash theirs).
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { checkFanOut, fanOut, type FanOutResult } from './clients.js'
import type { Pacer } from './pacer.js'
import { Scope } from './scope.js'
import { median } from './table.js'
import { startMirror, type Mirror } from '../test/harness/mirror.js'
import { startRegistry } from '../test/harness/registry.js'
import { metricOf } from '../test/harness/replicas.js'
import { freePort, makeTemp, removeDir, sleep, waitFor } from '../test/harness/tools.js'
import { s3StorageDocument, startS3 } from '../test/storage/s3-helpers.js'

const MB = 1_000_000

export const REPLICA_ROWS = ['one', 'threeAlone', 'threeCluster', 'distOne', 'distThree'] as const
export type ReplicaRowKey = (typeof REPLICA_ROWS)[number]
const LABELS: Record<ReplicaRowKey, string> = {
  one: 'Stevedore, one replica',
  threeAlone: 'Stevedore, 3 replicas, no cluster',
  threeCluster: 'Stevedore, 3 replicas, cluster',
  distOne: 'distribution, one proxy',
  distThree: 'distribution, 3 proxies, one storage',
}

export interface ReplicasDeps {
  /** the upstream's registry host name (the mirrors' upstream key) */
  upstreamHost: string
  pacer: Pacer
  linkRate: number
  blob: { digest: string; size: number }
  /** the blob's path under a base URL */
  blobPath(base: string): string
  clients: number
  rounds: number
  /** rounds of the distribution rows: context, and slow (it fetches once per client) */
  peerRounds: number
  hashClients: number
  maxTimeS: number
  settleCapMs: number
  progress(msg: string): void
  problem(msg: string): void
}

export interface ReplicaRun {
  wall: number
  fullGets: number
  linkBytes: number
  correct: boolean
}

export interface ReplicasResult {
  runs: Record<ReplicaRowKey, ReplicaRun[]>
  caption: string
  table: string[]
}

const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '—')
const fr = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(2)}×` : '—')

/** The base URLs of one row's systems, started in `scope` on fresh caches, and their warnings (Stevedore's). */
type Setup = (scope: Scope, round: number) => Promise<{ urls: string[]; warnings(): string[] }>

export async function replicas(d: ReplicasDeps): Promise<ReplicasResult> {
  const outer = new Scope()
  try {
    const s3 = await startS3(outer.asTest(), { bucket: 'stevedore-bench' })
    const work = await makeTemp('stevedore-bench-replicas')
    outer.teardown(() => removeDir(work))
    const secretFile = join(work, 'peer-secret')
    await writeFile(secretFile, 'a bench secret of at least sixteen bytes\n')
    const spool = async (name: string): Promise<string> => {
      const dir = join(work, `spool-${name}`)
      await mkdir(dir, { recursive: true })
      return dir
    }
    const stevedores = (count: number, cluster: boolean): Setup => async (scope, round) => {
      const prefix = `r${round}-${count}${cluster ? 'c' : 'a'}/`
      const ports: number[] = []
      for (let i = 0; i < count; i++) ports.push(await freePort())
      const urls = ports.map((p) => `http://127.0.0.1:${p}`)
      const mirrors = await Promise.all(ports.map(async (port, i) => startMirror(scope.asTest(), {
        port,
        config: {
          storage: { s3: s3StorageDocument(s3, { prefix, spoolDir: await spool(`${prefix.slice(0, -1)}-${i}`) }) },
          upstreams: { [d.upstreamHost]: { url: d.pacer.url } },
          defaultUpstream: d.upstreamHost,
          ...(cluster ? { cluster: { self: urls[i], peers: urls, secretFile, healthInterval: '250ms' } } : {}),
        },
      })))
      if (cluster) await allLive(mirrors)
      return { urls, warnings: () => mirrors.flatMap((m, i) => warningsOf(m).map((w) => `replica ${i}: ${w}`)) }
    }
    const distributions = (count: number): Setup => async (scope) => {
      const dataDir = await makeTemp('stevedore-bench-dist-shared')
      scope.teardown(() => removeDir(dataDir))
      const urls: string[] = []
      // One after another: each panics at start-up if its remote is down, and they share one root.
      for (let i = 0; i < count; i++) urls.push((await startRegistry(scope.asTest(), { proxyRemoteUrl: d.pacer.url, dataDir })).url)
      return { urls, warnings: () => [] }
    }
    const setups: Record<ReplicaRowKey, Setup> = {
      one: stevedores(1, false),
      threeAlone: stevedores(3, false),
      threeCluster: stevedores(3, true),
      distOne: distributions(1),
      distThree: distributions(3),
    }
    const runs: Record<ReplicaRowKey, ReplicaRun[]> = { one: [], threeAlone: [], threeCluster: [], distOne: [], distThree: [] }
    for (let round = 1; round <= d.rounds; round++) {
      for (const key of REPLICA_ROWS) {
        if (key.startsWith('dist') && round > d.peerRounds) continue
        const scope = new Scope()
        try {
          const { urls, warnings } = await setups[key](scope, round)
          d.pacer.reset()
          const res = await fanOut(urls.map((u) => d.blobPath(u)), d.clients, { hashClients: d.hashClients, maxTimeS: d.maxTimeS })
          const r = await settle(d, res)
          for (const b of checkFanOut(res, d.blob.size, d.blob.digest)) {
            r.correct = false
            d.problem(`replicas ${key} round ${round}: ${b}`)
          }
          // Why a client was cut is in the mirror's log, which goes with the scope.
          if (!r.correct) for (const w of warnings().slice(0, 10)) d.problem(`replicas ${key} round ${round}: ${w}`)
          runs[key].push(r)
          d.progress(`replicas round ${round}: ${LABELS[key]}: ${res.wall.toFixed(2)} s, ${r.fullGets} full upstream GETs, ${(r.linkBytes / MB).toFixed(0)} MB over the link${r.correct ? '' : ', WRONG BYTES'}`)
        } finally {
          await scope.close()
        }
      }
    }
    return { runs, ...render(d, runs) }
  } finally {
    await outer.close()
  }
}

/** A mirror's warn and error lines, short. */
function warningsOf(m: Mirror): string[] {
  return m.logs()
    .filter((l) => typeof l.level === 'number' && l.level >= 40)
    .map((l) => JSON.stringify({ msg: l.msg, failure: l.failure, err: (l.err as { message?: unknown } | undefined)?.message, digest: l.digest }))
}

async function allLive(mirrors: Mirror[]): Promise<void> {
  await waitFor(async () => {
    for (const m of mirrors) if ((await metricOf(m, 'stevedore_cluster_members', 'state="live"')) !== mirrors.length) return false
    return true
  }, 15_000, 'every replica sees the others live')
}

/** The row's figures once the link is quiet (distribution finishes its copies after its clients). */
async function settle(d: ReplicasDeps, res: FanOutResult): Promise<ReplicaRun> {
  const deadline = Date.now() + d.settleCapMs
  while (d.pacer.inflight() > 0 && Date.now() < deadline) await sleep(50)
  const linkBytes = d.pacer.requests().filter((r) => r.path.includes(d.blob.digest)).reduce((a, r) => a + r.bytes, 0)
  return { wall: res.wall, fullGets: d.pacer.fullGets(d.blob.digest, d.blob.size), linkBytes, correct: true }
}

function render(d: ReplicasDeps, runs: Record<ReplicaRowKey, ReplicaRun[]>): { caption: string; table: string[] } {
  const alone = d.blob.size / d.linkRate
  const wall = (k: ReplicaRowKey): number => median(runs[k].map((r) => r.wall))
  const gets = (k: ReplicaRowKey): string => runs[k].map((r) => String(r.fullGets)).join(', ')
  const caption = `Replicas: ${d.clients} clients at once on one cold ${(d.blob.size / MB).toFixed(0)} MB blob, spread round-robin over the replicas, ` +
    `all behind one ${(d.linkRate / MB).toFixed(0)} MB/s link (${f2(alone)} s for the blob alone); Stevedore on one s3rver bucket; ` +
    `${d.rounds === 1 ? 'one round' : `medians of ${d.rounds} rounds`}`
  const table = [
    '| setup | wall s | × one replica | full upstream GETs (per round) | MB over the link (median) | every client correct |',
    '|---|---|---|---|---|---|',
    ...REPLICA_ROWS.map((k) => {
      const base = k.startsWith('dist') ? wall('distOne') : wall('one')
      const mb = median(runs[k].map((r) => r.linkBytes)) / MB
      return `| ${LABELS[k]} | ${f2(wall(k))} | ${fr(wall(k) / base)} | ${gets(k)} | ${Number.isFinite(mb) ? mb.toFixed(0) : '—'} | ${runs[k].every((r) => r.correct) ? 'yes' : 'NO'} |`
    }),
  ]
  return { caption, table }
}
