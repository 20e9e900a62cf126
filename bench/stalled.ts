// Stalled readers: many clients holding a cached blob's responses open while
// reading them at a trickle (`curl --limit-rate`), as a fleet of slow or
// half-stuck pullers does. What it costs the server in memory, whether every
// reader is still being served at the end, and what it does to one fresh
// client fetching the same blob at full speed meanwhile.
//
// The readers are curl processes, each tracked by its ChildProcess and ended
// by it at the end; each writes the body to a pipe of ours that counts the
// bytes. Memory is the sum of VmRSS of the server's processes, sampled every
// 250 ms from the first reader spawned to the end check.
//
// A reader counts as still served at the end when its curl is running, has
// got bytes, and the server's side of its TCP connection is still
// ESTABLISHED (its socket found from /proc/<pid>/fd in /proc/net/tcp). The
// server's side is what tells: the kernel holds a few MB of each connection
// (the socket buffers at both ends, minutes of reading at 2 KB/s), so a
// server that has dropped a reader leaves it reading on for minutes. And curl
// --limit-rate 2k does not read 2 KB each second: it reads what its socket
// holds (~60-200 KB) and then sleeps until its average is back at the rate,
// 30-80 s; so bytes received during a window of 20 s say little.
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile, readlink } from 'node:fs/promises'
import { checkFanOut, fanOut, type ClientResult } from './clients.js'
import { memoryOf, samplePeak } from './systems.js'
import { sleep } from '../test/harness/tools.js'

export interface StalledOptions {
  /** the blob's URL; the server must hold it already */
  url: string
  /** the server's listening port, to count its open connections */
  port: number
  /** the server's processes, whose resident sets are summed */
  pids: number[]
  size: number
  digest: string
  readers: number
  /** curl's --limit-rate for each reader, e.g. '2k' */
  rate: string
  /** from the last reader connected to the timed fetches under load */
  settleMs: number
  /** from the timed fetches to the end check */
  holdMs: number
  /** timed full-speed fetches, alone and again under load (median taken) */
  fetches: number
  /** fetches that pipe the body to sha256 (the rest: count its bytes) */
  hashFetches: number
  maxTimeS: number
  log: (msg: string) => void
}

export interface StalledResult {
  readers: number
  /** bytes, summed over the server's processes: before any request, before the readers, the highest sampled with them */
  idleRss: number
  beforeRss: number
  peakRss: number
  samples: number
  /** ms from the first reader spawned until the server held all their connections */
  connectMs: number
  /** readers whose curl was still running at the end */
  alive: number
  /** of those, readers that had got bytes and whose connection the server still held */
  served: number
  /** bytes the readers got in all */
  received: number
  /** connections the server held established at the end (the readers, and any idle keep-alive) */
  open: number
  alone: ClientResult[]
  loaded: ClientResult[]
  /** wrong answers: a fresh fetch with wrong bytes, a reader that ended or was dropped by the server */
  problems: string[]
}

export async function stalledReaders(o: StalledOptions): Promise<StalledResult> {
  const problems: string[] = []
  const idleRss = await rssOf(o.pids)
  const fetch = async (label: string, i: number): Promise<ClientResult> => {
    const res = await fanOut(o.url, 1, { hashClients: i < o.hashFetches ? 1 : 0, maxTimeS: o.maxTimeS })
    for (const b of checkFanOut(res, o.size, o.digest)) problems.push(`${label} fetch ${i + 1}: ${b}`)
    return res.clients[0] as ClientResult
  }
  // the first request after a start-up pays one-off costs (parser compilation, first file open): not timed
  await fetch('warm-up', 0)
  const alone: ClientResult[] = []
  for (let i = 0; i < o.fetches; i++) alone.push(await fetch('alone', i))
  const beforeRss = await rssOf(o.pids)

  const sampler = samplePeak(() => rssOf(o.pids), 250)
  const readers: Array<{ child: ChildProcess; bytes: number; stderr: Buffer[]; exited: Promise<void>; exit?: string }> = []
  let loaded: ClientResult[] = []
  let connectMs = NaN
  let alive = 0
  let served = 0
  let open = 0
  let received = 0
  let mem = { peak: NaN, samples: 0 }
  try {
    const t0 = Date.now()
    for (let i = 0; i < o.readers; i++) {
      const child = spawn('curl', ['-sS', '--noproxy', '*', '--limit-rate', o.rate, '--max-time', '3600', o.url], { stdio: ['ignore', 'pipe', 'pipe'] })
      const r: (typeof readers)[number] = { child, bytes: 0, stderr: [], exited: Promise.resolve() }
      child.stdout?.on('data', (b: Buffer) => {
        r.bytes += b.byteLength
      })
      child.stderr?.on('data', (b: Buffer) => r.stderr.push(b))
      r.exited = new Promise<void>((resolve) => {
        child.once('close', (code, signal) => {
          r.exit = signal !== null ? `signal ${signal}` : `exit ${code}`
          resolve()
        })
        child.once('error', (err) => {
          r.exit = `spawn failed: ${err.message}`
          resolve()
        })
      })
      readers.push(r)
    }
    const connectDeadline = t0 + 30_000
    for (;;) {
      open = await establishedAt(o.port)
      if (open >= o.readers) {
        connectMs = Date.now() - t0
        break
      }
      if (Date.now() > connectDeadline) {
        problems.push(`only ${open} of ${o.readers} readers connected within 30 s`)
        break
      }
      await sleep(100)
    }
    o.log(`stalled readers: ${o.readers} connected in ${connectMs} ms; steady state for ${o.settleMs / 1000} s`)
    await sleep(o.settleMs)

    const f: ClientResult[] = []
    for (let i = 0; i < o.fetches; i++) f.push(await fetch('under load', i))
    loaded = f
    await sleep(o.holdMs)

    const tcp = await tcpSockets()
    open = tcp.filter((e) => e.local === o.port && e.state === ESTABLISHED).length
    // the server's side of each reader's connection, by the reader's port (an ESTABLISHED one over an old TIME_WAIT)
    const serverSide = new Map<number, string>()
    for (const e of tcp) if (e.local === o.port && serverSide.get(e.remote) !== ESTABLISHED) serverSide.set(e.remote, e.state)
    const byInode = new Map(tcp.map((e) => [e.inode, e]))
    const ended: string[] = []
    const silent: number[] = []
    const dropped: string[] = []
    for (const [i, r] of readers.entries()) {
      received += r.bytes
      if (r.exit !== undefined) {
        ended.push(`reader ${i} (${r.exit}: ${Buffer.concat(r.stderr).toString('utf8').trim().slice(0, 200)})`)
        continue
      }
      alive++
      if (r.bytes === 0) {
        silent.push(i)
        continue
      }
      const own = (await socketInodes(r.child.pid)).map((n) => byInode.get(n)).find((e) => e !== undefined && e.remote === o.port)
      const state = own === undefined ? undefined : serverSide.get(own.local)
      if (state === ESTABLISHED) served++
      else dropped.push(`reader ${i} (server side ${state === undefined ? 'gone' : (TCP_STATES[state] ?? state)})`)
    }
    const some = (xs: string[]): string => `${xs.slice(0, 3).join(', ')}${xs.length > 3 ? ', …' : ''}`
    if (ended.length > 0) problems.push(`${ended.length} of ${o.readers} readers ended: ${some(ended)}`)
    if (silent.length > 0) problems.push(`${silent.length} of ${o.readers} readers got no bytes at all (readers ${some(silent.map(String))})`)
    if (dropped.length > 0) problems.push(`${dropped.length} of ${o.readers} readers dropped by the server: ${some(dropped)}`)
  } finally {
    mem = await sampler.stop()
    for (const r of readers) if (r.exit === undefined) r.child.kill('SIGTERM')
    const all = Promise.all(readers.map((r) => r.exited))
    if ((await Promise.race([all.then(() => true), sleep(5000).then(() => false)])) === false) {
      for (const r of readers) if (r.exit === undefined) r.child.kill('SIGKILL')
      await all
    }
  }
  return { readers: o.readers, idleRss, beforeRss, peakRss: mem.peak, samples: mem.samples, connectMs, alive, served, received, open, alone, loaded, problems }
}

/** VmRSS summed over pids, bytes (processes that are gone count 0) */
async function rssOf(pids: number[]): Promise<number> {
  let sum = 0
  for (const pid of pids) {
    const m = await memoryOf(pid).catch(() => undefined)
    if (m !== undefined && Number.isFinite(m.rss)) sum += m.rss
  }
  return sum
}

const ESTABLISHED = '01'
const TCP_STATES: Record<string, string> = { '01': 'ESTABLISHED', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT', '07': 'CLOSE', '08': 'CLOSE_WAIT', '0B': 'CLOSING' }

interface TcpSocket {
  local: number
  remote: number
  /** hex, as /proc/net/tcp writes it: 01 = ESTABLISHED */
  state: string
  inode: string
}

/** every TCP socket of this network namespace, from /proc/net/tcp and tcp6 */
async function tcpSockets(): Promise<TcpSocket[]> {
  const out: TcpSocket[] = []
  const port = (addr: string | undefined): number => parseInt(addr?.slice(addr.lastIndexOf(':') + 1) ?? '', 16)
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
      const f = line.trim().split(/\s+/)
      if (f.length < 10) continue
      out.push({ local: port(f[1]), remote: port(f[2]), state: f[3] ?? '', inode: f[9] ?? '' })
    }
  }
  return out
}

/** TCP connections established on the local `port` (the server's side of them) */
async function establishedAt(port: number): Promise<number> {
  return (await tcpSockets()).filter((e) => e.local === port && e.state === ESTABLISHED).length
}

/** inodes of the sockets a process holds open */
async function socketInodes(pid: number | undefined): Promise<string[]> {
  if (pid === undefined) return []
  const out: string[] = []
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])
  for (const fd of fds) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const m = /^socket:\[(\d+)\]$/.exec(link)
    if (m?.[1] !== undefined) out.push(m[1])
  }
  return out
}
