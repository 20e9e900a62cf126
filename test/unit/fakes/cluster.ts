// FAKES for the cluster unit tests: a DNS resolver and a health probe whose
// answers a test sets by hand, each recording what it was asked. The real
// probe (PeerClient.probe over HTTP) is tested in peer-client.test.ts.
import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'

/** A resolver answering from `answer` (addresses, or an error to throw), counting its calls. */
export class FakeResolver {
  answer: string[] | Error
  calls = 0
  readonly hosts: string[] = []

  constructor(answer: string[] | Error) {
    this.answer = answer
  }

  readonly resolve = async (host: string): Promise<string[]> => {
    this.calls++
    this.hosts.push(host)
    if (this.answer instanceof Error) throw this.answer
    return [...this.answer]
  }
}

type ProbeAnswer = 'healthy' | 'unhealthy' | 'throws' | 'hangs' | 'ignores-signal'

/**
 * A probe answering per origin: healthy, unhealthy, throws, hangs (until its
 * signal aborts) or ignores-signal (never settles at all). Unlisted origins
 * are unhealthy. While `held` is set, every probe waits for release() first.
 */
export class FakeProbe {
  readonly answers = new Map<string, ProbeAnswer>()
  readonly calls: string[] = []
  readonly aborted: string[] = []
  private held: { promise: Promise<void>; release: () => void } | undefined

  set(origin: string, answer: ProbeAnswer): this {
    this.answers.set(origin, answer)
    return this
  }

  /** Probes from now on wait until release(). */
  hold(): void {
    let release = (): void => undefined
    const promise = new Promise<void>((resolve) => {
      release = resolve
    })
    this.held = { promise, release }
  }

  release(): void {
    this.held?.release()
    this.held = undefined
  }

  count(origin: string): number {
    return this.calls.filter((o) => o === origin).length
  }

  readonly probe = async (origin: string, signal: AbortSignal): Promise<boolean> => {
    this.calls.push(origin)
    signal.addEventListener('abort', () => this.aborted.push(origin), { once: true })
    if (this.held !== undefined) await this.held.promise
    const answer = this.answers.get(origin) ?? 'unhealthy'
    switch (answer) {
      case 'healthy':
        return true
      case 'unhealthy':
        return false
      case 'throws':
        throw new Error(`fake probe: ${origin} refused`)
      case 'hangs':
        return new Promise<boolean>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))
      case 'ignores-signal':
        return new Promise<boolean>(() => undefined)
    }
  }
}

/** A pino logger whose lines a test reads back as objects. */
export function capturedLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { log: pino({ level: 'debug' }, sink), lines }
}
