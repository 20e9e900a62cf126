// Several mirrors started as one cluster (static `peers`): each knows the
// others' URLs before any of them starts, so ports are taken first.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'tap'
import { ownerOf } from '../../src/cluster/ring.js'
import { fetchAll } from './http.js'
import { startMirror, type Mirror } from './mirror.js'
import { freePort, tempDir, waitFor } from './tools.js'

export interface Replicas {
  readonly mirrors: Mirror[]
  readonly urls: string[]
  readonly secretFile: string
  /** The replica that owns a digest while all are live. */
  owner(digest: string): Mirror
  /** The others. */
  askers(digest: string): Mirror[]
}

export interface ReplicaOptions {
  readonly count: number
  /** The config of replica i, without `cluster` (added here). */
  readonly config: (i: number) => Record<string, unknown>
  /** Overrides of the cluster section (health interval, secretFile...) of replica i. */
  readonly cluster?: (i: number, urls: readonly string[]) => Record<string, unknown>
  /**
   * Starts the owner of this digest, and waits for it to listen, before the others: their first
   * health probe then finds it live, which a replica with a long health interval depends on.
   */
  readonly ownerFirst?: string
}

/** Number of a metric line (summed over its label sets when `labels` is omitted). */
export async function metricOf(mirror: Mirror, name: string, labels?: string): Promise<number> {
  const text = (await fetchAll(`${mirror.url}/metrics`)).body.toString()
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    if (labels !== undefined && m[2] !== `{${labels}}`) continue
    sum += Number(m[3])
  }
  return sum
}

export async function startReplicas(t: Test, options: ReplicaOptions): Promise<Replicas> {
  const dir = await tempDir(t, 'stevedore-replicas')
  const secretFile = join(dir, 'peer-secret')
  await writeFile(secretFile, 'a shared secret of thirty-two bytes\n')
  const ports: number[] = []
  for (let i = 0; i < options.count; i++) ports.push(await freePort())
  const urls = ports.map((p) => `http://127.0.0.1:${p}`)
  const start = (i: number): Promise<Mirror> => startMirror(t, {
    port: ports[i],
    config: {
      ...options.config(i),
      cluster: { self: urls[i], peers: urls, secretFile, healthInterval: '250ms', connectTimeout: '1s', ...options.cluster?.(i, urls) },
    },
  })
  const first = options.ownerFirst === undefined ? -1 : urls.indexOf(ownerOf(options.ownerFirst, urls) as string)
  const firstStarted = first < 0 ? undefined : await start(first)
  const mirrors = await Promise.all(ports.map((_, i) => (i === first && firstStarted !== undefined ? firstStarted : start(i))))
  // Every replica sees every other live: only then do all agree on owners.
  await waitFor(async () => {
    for (const m of mirrors) if ((await metricOf(m, 'stevedore_cluster_members', 'state="live"')) !== options.count) return false
    return true
  }, 15_000, 'every replica sees the others live')
  const owner = (digest: string): Mirror => mirrors[urls.indexOf(ownerOf(digest, urls) as string)] as Mirror
  return { mirrors, urls, secretFile, owner, askers: (digest) => mirrors.filter((m) => m !== owner(digest)) }
}
