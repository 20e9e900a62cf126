// Starting and resetting the systems under test: Stevedore (dist/cli.js, as
// the harness starts it) and distribution in proxy mode (the harness's
// registry starter with proxyRemoteUrl). "Reset" means: stop, empty the
// cache, start again on the same port, so the next request is a cold one.
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Scope } from './scope.js'
import { startMirror, type Mirror } from '../test/harness/mirror.js'
import { startRegistry, type Registry } from '../test/harness/registry.js'
import { makeTemp, removeDir } from '../test/harness/tools.js'

export interface Stevedore {
  mirror: Mirror
  url: string
  cacheRoot: string
  /** restart; with wipe, on an empty cache */
  restart(opts: { wipe: boolean }): Promise<void>
}

export async function startStevedore(scope: Scope, name: string, registryHost: string, upstreamUrl: string, env?: NodeJS.ProcessEnv, extraConfig: Record<string, unknown> = {}): Promise<Stevedore> {
  const cacheRoot = await makeTemp(`stevedore-bench-cache-${name}`)
  scope.teardown(() => removeDir(cacheRoot))
  const config = {
    storage: { filesystem: { root: cacheRoot } },
    upstreams: { [registryHost]: { url: upstreamUrl } },
    defaultUpstream: registryHost,
    cache: { tagTtl: '5m' },
    ...extraConfig,
  }
  const mirror = await startMirror(scope.asTest(), { config, ...(env !== undefined ? { env } : {}) })
  return {
    mirror,
    url: mirror.url,
    cacheRoot,
    restart: async ({ wipe }) => {
      await mirror.stop()
      if (wipe) await rm(cacheRoot, { recursive: true, force: true })
      await mirror.start()
    },
  }
}

export interface DistributionProxy {
  registry: Registry
  url: string
  restart(opts: { wipe: boolean }): Promise<void>
  /** its process (found by its config file, which the harness keeps next to the data dir) */
  pids(): Promise<number[]>
}

/** distribution 2.8 in proxy mode; it panics at start-up if `remoteUrl` is down, so start it after. */
export async function startDistributionProxy(scope: Scope, remoteUrl: string): Promise<DistributionProxy> {
  const registry = await startRegistry(scope.asTest(), { proxyRemoteUrl: remoteUrl })
  return {
    registry,
    url: registry.url,
    restart: async ({ wipe }) => {
      await registry.stop()
      if (wipe) {
        await rm(registry.dataDir, { recursive: true, force: true })
        await mkdir(registry.dataDir, { recursive: true })
      }
      await registry.start()
    },
    pids: () => pidsMentioning(join(dirname(registry.dataDir), 'config.yml')),
  }
}

export interface Memory {
  /** resident set now, bytes */
  rss: number
  /** peak resident set since the process started (VmHWM), bytes */
  hwm: number
}

export async function memoryOf(pid: number): Promise<Memory> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)
    return m ? Number(m[1]) * 1024 : NaN
  }
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

/** Polls `read` every `everyMs` until stopped; returns the highest value seen (a final read included) and how many reads. */
export function samplePeak(read: () => Promise<number>, everyMs: number): { stop(): Promise<{ peak: number; samples: number }> } {
  let peak = 0
  let samples = 0
  let busy = false
  const timer = setInterval(() => {
    if (busy) return
    busy = true
    read()
      .then((value) => {
        samples++
        if (value > peak) peak = value
      })
      .catch(() => undefined)
      .finally(() => {
        busy = false
      })
  }, everyMs)
  return {
    stop: async () => {
      clearInterval(timer)
      const last = await read()
      return { peak: Math.max(peak, last), samples: samples + 1 }
    },
  }
}

/** Polls VmRSS every `everyMs` until stopped; returns the highest seen and the final VmHWM. */
export function sampleMemory(pid: number, everyMs = 20): { stop(): Promise<{ peakRss: number; hwm: number }> } {
  const rss = samplePeak(async () => (await memoryOf(pid)).rss, everyMs)
  return {
    stop: async () => {
      const { peak } = await rss.stop()
      return { peakRss: peak, hwm: (await memoryOf(pid)).hwm }
    },
  }
}

/** user+system CPU seconds used so far by each of `pids` (processes that are gone count 0) */
export async function cpuSeconds(pids: number[]): Promise<number> {
  let ticks = 0
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
      // fields after the command name, which is in parentheses and may hold spaces
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(rest[11]) + Number(rest[12])
    } catch {
      /* gone */
    }
  }
  return ticks / CLOCK_TICKS
}
/** busy CPU seconds of the whole machine so far (/proc/stat: everything but idle and iowait) */
export async function machineBusySeconds(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? ''
  const f = line.trim().split(/\s+/).slice(1).map(Number)
  const total = f.slice(0, 8).reduce((a, x) => a + x, 0)
  return (total - (f[3] ?? 0) - (f[4] ?? 0)) / 100
}

/**
 * user+system CPU seconds used so far by the threads of `pid`, summed by
 * kind: the main thread (the event loop), libuv's thread pool (file reads and
 * writes), V8's helpers (concurrent GC, compiler), by their names where the
 * runtime names them.
 */
export async function threadCpuSeconds(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  let tids: string[]
  try {
    tids = await readdir(`/proc/${pid}/task`)
  } catch {
    return out
  }
  for (const tid of tids) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // node 20's libuv and V8 threads are all named "node": only the main thread (tid = pid) is told apart there
      const kind = tid === String(pid) ? 'main thread' : name.startsWith('libuv-worker') ? 'thread pool' : name.startsWith('V8 ') ? 'V8 helpers' : 'other threads'
      out.set(kind, (out.get(kind) ?? 0) + (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS)
    } catch {
      /* the thread ended */
    }
  }
  return out
}

/** what each kind of thread used between two threadCpuSeconds readings */
export function threadCpuDelta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [kind, s] of after) out[kind] = s - (before.get(kind) ?? 0)
  return out
}

// USER_HZ: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK))
const CLOCK_TICKS = 100

/** pids of the processes whose parent is `ppid` */
export async function childrenOf(ppid: number): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(rest[1]) === ppid) out.push(Number(name))
    } catch {
      /* gone */
    }
  }
  return out
}

/** pids of the processes whose command line contains `needle` */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    try {
      const cmdline = (await readFile(`/proc/${name}/cmdline`, 'utf8')).replace(/\0/g, ' ')
      if (cmdline.includes(needle)) out.push(Number(name))
    } catch {
      /* gone */
    }
  }
  return out
}
