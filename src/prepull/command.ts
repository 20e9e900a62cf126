import { parseArgs } from 'node:util'
import { ConfigError } from '../config/schema.js'
import { formatDuration, parseDuration } from '../config/units.js'
import { basicAuthorization, parseCommandLine, mirrorCredentials, processIo, stopSignal, UsageError, type CommandIo } from '../cli/usage.js'
import { readCa } from '../hosts/command.js'
import { parseMirrorUrl } from '../hosts/toml.js'
import { createLogger } from '../observability/logger.js'
import { CriImageService } from './cri-client.js'
import { mirrorList } from './list.js'
import { prepullLoop, prepullOnce, type PrepullOptions } from './run.js'

export const PREPULL_USAGE = `Usage: stevedore prepull --cri unix:///run/containerd/containerd.sock --mirror URL [options]

Pulls the mirror's pre-pull list (GET URL/api/v1/prepull) into this node's
image store through the CRI ImageService, the store the kubelet uses: a pod
with imagePullPolicy: IfNotPresent then starts without a pull. Each image is
looked up first (ImageStatus) and pulled only when missing (PullImage).
containerd pulls as it always does, through its certs.d hosts.toml, so through
the mirror: the credentials it pulls with are the ones \`stevedore hosts
--auth-file\` wrote there, never those given here.

  --cri ENDPOINT        the runtime's CRI socket, unix:///path (the kubelet's
                        --container-runtime-endpoint)
  --mirror URL          the mirror, e.g. http://10.96.0.50:5000 (for the list only)
  --once                one round, then exit (a Job, a node's boot script)
  --interval DUR        without --once: time between rounds (default 5m, at least 1s)
  --concurrency N       pulls at once on this node (default 2, at most 16)
  --pull-timeout DUR    give up one pull after DUR (default 30m)
  --user USER:PASS      the mirror asks for credentials (auth.htpasswd): used for
                        the list request only (or set STEVEDORE_AUTH=USER:PASS)
  --ca FILE             the mirror's CA (PEM, with an https:// --mirror), for the
                        list request only; containerd trusts it through hosts.toml
  --help                this text

Logs one JSON line per image (pulled, already present, pull failed with the
reason) and one per round, to stdout. Without --once, a round that fails
(the mirror or the runtime unreachable) is logged and tried again at the next
one; SIGTERM or SIGINT cancels pulls in progress and exits 0.

Exit status with --once: 0 every image is present or pulled, 1 an image failed
or the list could not be had, 2 bad usage.
`

export type PrepullIo = CommandIo

// A whole minute between rounds would make tests and first try-outs slow;
// less than a second would make a busy loop of ImageStatus calls.
const MIN_INTERVAL_MS = 1000
const MAX_CONCURRENCY = 16
// Each image is a local lookup first: answered at once by a healthy runtime.
const STATUS_TIMEOUT_MS = 30_000
// The list is a small JSON document from a mirror in the same cluster.
const LIST_TIMEOUT_MS = 30_000

interface Parsed {
  readonly cri: string
  readonly mirror: URL
  readonly once: boolean
  readonly intervalMs: number
  readonly concurrency: number
  readonly pullTimeoutMs: number
  /** `user:pass`, from --user or STEVEDORE_AUTH */
  readonly user?: string
  readonly userFrom?: '--user' | 'STEVEDORE_AUTH'
  readonly caFile?: string
}

function duration(flag: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback
  const ms = parseDuration(text)
  if (ms === undefined || ms < min) throw new UsageError(`${flag}: must be a duration of at least ${formatDuration(min)}, e.g. 5m or 30s (got ${JSON.stringify(text)})`)
  return ms
}

function parse(args: string[], env: NodeJS.ProcessEnv): Parsed | 'help' {
  const { values, positionals } = parseArgs({
    args,
    options: {
      cri: { type: 'string' },
      mirror: { type: 'string' },
      once: { type: 'boolean' },
      interval: { type: 'string' },
      concurrency: { type: 'string' },
      'pull-timeout': { type: 'string' },
      user: { type: 'string' },
      ca: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  })
  if (values.help === true) return 'help'
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  const cri = values.cri
  if (cri === undefined || cri === '') throw new UsageError('--cri is required, e.g. --cri unix:///run/containerd/containerd.sock')
  if (!cri.startsWith('unix://') || cri.length <= 'unix://'.length) throw new UsageError(`--cri: must be unix:///path/to/socket (got ${JSON.stringify(cri)})`)
  if (values.mirror === undefined) throw new UsageError('--mirror is required, e.g. --mirror http://10.96.0.50:5000')
  const mirror = parseMirrorUrl(values.mirror)
  const once = values.once === true
  if (once && values.interval !== undefined) throw new UsageError('--interval goes without --once (one round has no interval)')
  const intervalMs = duration('--interval', values.interval, 5 * 60_000, MIN_INTERVAL_MS)
  const pullTimeoutMs = duration('--pull-timeout', values['pull-timeout'], 30 * 60_000, 1000)
  let concurrency = 2
  if (values.concurrency !== undefined) {
    concurrency = /^\d+$/.test(values.concurrency) ? Number(values.concurrency) : NaN
    if (!(concurrency >= 1 && concurrency <= MAX_CONCURRENCY)) throw new UsageError(`--concurrency: must be a whole number from 1 to ${MAX_CONCURRENCY} (got ${JSON.stringify(values.concurrency)})`)
  }
  const credentials = mirrorCredentials(values.user, env)
  if (values.ca !== undefined && mirror.protocol !== 'https:') throw new UsageError('--ca goes with an https:// --mirror')
  return {
    cri,
    mirror,
    once,
    intervalMs,
    concurrency,
    pullTimeoutMs,
    ...(credentials !== undefined ? { user: credentials.user, userFrom: credentials.from } : {}),
    ...(values.ca !== undefined ? { caFile: values.ca } : {}),
  }
}

/** `stevedore prepull ...`: returns the exit status. */
export async function runPrepullCommand(args: string[], io: PrepullIo = processIo): Promise<number> {
  const p = parseCommandLine(io, 'prepull', PREPULL_USAGE, () => parse(args, io.env))
  if (typeof p === 'number') return p
  if (p.user !== undefined && p.mirror.protocol === 'http:') {
    io.stderr(`stevedore prepull: warning: ${p.userFrom ?? '--user'} with an http:// mirror: the credentials travel unencrypted\n`)
  }
  let caPem: string | undefined
  try {
    if (p.caFile !== undefined) caPem = await readCa(p.caFile)
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr(`stevedore prepull: ${err.message}\n`)
      return 1
    }
    throw err
  }

  const log = createLogger('info').child({ command: 'prepull' })
  const list = mirrorList({
    mirror: p.mirror,
    timeoutMs: LIST_TIMEOUT_MS,
    ...(p.user !== undefined ? { authorization: basicAuthorization(p.user) } : {}),
    ...(caPem !== undefined ? { caPem } : {}),
  })
  const store = new CriImageService(p.cri)
  const { signal, detach } = stopSignal(io.signal)
  const options: PrepullOptions = {
    store,
    list: (s) => list.fetch(s),
    log,
    concurrency: p.concurrency,
    pullTimeoutMs: p.pullTimeoutMs,
    statusTimeoutMs: STATUS_TIMEOUT_MS,
  }
  try {
    log.info({ cri: p.cri, mirror: p.mirror.origin, concurrency: p.concurrency, ...(p.once ? { once: true } : { intervalMs: p.intervalMs }) }, 'prepull started')
    return p.once ? await prepullOnce(options, signal) : await prepullLoop(options, p.intervalMs, signal)
  } finally {
    detach()
    // Both hold sockets: the process exits only once they are closed.
    store.close()
    await list.close()
  }
}
