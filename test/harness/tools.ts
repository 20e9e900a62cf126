// Shared helpers for the end-to-end harness: tool detection, ports, temp
// dirs, polling, child processes.
//
// Every long-running process the harness starts goes through
// `spawnService`, which
//   - writes stdout/stderr to files, read synchronously by the callers (no
//     pipe buffering, no wait for an event-loop turn; `waitQuiet` for lines
//     a service writes after the response),
//   - wraps the command in `setpriv --pdeathsig KILL` when available, so the
//     service dies even if the test process is SIGKILLed by a tap timeout,
//   - is killed (and temp dirs unmounted and removed) by a signal-exit hook
//     as a last resort.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, accessSync, constants as fsc, openSync, closeSync, readSync, fstatSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { onExit } from 'signal-exit'
import type { Test } from 'tap'
import { Agent, request } from 'undici'

// ---------------------------------------------------------------- tools

const whichCache = new Map<string, string | null>()

/** Absolute path of an executable on PATH, or null. */
export function which(tool: string): string | null {
  const cached = whichCache.get(tool)
  if (cached !== undefined) return cached
  let found: string | null = null
  if (tool.includes('/')) {
    found = isExecutable(tool) ? tool : null
  } else {
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (!dir) continue
      const p = join(dir, tool)
      if (isExecutable(p)) {
        found = p
        break
      }
    }
  }
  whichCache.set(tool, found)
  return found
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsc.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * True when every tool is on PATH. Otherwise: under REQUIRE_E2E=1 the test
 * fails; else a skipped test point is recorded. Callers:
 * `if (!requireTools(t, 'skopeo')) return`.
 */
export function requireTools(t: Test, ...tools: string[]): boolean {
  const missing = tools.filter((x) => which(x) === null)
  if (missing.length === 0) return true
  for (const m of missing) {
    if (process.env.REQUIRE_E2E === '1') {
      t.fail(`missing tool ${m} (REQUIRE_E2E=1)`)
    } else {
      t.comment(`missing tool ${m}: skipping (set REQUIRE_E2E=1 to make this fail)`)
      void t.skip(`missing tool ${m}`, () => {})
    }
  }
  return false
}

// ---------------------------------------------------------------- ports, dirs

/**
 * Ports below the kernel's ephemeral range: a listener on port 0 or an
 * outgoing connection anywhere on the machine (another test file runs in
 * parallel) never lands on them, so a port taken here stays ours until we bind
 * it, and a port meant to stay dead stays dead. CI once lost a run to a
 * "nothing listens here" port the kernel had handed to another test's listener.
 */
function reservedRange(): [number, number] {
  let low = 32768
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (Number.isInteger(first)) low = first
  } catch {
    // Off Linux: assume the IANA default range starts at 49152 or Linux's 32768, whichever is lower.
  }
  return low > 12000 ? [10000, low - 1] : [0, 0]
}
const RANGE = reservedRange()

function tryListen(port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(undefined) : reject(err)))
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
      const addr = srv.address()
      const got = addr !== null && typeof addr !== 'string' ? addr.port : undefined
      srv.close((err) => (err ? reject(err) : resolve(got)))
    })
  })
}

/** A loopback port that is free and outside the range the kernel hands out by itself. */
export async function freePort(): Promise<number> {
  const [lo, hi] = RANGE
  for (let i = 0; i < 200 && hi > lo; i++) {
    const port = await tryListen(lo + Math.floor(Math.random() * (hi - lo + 1)))
    if (port !== undefined) return port
  }
  const port = await tryListen(0)
  if (port === undefined) throw new Error('freePort: no address')
  return port
}

/** mkdtemp under os.tmpdir(); removed (rm -rf) at t.teardown. */
export async function tempDir(t: Test, prefix: string): Promise<string> {
  const dir = await makeTemp(prefix)
  t.teardown(() => removeDir(dir))
  return dir
}

/** mkdtemp without teardown registration (for harness modules that own cleanup). */
export async function makeTemp(prefix: string): Promise<string> {
  const p = prefix.endsWith('-') ? prefix : `${prefix}-`
  const dir = await mkdtemp(join(tmpdir(), p))
  installExitHook()
  dirs.add(dir)
  return dir
}

/** rm -rf that never throws (teardown must not reject: tap would skip later teardowns). */
export async function removeDir(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 3 })
    dirs.delete(dir)
  } catch (err) {
    process.stderr.write(`harness: could not remove ${dir}: ${String(err)}\n`)
  }
}

// ---------------------------------------------------------------- polling

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Poll `check` (every 50 ms, errors count as false) until true or timeout. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  for (;;) {
    try {
      if (await check()) return
      lastErr = undefined
    } catch (err) {
      lastErr = err
    }
    if (Date.now() >= deadline) {
      const why = lastErr === undefined ? '' : ` (last error: ${errMessage(lastErr)})`
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`)
    }
    await sleep(50)
  }
}

export function errMessage(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause
    return cause === undefined ? err.message : `${err.message}: ${errMessage(cause)}`
  }
  return String(err)
}

// ---------------------------------------------------------------- run

export interface RunOptions {
  /** kill (SIGKILL) after this long; default 120 s */
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  cwd?: string
  input?: string | Buffer
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  timedOut: boolean
}

/** Spawn (no shell), collect output, never reject on non-zero exit. Rejects only if spawning fails. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    track(child)
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout?.on('data', (b: Buffer) => out.push(b))
    child.stderr?.on('data', (b: Buffer) => err.push(b))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, opts.timeoutMs ?? 120_000)
    child.once('error', (e) => {
      clearTimeout(timer)
      reject(new Error(`spawn ${cmd}: ${e.message}`))
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (timedOut ? `\n[harness: killed after ${opts.timeoutMs ?? 120_000} ms]` : ''),
        timedOut,
      })
    })
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined) // EPIPE if the child exits first
      child.stdin.end(opts.input)
    }
  })
}

/** run() that throws with the output when the exit code is not 0. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  }
  return r
}

// ---------------------------------------------------------------- hashing

/** `sha256:<hex>` of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer)
  }
  return `sha256:${h.digest('hex')}`
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

// ---------------------------------------------------------------- last-resort cleanup
//
// t.teardown does the real cleanup. When tap times a test file out it sends
// SIGALRM and SIGKILLs ~0.5 s later, so async teardowns never finish: this
// synchronous hook (signal-exit runs it on exit and on catchable signals)
// kills what is still running, unmounts and removes the temp dirs. setpriv
// --pdeathsig covers the SIGKILL case for the services themselves.

const live = new Set<ChildProcess>()
const dirs = new Set<string>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  onExit(() => {
    for (const c of live) {
      try {
        c.kill('SIGKILL')
      } catch {
        /* already gone */
      }
    }
    for (const d of dirs) {
      try {
        for (const mp of mountsUnderSync(d)) spawnSync('umount', ['-l', mp], { stdio: 'ignore', timeout: 2000 })
        rmSync(d, { recursive: true, force: true })
      } catch {
        /* best effort */
      }
    }
  })
}

function track(child: ChildProcess): void {
  installExitHook()
  live.add(child)
  child.once('exit', () => live.delete(child))
  child.once('error', () => live.delete(child))
}

/** Mount points at or under `prefix` (from /proc/self/mounts), deepest first. */
export function mountsUnderSync(prefix: string): string[] {
  let text: string
  try {
    text = readFileSync('/proc/self/mounts', 'utf8')
  } catch {
    return []
  }
  const out: string[] = []
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[1]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    if (mp && (mp === prefix || mp.startsWith(`${prefix}/`))) out.push(mp)
  }
  return out.sort((a, b) => b.length - a.length)
}

// ---------------------------------------------------------------- services

export interface ServiceOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** files receiving stdout / stderr (appended) */
  stdoutFile: string
  stderrFile: string
}

export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

/** A started long-running process. `exited` resolves when it is gone. */
export interface Service {
  child: ChildProcess
  exited: Promise<ExitStatus>
  /** null while running */
  status(): ExitStatus | null
}

/** Spawn a long-running process with its output going to files. */
export function spawnService(cmd: string, args: string[], opts: ServiceOptions): Service {
  const outFd = openSync(opts.stdoutFile, 'a')
  const errFd = openSync(opts.stderrFile, 'a')
  let file = cmd
  let argv = args
  const setpriv = which('setpriv')
  if (setpriv !== null) {
    file = setpriv
    argv = ['--pdeathsig', 'KILL', '--', cmd, ...args]
  }
  let child: ChildProcess
  try {
    child = spawn(file, argv, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', outFd, errFd],
    })
  } finally {
    closeSync(outFd)
    closeSync(errFd)
  }
  track(child)
  let status: ExitStatus | null = null
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal }
      resolve(status)
    })
    child.once('error', (e) => {
      status = { code: null, signal: null }
      process.stderr.write(`harness: spawn ${cmd} failed: ${e.message}\n`)
      resolve(status)
    })
  })
  return { child, exited, status: () => status }
}

/** Send `signal`, wait up to graceMs, then SIGKILL. Never rejects. */
export async function stopService(svc: Service, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<ExitStatus> {
  const st = svc.status()
  if (st !== null) return st
  try {
    svc.child.kill(signal)
  } catch {
    /* gone */
  }
  const timer = setTimeout(() => {
    try {
      svc.child.kill('SIGKILL')
    } catch {
      /* gone */
    }
  }, graceMs)
  const res = await svc.exited
  clearTimeout(timer)
  return res
}

/**
 * Incremental reader of a log file that a service appends to. `read()`
 * returns the complete lines added since the last call (synchronously).
 */
export class LogTail {
  #path: string
  #offset = 0
  #partial = ''

  constructor(path: string) {
    this.#path = path
  }

  read(): string[] {
    let fd: number
    try {
      fd = openSync(this.#path, 'r')
    } catch {
      return []
    }
    const chunks: string[] = []
    try {
      const size = fstatSync(fd).size
      const buf = Buffer.allocUnsafe(1 << 20)
      while (this.#offset < size) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, size - this.#offset), this.#offset)
        if (n <= 0) break
        this.#offset += n
        chunks.push(buf.toString('utf8', 0, n))
      }
    } finally {
      closeSync(fd)
    }
    if (chunks.length === 0) return []
    const text = this.#partial + chunks.join('')
    const lines = text.split('\n')
    this.#partial = lines.pop() ?? ''
    return lines.filter((l) => l.length > 0)
  }
}

/** Wait until `path` has not changed size for `quietMs`. */
export async function waitQuiet(path: string, quietMs: number, timeoutMs: number): Promise<void> {
  const size = (): number => {
    try {
      const fd = openSync(path, 'r')
      try {
        return fstatSync(fd).size
      } finally {
        closeSync(fd)
      }
    } catch {
      return -1
    }
  }
  const deadline = Date.now() + timeoutMs
  let last = size()
  let since = Date.now()
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error(`${path} still growing after ${timeoutMs} ms`)
    await sleep(Math.min(10, quietMs))
    const now = size()
    if (now !== last) {
      last = now
      since = Date.now()
    }
  }
}

/** Last `max` characters of a file (for error messages). */
export function tailFile(path: string, max = 8000): string {
  try {
    const fd = openSync(path, 'r')
    try {
      const size = fstatSync(fd).size
      const len = Math.min(size, max)
      const buf = Buffer.alloc(len)
      readSync(fd, buf, 0, len, size - len)
      return buf.toString('utf8')
    } finally {
      closeSync(fd)
    }
  } catch {
    return ''
  }
}

/**
 * GET url, true if any HTTP response came back (optionally: one of
 * `statuses`). `ca`: PEM to trust for https (self-signed test servers).
 */
export async function httpAnswers(url: string, statuses?: number[], ca?: string): Promise<boolean> {
  const res = await request(url, {
    method: 'GET',
    reset: true,
    headersTimeout: 2000,
    bodyTimeout: 2000,
    ...(ca === undefined ? {} : { dispatcher: agentFor(ca) }),
  })
  await res.body.dump()
  return statuses === undefined || statuses.includes(res.statusCode)
}

const agents = new Map<string, Agent>()

/** An undici Agent trusting `ca` (PEM), shared per CA. */
export function agentFor(ca: string): Agent {
  let a = agents.get(ca)
  if (!a) {
    a = new Agent({ connect: { ca } })
    agents.set(ca, a)
  }
  return a
}

/**
 * Poll `ready()` until true; reject at once with the service's stderr if it
 * exits first, or after timeoutMs.
 */
export async function waitReady(svc: Service, ready: () => Promise<boolean>, timeoutMs: number, what: string, stderrFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  for (;;) {
    const st = svc.status()
    if (st !== null) {
      throw new Error(`${what} exited early (code ${st.code ?? 'null'}, signal ${st.signal ?? 'null'}):\n${tailFile(stderrFile)}`)
    }
    try {
      if (await ready()) return
      lastErr = undefined
    } catch (err) {
      lastErr = err
    }
    if (Date.now() >= deadline) {
      const why = lastErr === undefined ? '' : ` (last error: ${errMessage(lastErr)})`
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}\nstderr:\n${tailFile(stderrFile)}`)
    }
    await Promise.race([sleep(50), svc.exited])
  }
}
