import { sleep } from '../../lib/abortable-sleep.js'
import { request, type Dispatcher } from 'undici'
import { credentialsRefused, errorMessage, mirrorAgent, readJsonBody, unanswered } from '../../cli/mirror-http.js'
import { parseRetryAfter } from '../../upstream/rate-limit.js'
import type { JobStatus } from '../jobs.js'

/**
 * Why a call to the mirror failed, for the command to turn into one line and
 * an exit status: `auth` (401), `too-many-images` (the job was larger than
 * prefetch.maxImagesPerJob; `limit` is the mirror's, when it named it),
 * `unknown-job` (404 on a job: the mirror restarted and forgot it),
 * `unreachable` (no answer, after the retries), `refused` (any other answer),
 * `interrupted` (`signal` was aborted).
 */
export type MirrorErrorKind = 'auth' | 'too-many-images' | 'unknown-job' | 'unreachable' | 'refused' | 'interrupted'

export class MirrorError extends Error {
  override name = 'MirrorError'
  constructor(readonly kind: MirrorErrorKind, message: string, readonly limit?: number) {
    super(message)
  }
}

export interface ClientOptions {
  /** The mirror's origin, as --mirror gives it. */
  readonly mirror: URL
  /** `Basic …` for a mirror with client auth on. */
  readonly authorization?: string
  /** PEM of a private CA to trust for an https mirror. */
  readonly caPem?: string
  /** For connecting, the headers and the body each. */
  readonly timeoutMs: number
  /** Tries after the first when the mirror cannot be reached or answers 5xx (default 5). */
  readonly unreachableRetries?: number
  /** Tries after the first when the mirror is busy (503/429 with Retry-After) on submit (default 6). */
  readonly busyRetries?: number
  /** Aborts the call in flight and any wait between tries (the operator pressed Ctrl-C). */
  readonly signal?: AbortSignal
  /** Told before each wait, so the operator knows why nothing moves. */
  readonly onRetry?: (reason: string, waitMs: number) => void
}

export interface PrefetchClient {
  /** POST /api/v1/prefetch: the job as accepted; rejects with a MirrorError. */
  submit(images: readonly string[], platforms?: readonly string[]): Promise<JobStatus>
  /** GET the job; rejects with a MirrorError. */
  status(job: JobStatus): Promise<JobStatus>
  /** Closes the connections. */
  close(): Promise<void>
}

// A job of 10,000 images is a few MiB of status; far more is not a job status.
const MAX_BODY = 64 * 1024 * 1024
// A mirror restarting (a rollout of the mirror itself) is back within seconds.
const UNREACHABLE_BACKOFF_MS = [500, 1000, 2000, 4000, 4000]
const DEFAULT_BUSY_WAIT_MS = 5000
const MAX_BUSY_WAIT_MS = 30_000

interface Answer {
  readonly status: number
  readonly headers: Dispatcher.ResponseData['headers']
  readonly body: unknown
}

/** A thrown error that a retry may cure: nothing was answered (or a 5xx was). */
class Transient extends Error {
  constructor(message: string, readonly waitMs?: number) {
    super(message)
  }
}

/** Why nothing was answered; a certificate problem is not cured by asking again. */
function unreachable(url: string, err: unknown): Transient | MirrorError {
  const why = unanswered(url, err)
  return why.retry ? new Transient(why.message) : new MirrorError('unreachable', why.message)
}

function isJobStatus(body: unknown): body is JobStatus {
  const b = body as Partial<JobStatus> | null
  return typeof b?.id === 'string' && typeof b.state === 'string' && Array.isArray(b.images)
}

/** The mirror's prefetch API over undici: one connection pool, bounded waits, every body read or dumped. */
export function prefetchClient(o: ClientOptions): PrefetchClient {
  const agent = mirrorAgent(o.timeoutMs, o.caPem)
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'stevedore-prefetch' }
  if (o.authorization !== undefined) headers['authorization'] = o.authorization

  async function call(method: 'GET' | 'POST', url: string, body?: string): Promise<Answer> {
    let res: Dispatcher.ResponseData
    try {
      res = await request(url, {
        dispatcher: agent,
        method,
        headers: body !== undefined ? { ...headers, 'content-type': 'application/json' } : headers,
        ...(body !== undefined ? { body } : {}),
        headersTimeout: o.timeoutMs,
        bodyTimeout: o.timeoutMs,
        ...(o.signal !== undefined ? { signal: o.signal } : {}),
      })
    } catch (err) {
      if (o.signal?.aborted === true) throw new MirrorError('interrupted', 'interrupted')
      throw unreachable(url, err)
    }
    try {
      const parsed = await readJsonBody(res, MAX_BODY, () => new MirrorError('refused', `${url}: an answer of more than ${MAX_BODY} bytes`))
      return { status: res.statusCode, headers: res.headers, body: parsed }
    } catch (err) {
      if (err instanceof MirrorError) throw err
      res.body.destroy()
      if (o.signal?.aborted === true) throw new MirrorError('interrupted', 'interrupted')
      throw unreachable(url, err)
    }
  }

  /** Maps the answers every call shares; returns the body of a 2xx. */
  function judge(url: string, a: Answer, busy: 'wait' | 'give-up' | 'transient'): unknown {
    if (a.status >= 200 && a.status < 300) return a.body
    const said = errorMessage(a.body)
    const retryAfter = a.headers['retry-after']
    const waitMs = parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter, Date.now())
    if (a.status === 401) {
      throw new MirrorError('auth', credentialsRefused(url, o.authorization !== undefined))
    }
    if ((a.status === 503 || a.status === 429) && busy === 'wait') throw new Transient(`${url}: ${a.status} ${said ?? 'busy'}`, Math.min(waitMs ?? DEFAULT_BUSY_WAIT_MS, MAX_BUSY_WAIT_MS))
    if (a.status === 503 && busy === 'give-up') throw new MirrorError('refused', `${url}: the mirror stayed busy: 503 ${said ?? ''}`.trimEnd())
    if (a.status === 429) throw new MirrorError('auth', `${url}: the mirror refuses this address after too many failed logins (429)${waitMs !== undefined ? `; retry after ${Math.ceil(waitMs / 1000)} s` : ''}`)
    if (a.status >= 500) throw new Transient(`${url}: ${a.status}${said !== undefined ? ` ${said}` : ''}`)
    if (a.status === 400 && said !== undefined && said.includes('maxImagesPerJob')) {
      const limit = /at most (\d+)/.exec(said)?.[1]
      throw new MirrorError('too-many-images', `${url}: ${said}`, limit !== undefined ? Number(limit) : undefined)
    }
    if (a.status === 404) throw new MirrorError('unknown-job', `${url}: 404${said !== undefined ? ` ${said}` : ''}`)
    throw new MirrorError('refused', `${url}: ${a.status}${said !== undefined ? ` ${said}` : ''}`)
  }

  /** One call with its retries: transient failures back off, a busy mirror is waited for as it asks. */
  async function withRetries(method: 'GET' | 'POST', url: string, body: string | undefined): Promise<unknown> {
    const maxUnreachable = o.unreachableRetries ?? UNREACHABLE_BACKOFF_MS.length
    const maxBusy = method === 'POST' ? (o.busyRetries ?? 6) : 0
    let unreachableTries = 0
    let busyTries = 0
    for (;;) {
      try {
        const answer = await call(method, url, body)
        return judge(url, answer, method === 'GET' ? 'transient' : busyTries < maxBusy ? 'wait' : 'give-up')
      } catch (err) {
        if (!(err instanceof Transient)) throw err
        if (err.waitMs !== undefined) {
          busyTries++
          o.onRetry?.(err.message, err.waitMs)
          await sleep(err.waitMs, o.signal)
          if (o.signal?.aborted === true) throw new MirrorError('interrupted', 'interrupted')
          continue
        }
        // A POST that got no answer may still have made a job: a second one
        // warms the same images, which the first one's fills then serve.
        if (unreachableTries >= maxUnreachable) {
          throw new MirrorError('unreachable', `${err.message} (gave up after ${unreachableTries + 1} tries)`)
        }
        const waitMs = UNREACHABLE_BACKOFF_MS[Math.min(unreachableTries, UNREACHABLE_BACKOFF_MS.length - 1)] ?? 4000
        unreachableTries++
        o.onRetry?.(err.message, waitMs)
        await sleep(waitMs, o.signal)
        if (o.signal?.aborted === true) throw new MirrorError('interrupted', 'interrupted')
      }
    }
  }

  const submitUrl = new URL('/api/v1/prefetch', o.mirror).toString()
  return {
    async submit(images, platforms) {
      const body = JSON.stringify({ images, ...(platforms !== undefined && platforms.length > 0 ? { platforms } : {}) })
      let answer: unknown
      try {
        answer = await withRetries('POST', submitUrl, body)
      } catch (err) {
        if (err instanceof MirrorError && err.kind === 'unknown-job') throw new MirrorError('refused', `${err.message} (is --mirror a Stevedore mirror with the prefetch API?)`)
        throw err
      }
      if (!isJobStatus(answer)) throw new MirrorError('refused', `${submitUrl}: the answer is not a prefetch job (is --mirror a Stevedore mirror of this version?)`)
      return answer
    },
    async status(job) {
      const url = new URL(`/api/v1/prefetch/${encodeURIComponent(job.id)}`, o.mirror).toString()
      let answer: unknown
      try {
        answer = await withRetries('GET', url, undefined)
      } catch (err) {
        if (err instanceof MirrorError && err.kind === 'unknown-job') {
          throw new MirrorError('unknown-job', `the mirror no longer knows job ${job.id} (restarted? jobs live in its memory only); what it fetched so far stays cached: run the command again`)
        }
        throw err
      }
      if (!isJobStatus(answer)) throw new MirrorError('refused', `${url}: the answer is not a prefetch job`)
      return answer
    },
    close: () => agent.close(),
  }
}
