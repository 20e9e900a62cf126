import { sleep } from '../lib/abortable-sleep.js'
import { basicAuthorization, parseCommandLine, processIo, stopSignal, UsageError, type CommandIo } from '../cli/usage.js'
import { X509Certificate } from 'node:crypto'
import { parseArgs } from 'node:util'
import { ConfigError } from '../config/schema.js'
import { readNamedFile } from '../config/errors.js'
import { parseDuration } from '../config/units.js'
import { applyHosts, removeHosts, type HostsReport } from './apply.js'
import { parseMirrorUrl } from './toml.js'
import { loadUpstreamTargets, type UpstreamTarget } from './upstreams.js'

export const HOSTS_USAGE = `Usage: stevedore hosts --mirror URL --dir DIR [options]

Writes containerd's certs.d layout, DIR/<registry host>/hosts.toml, for every
upstream in the config: containerd pulls through the mirror at URL and goes to
the registry itself when the mirror fails.

  --mirror URL          the mirror as every node reaches it, e.g. http://10.96.0.50:5000
                        (containerd runs in the node's network: no *.svc.cluster.local names)
  --dir DIR             containerd's config_path, e.g. /etc/containerd/certs.d
  --config FILE         Stevedore's config (or STEVEDORE_CONFIG); only upstreams are read
  --registry HOST       only this registry (repeatable; default: every configured upstream)
  --dry-run             print what would be written, change nothing
  --force               replace hosts.toml files that Stevedore did not write
  --remove              delete Stevedore's files (only those carrying its mark)
  --watch               re-apply every minute until SIGTERM (the node DaemonSet)
  --remove-on-exit      with --watch: delete Stevedore's files when stopped
  --dial-timeout DUR    containerd 2.1+ gives up connecting to the mirror after DUR (default 2s)
  --auth-file FILE      the mirror asks for credentials (auth.htpasswd): FILE holds user:password;
                        containerd sends them to the mirror only (hosts.toml becomes mode 0600)
  --ca FILE             the mirror's CA (PEM, with an https:// --mirror): copied to DIR/<host>/ and
                        trusted for the mirror only
  --help                this text

Exit status: 0 done (skipped foreign files included), 1 a file or the config
could not be handled, 2 bad usage.
`

/** Without a signal, `--watch` listens to SIGTERM and SIGINT itself. */
export type HostsIo = CommandIo

const GO_DURATION = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/

interface Parsed {
  readonly mirror?: URL
  readonly dir: string
  readonly config?: string
  readonly registries?: string[]
  readonly dryRun: boolean
  readonly force: boolean
  readonly remove: boolean
  readonly watch: boolean
  readonly removeOnExit: boolean
  readonly intervalMs: number
  readonly dialTimeout: string
  readonly authFile?: string
  readonly caFile?: string
}

function parse(args: string[]): Parsed | 'help' {
  const { values, positionals } = parseArgs({
    args,
    options: {
      mirror: { type: 'string' },
      dir: { type: 'string' },
      config: { type: 'string' },
      registry: { type: 'string', multiple: true },
      'dry-run': { type: 'boolean' },
      force: { type: 'boolean' },
      remove: { type: 'boolean' },
      watch: { type: 'boolean' },
      'remove-on-exit': { type: 'boolean' },
      // Not in the usage text: tests and impatient operators shorten the one-minute period.
      interval: { type: 'string' },
      'dial-timeout': { type: 'string' },
      'auth-file': { type: 'string' },
      ca: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  })
  if (values.help === true) return 'help'
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  const remove = values.remove === true
  const watch = values.watch === true
  const dryRun = values['dry-run'] === true
  const force = values.force === true
  const removeOnExit = values['remove-on-exit'] === true
  if (values.dir === undefined || values.dir === '') throw new UsageError('--dir is required (containerd\'s config_path, e.g. /etc/containerd/certs.d)')
  if (remove && watch) throw new UsageError('--remove and --watch do not go together')
  if (remove && force) throw new UsageError('--remove deletes only the files Stevedore wrote; --force does not apply')
  if (dryRun && watch) throw new UsageError('--dry-run and --watch do not go together')
  if (removeOnExit && !watch) throw new UsageError('--remove-on-exit goes with --watch')
  let mirror: URL | undefined
  if (values.mirror !== undefined) mirror = parseMirrorUrl(values.mirror)
  else if (!remove) throw new UsageError('--mirror is required, e.g. --mirror http://10.96.0.50:5000')
  let intervalMs = 60_000
  if (values.interval !== undefined) {
    const ms = parseDuration(values.interval)
    if (ms === undefined || ms < 100) throw new UsageError(`--interval: must be a duration of at least 100ms (got ${JSON.stringify(values.interval)})`)
    intervalMs = ms
  }
  const dialTimeout = values['dial-timeout'] ?? '2s'
  if (!GO_DURATION.test(dialTimeout)) throw new UsageError(`--dial-timeout: must be a duration such as 2s or 500ms (got ${JSON.stringify(dialTimeout)})`)
  if (values.ca !== undefined && mirror?.protocol !== 'https:') throw new UsageError('--ca goes with an https:// --mirror (containerd verifies nothing over http)')
  const registries = values.registry?.flatMap((r) => r.split(',')).map((r) => r.trim()).filter((r) => r !== '')
  return {
    ...(mirror !== undefined ? { mirror } : {}),
    dir: values.dir,
    ...(values.config !== undefined ? { config: values.config } : {}),
    ...(registries !== undefined && registries.length > 0 ? { registries } : {}),
    dryRun,
    force,
    remove,
    watch,
    removeOnExit,
    intervalMs,
    dialTimeout,
    ...(values['auth-file'] !== undefined ? { authFile: values['auth-file'] } : {}),
    ...(values.ca !== undefined ? { caFile: values.ca } : {}),
  }
}

/** The Authorization header from an --auth-file holding `user:password` (re-read every round: Secrets rotate). */
async function readAuthorization(file: string): Promise<string> {
  const text = (await readNamedFile('--auth-file', file)).trim()
  if (!/^[^:\s]+:\S.*$/.test(text) || text.includes('\n')) throw new ConfigError('--auth-file', `${file}: must hold one line, user:password`)
  return basicAuthorization(text)
}

/** The PEM of a --ca file, checked to be a certificate. */
export async function readCa(file: string): Promise<string> {
  const pem = await readNamedFile('--ca', file)
  try {
    new X509Certificate(pem)
  } catch {
    throw new ConfigError('--ca', `${file}: not a PEM certificate`)
  }
  return pem
}

export function formatReport(r: HostsReport): string {
  const head = `${r.action.padEnd(12)} ${r.path}${r.reason !== undefined ? `: ${r.reason}` : ''}\n`
  return r.content !== undefined ? `${head}${r.content.replace(/^/gm, '    ')}\n` : head
}

/** Report lines go to stdout; `error` lines to stderr. */
function emit(io: HostsIo, r: HostsReport): void {
  const write = r.action === 'error' ? io.stderr : io.stdout
  write(formatReport(r))
}

function selectTargets(all: UpstreamTarget[], registries: readonly string[] | undefined): UpstreamTarget[] {
  if (registries === undefined) return all
  return registries.map((name) => {
    const target = all.find((t) => t.name === name)
    if (target === undefined) {
      throw new UsageError(`--registry ${name}: not an upstream in the config (configured: ${all.map((t) => t.name).join(', ')}); the mirror would refuse it`)
    }
    return target
  })
}

async function applyOnce(p: Parsed, io: HostsIo): Promise<HostsReport[]> {
  const all = await loadUpstreamTargets(p.config, io.env)
  const authorization = p.authFile !== undefined ? await readAuthorization(p.authFile) : undefined
  const caPem = p.caFile !== undefined ? await readCa(p.caFile) : undefined
  return applyHosts({
    ...(authorization !== undefined ? { authorization } : {}),
    ...(caPem !== undefined ? { caPem } : {}),
    dir: p.dir,
    mirror: p.mirror as URL,
    targets: selectTargets(all, p.registries),
    dialTimeout: p.dialTimeout,
    force: p.force,
    dryRun: p.dryRun,
    prune: p.registries === undefined,
  })
}

const failed = (reports: readonly HostsReport[]): boolean => reports.some((r) => r.action === 'error')

async function watchLoop(p: Parsed, io: HostsIo): Promise<number> {
  const { signal, detach } = stopSignal(io.signal)
  try {
    io.stdout(`watching: re-applying every ${p.intervalMs / 1000}s\n`)
    let previous = new Set<string>()
    let first = true
    while (!signal.aborted) {
      let lines: string[]
      try {
        const reports = await applyOnce(p, io)
        // Each round says only what changed since the last one: a quiet log while all is well.
        lines = reports.filter((r) => first || r.action !== 'unchanged').map(formatReport)
      } catch (err) {
        lines = [`error        ${err instanceof Error ? err.message : String(err)}; files left as they are\n`]
      }
      for (const line of lines) {
        if (previous.has(line)) continue
        const write = line.startsWith('error') ? io.stderr : io.stdout
        write(line)
      }
      previous = new Set(lines)
      first = false
      await sleep(p.intervalMs, signal)
    }
    if (p.removeOnExit) {
      const reports = await removeHosts({ dir: p.dir, dryRun: false, ...(p.registries !== undefined ? { registries: p.registries } : {}) })
      for (const r of reports) emit(io, r)
      io.stdout('stopped; removed stevedore\'s files\n')
      return failed(reports) ? 1 : 0
    }
    io.stdout('stopped\n')
    return 0
  } finally {
    detach()
  }
}

/** `stevedore hosts ...`: returns the exit status. */
export async function runHostsCommand(args: string[], io: HostsIo = processIo): Promise<number> {
  const p = parseCommandLine(io, 'hosts', HOSTS_USAGE, () => parse(args))
  if (typeof p === 'number') return p
  if (p.authFile !== undefined && p.mirror?.protocol === 'http:') {
    io.stderr('stevedore hosts: warning: --auth-file with an http:// mirror: containerd sends the credentials unencrypted\n')
  }
  try {
    if (p.remove) {
      const reports = await removeHosts({ dir: p.dir, dryRun: p.dryRun, ...(p.registries !== undefined ? { registries: p.registries } : {}) })
      for (const r of reports) emit(io, r)
      if (reports.length === 0) io.stdout(`nothing to remove under ${p.dir}\n`)
      return failed(reports) ? 1 : 0
    }
    if (p.watch) return await watchLoop(p, io)
    const reports = await applyOnce(p, io)
    for (const r of reports) emit(io, r)
    return failed(reports) ? 1 : 0
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`stevedore hosts: ${err.message}\n`)
      return 2
    }
    if (err instanceof ConfigError) {
      io.stderr(`stevedore hosts: ${err.message}\n`)
      return 1
    }
    throw err
  }
}
