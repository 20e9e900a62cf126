import { parseArgs } from 'node:util'
import { ConfigError } from '../../config/errors.js'
import { basicAuthorization, mirrorCredentials, parseCommandLine, processIo, stopSignal, UsageError, type CommandIo } from '../../cli/usage.js'
import { readCa } from '../../hosts/command.js'
import { parseMirrorUrl } from '../../hosts/toml.js'
import { buildReport, type ReportMirror } from './document.js'
import { fetchReplica, ReplicaError, type Replica } from './fetch.js'
import { renderReport } from './render.js'

export type { ReportDocument, ReportMirror } from './document.js'

export const REPORT_USAGE = `Usage: stevedore report --mirror URL [--mirror URL ...] [options]

What pulls cost, from the mirror's insights API (GET URL/api/v1/summary,
images, layers and pulls): the images that cost nodes the most pull time, the
slowest cold pulls, the largest layers and the images that share them, what
the mirror saved, then size advice. With several replicas, give each one's
own address: each reports the pulls it served, and the report merges them.

  --mirror URL          a replica, e.g. http://10.0.3.17:5000 (repeatable)
  --top N               rows per table (default 10, at most 1000)
  --json                one JSON document instead: the merged data (every row,
                        --top bounds the tables only) and the advice
  --user USER:PASS      the mirror asks for credentials (auth.htpasswd); or set
                        STEVEDORE_AUTH=USER:PASS
  --ca FILE             the mirrors' CA (PEM, with https:// mirrors)
  --help                this text

A replica that cannot be asked is named on stderr and left out; the report
of the others is still printed.

Exit status: 0 every replica answered, 1 a replica (or all) could not be
asked, 2 bad usage.
`

export type ReportIo = CommandIo

export interface ReportOptions {
  /** Waits before each try after the first when a replica gives no answer or a 5xx (default 0.5 s, then 1 s). */
  readonly backoffMs?: readonly number[]
  /** Per connection, headers and body (default 30 s). */
  readonly timeoutMs?: number
  /** The report's time (default now). */
  readonly now?: () => Date
}

// A replica restarting answers again within a second or two; a report is
// asked for by a person, who can run it again.
const BACKOFF_MS = [500, 1000]
const TIMEOUT_MS = 30_000
const MAX_TOP = 1000

interface Parsed {
  readonly mirrors: URL[]
  readonly top: number
  readonly json: boolean
  readonly user?: string
  readonly userFrom?: '--user' | 'STEVEDORE_AUTH'
  readonly caFile?: string
}

function parse(args: string[], env: NodeJS.ProcessEnv): Parsed | 'help' {
  const { values, positionals } = parseArgs({
    args,
    options: {
      mirror: { type: 'string', multiple: true },
      top: { type: 'string' },
      json: { type: 'boolean' },
      user: { type: 'string' },
      ca: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  })
  if (values.help === true) return 'help'
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  if (values.mirror === undefined) throw new UsageError('--mirror is required, e.g. --mirror http://10.0.3.17:5000 (once per replica)')
  // The same address twice would count its pulls twice.
  const byOrigin = new Map(values.mirror.map((m) => parseMirrorUrl(m)).map((u) => [u.origin, u]))
  const mirrors = [...byOrigin.values()]
  let top = 10
  if (values.top !== undefined) {
    top = /^\d+$/.test(values.top) ? Number(values.top) : NaN
    if (!(top >= 1 && top <= MAX_TOP)) throw new UsageError(`--top: must be a whole number from 1 to ${MAX_TOP} (got ${JSON.stringify(values.top)})`)
  }
  const credentials = mirrorCredentials(values.user, env)
  if (values.ca !== undefined && !mirrors.some((m) => m.protocol === 'https:')) throw new UsageError('--ca goes with an https:// --mirror')
  return {
    mirrors,
    top,
    json: values.json === true,
    ...(credentials !== undefined ? { user: credentials.user, userFrom: credentials.from } : {}),
    ...(values.ca !== undefined ? { caFile: values.ca } : {}),
  }
}

const PREFIX = 'stevedore report: '

/**
 * `stevedore report ...`: asks every replica at once, prints the merged
 * report (text or --json) of those that answered; returns the exit status
 * (130 when interrupted).
 */
export async function runReportCommand(args: string[], io: ReportIo = processIo, options: ReportOptions = {}): Promise<number> {
  const p = parseCommandLine(io, 'report', REPORT_USAGE, () => parse(args, io.env))
  if (typeof p === 'number') return p
  if (p.user !== undefined && p.mirrors.some((m) => m.protocol === 'http:')) {
    io.stderr(`${PREFIX}warning: ${p.userFrom ?? '--user'} with an http:// mirror: the credentials travel unencrypted\n`)
  }
  let caPem: string | undefined
  try {
    if (p.caFile !== undefined) caPem = await readCa(p.caFile)
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr(`${PREFIX}${err.message}\n`)
      return 1
    }
    throw err
  }

  const { signal, detach } = stopSignal(io.signal)
  let results: Array<Replica | ReplicaError>
  try {
    results = await Promise.all(p.mirrors.map((mirror) => fetchReplica({
      mirror,
      timeoutMs: options.timeoutMs ?? TIMEOUT_MS,
      backoffMs: options.backoffMs ?? BACKOFF_MS,
      ...(p.user !== undefined ? { authorization: basicAuthorization(p.user) } : {}),
      ...(caPem !== undefined ? { caPem } : {}),
      signal,
      onRetry: (reason, waitMs) => io.stderr(`${PREFIX}${reason}; trying again in ${Math.round(waitMs / 100) / 10} s\n`),
    }).catch((err: unknown) => {
      if (err instanceof ReplicaError) return err
      throw err
    })))
  } finally {
    detach()
  }
  if (signal.aborted) {
    io.stderr(`${PREFIX}interrupted\n`)
    return 130
  }

  const mirrors: ReportMirror[] = []
  const answered: Replica[] = []
  const seen = new Map<string, string>()
  p.mirrors.forEach((mirror, i) => {
    const r = results[i] as Replica | ReplicaError
    if (r instanceof ReplicaError) {
      io.stderr(`${PREFIX}${mirror.origin} left out of the report: ${r.message}\n`)
      mirrors.push({ url: mirror.origin, state: 'missing', error: r.message })
      return
    }
    // The same replica reached twice answers with the same name and the same start of its history;
    // two mirrors on their own disks are both "local" by default, but began apart.
    const identity = `${r.instance} ${r.summary.since}`
    const of = seen.get(identity)
    if (of !== undefined) {
      io.stderr(`${PREFIX}${r.url} answered as ${r.instance}, as ${of} did: counted once\n`)
      mirrors.push({ url: r.url, state: 'duplicate', instance: r.instance, of })
      return
    }
    seen.set(identity, r.url)
    mirrors.push({ url: r.url, state: 'merged', instance: r.instance })
    answered.push(r)
  })
  const missing = mirrors.filter((m) => m.state === 'missing').length
  if (answered.length === 0) {
    io.stderr(`${PREFIX}no replica answered: nothing to report\n`)
    return 1
  }
  const doc = buildReport(mirrors, answered.map((r) => ({ summary: r.summary, images: r.images.images, layers: r.layers.layers, pulls: r.pulls.pulls })), (options.now ?? (() => new Date()))())
  io.stdout(p.json ? `${JSON.stringify(doc, null, 2)}\n` : renderReport(doc, p.top))
  if (missing > 0) io.stderr(`${PREFIX}${missing} of ${p.mirrors.length} replicas left out: the report covers only the pulls of the others\n`)
  return missing > 0 ? 1 : 0
}
