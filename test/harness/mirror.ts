// Starts the Stevedore mirror as a real process:
//   node dist/cli.js serve --config FILE --listen 127.0.0.1:PORT
// (build first: `npm run build`). Ready when GET /v2/ answers 200 (401 with client auth).
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { which, waitQuiet, freePort, httpAnswers, LogTail, makeTemp, removeDir, spawnService, stopService, tailFile, waitReady, type ExitStatus, type Service } from './tools.js'

/** repository root (two levels above test/harness/) */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface MirrorOptions {
  /** the YAML config document */
  config: Record<string, unknown>
  /** merged over process.env (tap's NODE_OPTIONS and TAP* variables are dropped first) */
  env?: NodeJS.ProcessEnv
  port?: number
  /** script to run instead of <repo>/dist/cli.js (harness self-tests) */
  cli?: string
  /** readiness timeout, default 15 s */
  startTimeoutMs?: number
  /** the mirror listens with TLS (config `tls`): its url is https, trusted through this CA (PEM) */
  ca?: string
}

export interface Mirror {
  url: string
  host: string
  port: number
  configPath: string
  /** JSON lines from stdout (non-JSON lines skipped), across restarts */
  logs(): Array<Record<string, unknown>>
  stderr(): string
  /** wait until stdout has been quiet for quietMs (default 100): pino may write a request's line after the response */
  settle(quietMs?: number): Promise<void>
  /** signal (default SIGTERM), wait up to 15 s, then SIGKILL */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: string | null }>
  /** start again, same port and config file */
  start(): Promise<void>
  /** rewrite the config file (takes effect on next start) */
  writeConfig(config: Record<string, unknown>): Promise<void>
  pid(): number | undefined
  /** exit status of the last run, null while running (or never started) */
  exitStatus(): ExitStatus | null
}

/** process.env without what tap injects for its own children. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('TAP') || k.startsWith('_TAPJS') || k === 'NODE_V8_COVERAGE') continue
    env[k] = v
  }
  return { ...env, ...extra }
}

export async function startMirror(t: Test, opts: MirrorOptions): Promise<Mirror> {
  const cli = opts.cli ?? join(REPO_ROOT, 'dist', 'cli.js')
  if (!existsSync(cli)) throw new Error(`${cli} not found: run \`npm run build\` first`)
  const dir = await makeTemp('stevedore-mirror')
  let svc: Service | undefined
  let torn = false
  t.teardown(async () => {
    torn = true
    try {
      if (svc) await stopService(svc, 'SIGTERM', 5000)
    } catch (err) {
      process.stderr.write(`harness: mirror teardown: ${String(err)}\n`)
    }
    await removeDir(dir)
  })

  const port = opts.port ?? (await freePort())
  const configPath = join(dir, 'config.yaml')
  const stdoutFile = join(dir, 'stdout.log')
  const stderrFile = join(dir, 'stderr.log')
  await writeFile(configPath, stringify(opts.config))
  const url = `${opts.ca !== undefined ? 'https' : 'http'}://127.0.0.1:${port}`
  const env = cleanEnv(opts.env)
  const nodeOptionsArg = opts.env?.NODE_OPTIONS ? [`NODE_OPTIONS=${opts.env.NODE_OPTIONS}`] : []

  const tail = new LogTail(stdoutFile)
  const parsed: Array<Record<string, unknown>> = []
  const poll = (): void => {
    for (const line of tail.read()) {
      try {
        const v: unknown = JSON.parse(line)
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) parsed.push(v as Record<string, unknown>)
      } catch {
        /* not JSON */
      }
    }
  }

  const start = async (): Promise<void> => {
    if (torn) throw new Error('mirror: torn down')
    if (svc && svc.status() === null) throw new Error('mirror: already running')
    const args = [cli, 'serve', '--config', configPath, '--listen', `127.0.0.1:${port}`]
    // tap's @tapjs/processinfo patches child_process.spawn to put its
    // `--import` loader into every child's NODE_OPTIONS; `env` undoes that
    // so the mirror runs as in production (no loader hooks).
    const s = which('env')
      ? spawnService('env', ['-u', 'NODE_OPTIONS', ...nodeOptionsArg, process.execPath, ...args], { cwd: REPO_ROOT, env, stdoutFile, stderrFile })
      : spawnService(process.execPath, args, { cwd: REPO_ROOT, env, stdoutFile, stderrFile })
    svc = s
    // 401: the mirror asks for client credentials (auth.htpasswd), so it is up.
    await waitReady(s, () => httpAnswers(`${url}/v2/`, [200, 401], opts.ca), opts.startTimeoutMs ?? 15_000, `mirror on ${port}`, stderrFile).catch(async (err: unknown) => {
      await stopService(s, 'SIGKILL', 1000)
      throw err
    })
  }
  await start()

  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    configPath,
    logs: () => {
      poll()
      return parsed.slice()
    },
    stderr: () => tailFile(stderrFile, 1 << 20),
    settle: (quietMs = 100) => waitQuiet(stdoutFile, quietMs, 30_000),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (!svc) return { code: null, signal: null }
      const st = await stopService(svc, signal, 15_000)
      return { code: st.code, signal: st.signal }
    },
    start,
    writeConfig: async (config) => {
      await writeFile(configPath, stringify(config))
    },
    pid: () => (svc && svc.status() === null ? svc.child.pid : undefined),
    exitStatus: () => svc?.status() ?? null,
  }
}
