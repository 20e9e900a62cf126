// What the commands that talk to a running mirror share: their I/O, usage
// errors (exit status 2), the mirror's client credentials, the stop signal.
import { MirrorUrlError } from '../hosts/toml.js'

/** Where a command writes and what it reads of the process; tests pass their own. */
export interface CommandIo {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  readonly env: NodeJS.ProcessEnv
  /** Aborted when the process is asked to stop. Undefined: SIGTERM and SIGINT are listened to by the command. */
  readonly signal?: AbortSignal
}

export const processIo: CommandIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  env: process.env,
}

/** The command line is wrong: the command prints the message and its usage, and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** A command line the command cannot take: ours, a bad --mirror, or one node's parseArgs refused. */
export function isUsageError(err: unknown): err is Error {
  return err instanceof UsageError || err instanceof MirrorUrlError || (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true)
}

/**
 * The parsed command line, or the exit status when there is nothing to run:
 * 0 after printing the usage for --help, 2 after printing what is wrong with it.
 */
export function parseCommandLine<P>(io: CommandIo, command: string, usage: string, parse: () => P | 'help'): P | number {
  let parsed: P | 'help'
  try {
    parsed = parse()
  } catch (err) {
    if (!isUsageError(err)) throw err
    io.stderr(`stevedore ${command}: ${err.message}\n\n${usage}`)
    return 2
  }
  if (parsed !== 'help') return parsed
  io.stdout(usage)
  return 0
}

export interface MirrorCredentials {
  /** `user:pass`. */
  readonly user: string
  /** Where it came from, for messages: never the value, which holds a password. */
  readonly from: '--user' | 'STEVEDORE_AUTH'
}

/** `--user USER:PASS`, else `STEVEDORE_AUTH` (which keeps the password out of `ps`); undefined when neither is set. */
export function mirrorCredentials(flag: string | undefined, env: NodeJS.ProcessEnv): MirrorCredentials | undefined {
  const fromEnv = env['STEVEDORE_AUTH']?.trim()
  const found: MirrorCredentials | undefined = flag !== undefined
    ? { user: flag, from: '--user' }
    : fromEnv !== undefined && fromEnv !== '' ? { user: fromEnv, from: 'STEVEDORE_AUTH' } : undefined
  if (found !== undefined && !/^[^:\s]+:\S.*$/.test(found.user)) throw new UsageError(`${found.from}: must be USER:PASS`)
  return found
}

/** The Basic Authorization header for `user:pass`. */
export function basicAuthorization(userPass: string): string {
  return `Basic ${Buffer.from(userPass).toString('base64')}`
}

/** The stop signal of a command: the caller's (tests), or SIGTERM/SIGINT; `detach` removes the listeners again. */
export function stopSignal(given: AbortSignal | undefined): { signal: AbortSignal; detach: () => void } {
  if (given !== undefined) return { signal: given, detach: () => undefined }
  const controller = new AbortController()
  const stop = (): void => controller.abort()
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  return {
    signal: controller.signal,
    detach: () => {
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
    },
  }
}
