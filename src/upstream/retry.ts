import type { RetryHandler } from 'undici'

/** A backoff schedule: how many retries, and how long before each. */
export interface Backoff {
  /** Retries after the first attempt. */
  readonly retries: number
  /** Delay before the first retry; doubles each time, with jitter. */
  readonly baseDelayMs: number
  readonly maxDelayMs: number
}

/**
 * How a kind of upstream request is retried. Failures before an answer
 * (refused, reset, a 5xx) get the quick schedule, so containerd still falls
 * back to the registry in time; a body cut or stalled after bytes arrived
 * gets the resume schedule. 429 is never retried: a rate limit is kept and
 * honoured, not hammered.
 */
export interface RetryPolicy {
  readonly quick: Backoff
  /** Undefined: bodies are not resumed. */
  readonly resume?: Backoff
}

// Connection-level failures: no answer came.
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT'])
// A connection that broke while an answer was coming: resumable when bytes had arrived.
const BROKEN_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_BODY_TIMEOUT'])
const SERVER_ERRORS = new Set([500, 502, 503, 504])

/** About 2 s in all: 100 + 200 + 400 ms, each ×0.5–1.5 jitter, plus the attempts themselves. */
const QUICK: Backoff = { retries: 3, baseDelayMs: 100, maxDelayMs: 400 }

/** Manifests, tags and tokens: containerd waits for these. */
export const METADATA_RETRIES: RetryPolicy = { quick: QUICK }

/**
 * Blob bodies: a transfer cut or stalled before its Content-Length resumes
 * from the byte reached (undici's RetryHandler asks `Range: bytes=N-` and
 * checks the Content-Range lines up), up to 5 times.
 */
export const BLOB_RETRIES: RetryPolicy = { quick: QUICK, resume: { retries: 5, baseDelayMs: 200, maxDelayMs: 3200 } }

/** Told of every retry, for logs and metrics. */
export type OnRetry = (info: { attempt: number; delayMs: number; reason: string }) => void

/** undici's retry callback for a policy: exponential backoff with jitter, only for transient failures. */
export function retryCallback(policy: RetryPolicy, onRetry?: OnRetry, random: () => number = Math.random): RetryHandler.RetryCallback {
  return (err, { state }, done) => {
    const status = (err as { statusCode?: number }).statusCode
    const code = (err as { code?: string }).code
    let schedule: Backoff | undefined
    if (status !== undefined && status > 0) schedule = SERVER_ERRORS.has(status) ? policy.quick : undefined
    else if (code !== undefined && CONNECT_ERRORS.has(code)) schedule = policy.quick
    else if (code !== undefined && BROKEN_ERRORS.has(code)) schedule = policy.resume ?? policy.quick
    if (schedule === undefined || state.counter > schedule.retries) {
      done(err)
      return
    }
    const delayMs = Math.round(Math.min(schedule.maxDelayMs, schedule.baseDelayMs * 2 ** (state.counter - 1)) * (0.5 + random()))
    onRetry?.({ attempt: state.counter, delayMs, reason: status !== undefined && status > 0 ? `HTTP ${status}` : (code ?? err.message) })
    setTimeout(() => done(null), delayMs)
  }
}

/** The longest a policy can sleep before an answer: bounds the wait for an answer's headers. */
export function worstCaseDelayMs(policy: RetryPolicy): number {
  let total = 0
  for (let i = 0; i < policy.quick.retries; i++) total += Math.min(policy.quick.maxDelayMs, policy.quick.baseDelayMs * 2 ** i) * 1.5
  return Math.ceil(total)
}

/** The most retries a policy allows, whatever the failure (undici's own cap). */
export function maxRetries(policy: RetryPolicy): number {
  return Math.max(policy.quick.retries, policy.resume?.retries ?? 0)
}
