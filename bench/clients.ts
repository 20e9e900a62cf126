// The bench's clients: curl processes for blob fan-outs, wrk for manifests.
//
// A fan-out starts N `curl -o /dev/null` processes (one per client, so the
// client side is spread over both cores and costs little: no JavaScript on
// the data path), each behind a shell that waits on its stdin: they are all
// spawned first, then released together by one newline each, so "at once"
// means within a millisecond or two. curl reports per client its status,
// bytes, time to first byte (`time_starttransfer`: the first byte of the
// answer; the three systems send their headers with the first body bytes)
// and total time. Clients chosen by `hashClients` pipe the body to
// `openssl dgst -sha256` instead of /dev/null.
import { spawn } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import { run } from '../test/harness/tools.js'

export interface ClientResult {
  status: number
  bytes: number
  /** seconds */
  ttfb: number
  /** seconds */
  total: number
  /** sha256:<hex> when this client hashed the body */
  digest?: string
  error?: string
}

export interface FanOutResult {
  /** seconds from release to the last client's exit */
  wall: number
  clients: ClientResult[]
}

const W = '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\\n'

/** Run `n` clients GETting `url` at once (given several, client i asks url[i % length]). */
export async function fanOut(urls: string | readonly string[], n: number, opts: { hashClients: number; maxTimeS: number }): Promise<FanOutResult> {
  const curl = `curl -sS --noproxy '*' --max-time ${opts.maxTimeS}`
  const list = typeof urls === 'string' ? [urls] : urls
  const procs = Array.from({ length: n }, (_, i) => {
    const url = list[i % list.length] as string
    const hash = i < opts.hashClients
    const script = hash
      ? `set -o pipefail; read -r _; ${curl} -w '%{stderr}${W}' '${url}' | openssl dgst -sha256 -r`
      : `read -r _; exec ${curl} -o /dev/null -w '${W}' '${url}'`
    const child = spawn('bash', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve())
      child.once('error', reject)
    })
    const exited = new Promise<{ code: number | null; end: number }>((resolve) => {
      child.once('close', (code) => resolve({ code, end: performance.now() }))
    })
    return { child, hash, out, err, spawned, exited }
  })
  await Promise.all(procs.map((p) => p.spawned))
  // let bash start and block in `read`
  await new Promise((r) => setTimeout(r, 150))
  const t0 = performance.now()
  for (const p of procs) p.child.stdin.end('\n')
  const ends = await Promise.all(procs.map((p) => p.exited))
  const wall = (Math.max(...ends.map((e) => e.end)) - t0) / 1000
  const clients = procs.map((p, i): ClientResult => {
    const stdout = Buffer.concat(p.out).toString('utf8')
    const stderr = Buffer.concat(p.err).toString('utf8')
    const wline = (p.hash ? stderr : stdout).split('\n').find((l) => /^\d{3} \d+ [\d.]+ [\d.]+$/.test(l.trim()))
    const code = ends[i]?.code ?? null
    if (wline === undefined) return { status: 0, bytes: 0, ttfb: NaN, total: NaN, error: `curl exit ${code}: ${stderr.trim().slice(0, 300)}` }
    const [status, bytes, ttfb, total] = wline.trim().split(' ').map(Number) as [number, number, number, number]
    const r: ClientResult = { status, bytes, ttfb, total }
    if (p.hash) {
      const m = /^([0-9a-f]{64})\s/.exec(stdout)
      if (m) r.digest = `sha256:${m[1]}`
    }
    if (code !== 0) r.error = `curl exit ${code}: ${stderr.trim().slice(0, 300)}`
    return r
  })
  return { wall, clients }
}

/** Problems with a fan-out's answers (empty: every client got the right bytes). */
export function checkFanOut(res: FanOutResult, size: number, digest: string): string[] {
  const bad: string[] = []
  res.clients.forEach((c, i) => {
    if (c.error !== undefined) bad.push(`client ${i}: ${c.error}`)
    else if (c.status !== 200) bad.push(`client ${i}: HTTP ${c.status}`)
    else if (c.bytes !== size) bad.push(`client ${i}: ${c.bytes} bytes, expected ${size}`)
    else if (c.digest !== undefined && c.digest !== digest) bad.push(`client ${i}: sha256 ${c.digest}, expected ${digest}`)
  })
  return bad
}

export interface WrkResult {
  rps: number
  /** seconds */
  p50: number
  p99: number
  requests: number
  non2xx: number
  socketErrors: number
  raw: string
}

function seconds(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v)
  if (!m) return NaN
  const n = Number(m[1])
  switch (m[2]) {
    case 'us':
      return n / 1e6
    case 'ms':
      return n / 1e3
    case 'm':
      return n * 60
    default:
      return n
  }
}

/** wrk, one thread (the other core is the server's), `connections` connections, `durationS` seconds. */
export async function wrk(url: string, opts: { connections: number; durationS: number; headers: Record<string, string>; extraArgs?: readonly string[] }): Promise<WrkResult> {
  const args = ['-t1', `-c${opts.connections}`, `-d${opts.durationS}s`, '--latency', '--timeout', '10s', ...(opts.extraArgs ?? [])]
  for (const [k, v] of Object.entries(opts.headers)) args.push('-H', `${k}: ${v}`)
  args.push(url)
  const r = await run('wrk', args, { timeoutMs: (opts.durationS + 30) * 1000 })
  const raw = r.stdout + r.stderr
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${raw}`)
  const num = (re: RegExp): number => {
    const m = re.exec(raw)
    return m ? Number(m[1]) : 0
  }
  const lat = (pct: string): number => {
    const m = new RegExp(`^\\s+${pct}%\\s+(\\S+)`, 'm').exec(raw)
    return m ? seconds(m[1] ?? '') : NaN
  }
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(raw)
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: lat('50'),
    p99: lat('99'),
    requests: num(/(\d+) requests in/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    socketErrors: se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    raw,
  }
}
