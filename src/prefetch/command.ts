import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ConfigError } from '../config/errors.js'
import { PLATFORM } from '../config/warming.js'
import { basicAuthorization, isUsageError, mirrorCredentials, processIo, stopSignal, UsageError, type CommandIo } from '../cli/usage.js'
import { readCa } from '../hosts/command.js'
import { parseMirrorUrl } from '../hosts/toml.js'
import { parseImageReference } from '../oci/reference.js'
import { prefetchClient } from './cli/client.js'
import { barProgress, lineProgress, silentProgress, type Progress, type TerminalStream } from './cli/progress.js'
import { runPrefetch } from './cli/run.js'

export const PREFETCH_USAGE = `Usage: stevedore prefetch --mirror URL [options] IMAGE...

Asks a running mirror to fetch images into its cache now (POST URL/api/v1/prefetch),
then follows the job until every image is warm or has failed: a rollout's first
pulls then come from the cache, and still work if the registry goes down.

  --mirror URL          the mirror, e.g. http://10.96.0.50:5000
  --platform P          platforms to fetch of a multi-platform image, e.g. linux/amd64
                        (repeatable or comma-separated; default: the mirror's prefetch.platforms)
  --file F              more images, one per line (blank lines and # comments ignored);
                        - (or a lone - among the images) reads them from stdin
  --json                print the final job status (the API's JSON, one line per job) on
                        stdout, and nothing else there
  --user USER:PASS      the mirror asks for credentials (auth.htpasswd); or set
                        STEVEDORE_AUTH=USER:PASS
  --ca FILE             the mirror's CA (PEM, with an https:// --mirror)
  --help                this text

Progress goes to stderr: a bar per image on a terminal, else a line whenever an
image's state or layer counts change. A table of every image follows on stdout.
Images of a job the mirror does not take at once (prefetch.maxImagesPerJob) are
sent in several jobs.

Exit status: 0 every image is in the cache, 1 an image failed or was refused
(each named on stderr) or the mirror could not be asked, 2 bad usage.
`

export interface PrefetchIo extends CommandIo {
  /** Where bars are drawn when it is a terminal. */
  readonly stderrStream: TerminalStream
  readonly stdin: NodeJS.ReadableStream
}

const defaultIo: PrefetchIo = { ...processIo, stderrStream: process.stderr, stdin: process.stdin }

// A job's status is small JSON from a mirror in the same network; a mirror
// that does not answer in this long is not going to.
const TIMEOUT_MS = 30_000
const POLL_MS = 500
// prefetch.maxImagesPerJob's default: a mirror with a lower one says so, and the images are re-split.
const JOB_SIZE = 256

interface Parsed {
  readonly mirror: URL
  readonly platforms?: string[]
  readonly images: string[]
  readonly files: string[]
  readonly json: boolean
  /** `user:pass`, from --user or STEVEDORE_AUTH */
  readonly user?: string
  readonly caFile?: string
}

function parse(args: string[], env: NodeJS.ProcessEnv): Parsed | 'help' {
  const { values, positionals } = parseArgs({
    args,
    options: {
      mirror: { type: 'string' },
      platform: { type: 'string', multiple: true },
      file: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      user: { type: 'string' },
      ca: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  })
  if (values.help === true) return 'help'
  if (values.mirror === undefined) throw new UsageError('--mirror is required, e.g. --mirror http://10.96.0.50:5000')
  const mirror = parseMirrorUrl(values.mirror)
  const platforms = values.platform?.flatMap((p) => p.split(',')).map((p) => p.trim()).filter((p) => p !== '')
  const bad = platforms?.find((p) => !PLATFORM.test(p))
  if (bad !== undefined) throw new UsageError(`--platform: must be os/architecture[/variant] such as linux/amd64 or linux/arm/v7 (got ${JSON.stringify(bad)})`)
  if (values.platform !== undefined && platforms?.length === 0) throw new UsageError('--platform: empty')
  const user = mirrorCredentials(values.user, env)?.user
  if (values.ca !== undefined && mirror.protocol !== 'https:') throw new UsageError('--ca goes with an https:// --mirror')
  const files = [...(values.file ?? []), ...positionals.filter((p) => p === '-')]
  if (files.filter((f) => f === '-').length > 1) throw new UsageError('stdin (-) can be read once')
  return {
    mirror,
    ...(platforms !== undefined ? { platforms: [...new Set(platforms)] } : {}),
    images: positionals.filter((p) => p !== '-'),
    files,
    json: values.json === true,
    ...(user !== undefined ? { user } : {}),
    ...(values.ca !== undefined ? { caFile: values.ca } : {}),
  }
}

async function readStdin(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
  return Buffer.concat(chunks).toString('utf8')
}

/** One reference a line; `#` starts a comment (no reference holds one). */
function referencesIn(text: string): string[] {
  return text.split(/\r?\n/).map((line) => line.replace(/#.*$/, '').trim()).filter((line) => line !== '')
}

/** The images of the arguments and the files, in order, each once; a usage error names the first that is not a reference. */
async function gatherImages(p: Parsed, stdin: NodeJS.ReadableStream): Promise<string[]> {
  const all = [...p.images]
  for (const file of p.files) {
    let text: string
    try {
      text = file === '-' ? await readStdin(stdin) : await readFile(file, 'utf8')
    } catch (err) {
      throw new UsageError(`--file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
    all.push(...referencesIn(text))
  }
  const images = [...new Set(all)]
  if (images.length === 0) throw new UsageError('no images given: name them as arguments, or in --file F (- for stdin)')
  const bad = images.find((i) => parseImageReference(i) === undefined)
  if (bad !== undefined) throw new UsageError(`${JSON.stringify(bad)} is not an image reference`)
  return images
}


/** `stevedore prefetch ...`: returns the exit status. */
export async function runPrefetchCommand(args: string[], io: PrefetchIo = defaultIo): Promise<number> {
  let p: Parsed | 'help'
  let images: string[]
  let caPem: string | undefined
  try {
    p = parse(args, io.env)
    if (p === 'help') {
      io.stdout(PREFETCH_USAGE)
      return 0
    }
    images = await gatherImages(p, io.stdin)
    if (p.caFile !== undefined) caPem = await readCa(p.caFile)
  } catch (err) {
    if (isUsageError(err)) {
      io.stderr(`stevedore prefetch: ${err.message}\n\n${PREFETCH_USAGE}`)
      return 2
    }
    if (err instanceof ConfigError) {
      io.stderr(`stevedore prefetch: ${err.message}\n`)
      return 2
    }
    throw err
  }

  let progress: Progress
  if (p.json) progress = silentProgress(io.stderr)
  else if (io.stderrStream.isTTY === true) progress = barProgress(io.stderrStream, images)
  else progress = lineProgress(io.stderr)
  const { signal, detach } = stopSignal(io.signal)
  const client = prefetchClient({
    mirror: p.mirror,
    timeoutMs: TIMEOUT_MS,
    ...(p.user !== undefined ? { authorization: basicAuthorization(p.user) } : {}),
    ...(caPem !== undefined ? { caPem } : {}),
    onRetry: (reason, waitMs) => progress.note(`${reason}; trying again in ${Math.round(waitMs / 100) / 10} s`),
    signal,
  })
  try {
    return await runPrefetch({
      client,
      images,
      ...(p.platforms !== undefined ? { platforms: p.platforms } : {}),
      progress,
      json: p.json,
      stdout: io.stdout,
      stderr: io.stderr,
      pollMs: POLL_MS,
      jobSize: JOB_SIZE,
      signal,
    })
  } finally {
    progress.stop()
    detach()
    // Its sockets would keep the process alive.
    await client.close()
  }
}
