import { Readable } from 'node:stream'
import { EnvHttpProxyAgent, errors as undiciErrors, interceptors, type Dispatcher } from 'undici'
import type { UpstreamConfig } from '../config/schema.js'
import { RegistryError } from '../oci/errors.js'
import { parseChallenges, type Challenge } from './challenge.js'
import { UpstreamUnreachableError } from './errors.js'
import { RedirectRules } from './redirects.js'
import { BLOB_RETRIES, METADATA_RETRIES, maxRetries, retryCallback, worstCaseDelayMs, type OnRetry, type RetryPolicy } from './retry.js'
import { TokenCache } from './tokens.js'

/** A response body: a stream that can also be drained at once. */
export type UpstreamBody = Readable & { dump(): Promise<void> }

export interface UpstreamResponse {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  /** Always consumed, dumped or destroyed by whoever receives it. */
  readonly body: UpstreamBody
}

export interface UpstreamRequest {
  readonly method: 'GET' | 'HEAD'
  /** Path and query on the upstream, e.g. `/v2/library/alpine/manifests/3.20`. */
  readonly path: string
  /** The repository, for the token scope. */
  readonly repository: string
  readonly headers?: Record<string, string>
  readonly signal?: AbortSignal
  /** A blob body: cut or stalled transfers resume from the byte reached (else: manifests, tags, tokens, quick retries). */
  readonly resume?: boolean
}

export interface UpstreamClientOptions {
  readonly connectTimeoutMs: number
  readonly readTimeoutMs: number
  /** Sockets per origin; blob fills are long, so keep room for manifests beside them. */
  readonly connections?: number
  readonly userAgent?: string
  /** Called with every upstream answer (metrics, rate-limit tracking). */
  readonly onResponse?: (info: { method: string; status: number; headers: Record<string, string | string[] | undefined>; seconds: number }) => void
  /** Called when an upstream request fails without an answer. */
  readonly onError?: (reason: string) => void
  /** Called before each retry of a transient failure. */
  readonly onRetry?: OnRetry
  /** The error to answer with instead of asking, while the upstream refuses (a 429's Retry-After). */
  readonly refusal?: () => RegistryError | undefined
}

const MAX_REDIRECTS = 5
// Answers undici's retry handler may retry at all; the policy decides which it does (never 429).
const RETRY_STATUSES = [500, 502, 503, 504]

/** No response headers from an upstream within connect + read timeouts. */
class HeadersDeadlineError extends Error {
  readonly code = 'UPSTREAM_HEADERS_TIMEOUT'
  override name = 'HeadersDeadlineError'
}
const REDIRECTS = new Set([301, 302, 303, 307, 308])

/** How an upstream asked us to authenticate, learned from its first 401. */
type AuthMode = { scheme: 'none' } | { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service: string }

/**
 * An HTTP client for one upstream registry: bearer-token and Basic auth,
 * redirects (Authorization never crosses to another host), timeouts, and a
 * keep-alive pool. Never forwards anything of the client's request.
 */
export class UpstreamClient {
  readonly name: string
  readonly origin: string
  private readonly agent: Dispatcher
  private readonly metadata: Dispatcher
  private readonly blobs: Dispatcher
  private readonly redirects: RedirectRules
  private readonly tokens = new TokenCache()
  private auth: AuthMode = { scheme: 'none' }

  constructor(private readonly config: UpstreamConfig, private readonly options: UpstreamClientOptions) {
    this.name = config.name
    this.origin = config.url.origin
    const connect = {
      timeout: options.connectTimeoutMs,
      rejectUnauthorized: !config.insecureSkipVerify,
      ...(config.ca !== undefined ? { ca: config.ca } : {}),
    }
    // EnvHttpProxyAgent honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY and is a plain agent without them.
    this.agent = new EnvHttpProxyAgent({
      connect,
      connections: options.connections ?? 64,
      headersTimeout: options.readTimeoutMs,
      bodyTimeout: options.readTimeoutMs,
      keepAliveTimeout: 30_000,
    })
    // One pool, two retry behaviours: undici's RetryHandler resumes a cut body with a Range request.
    const withRetries = (policy: RetryPolicy): Dispatcher =>
      this.agent.compose(interceptors.retry({ retry: retryCallback(policy, options.onRetry), statusCodes: RETRY_STATUSES, maxRetries: maxRetries(policy) }))
    this.metadata = withRetries(METADATA_RETRIES)
    this.blobs = withRetries(BLOB_RETRIES)
    this.redirects = new RedirectRules(config.url.hostname.toLowerCase().replace(/^\[|\]$/g, ''), config.redirectHosts)
  }

  /** Closes the pool once running requests end. */
  async close(): Promise<void> {
    await this.agent.close()
  }

  /** Destroys every connection now; running requests fail. */
  destroy(): void {
    this.agent.destroy().catch(() => undefined)
  }

  /**
   * Sends a request, authenticating and following redirects as needed. The
   * answer may be any status; a 401/403 here means the upstream refused even
   * after the token flow.
   */
  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const refused = this.options.refusal?.()
    if (refused !== undefined) throw refused
    const scope = `repository:${req.repository}:pull`
    let retriedAuth = false
    let sentToken: string | undefined
    for (;;) {
      const authorization = await this.authorizationFor(scope, sentToken !== undefined && retriedAuth ? sentToken : undefined)
      if (this.auth.scheme === 'bearer') sentToken = authorization
      const res = await this.followRedirects(req, authorization)
      if (res.status !== 401 || retriedAuth) return res
      const challenge = pickChallenge(parseChallenges(res.headers['www-authenticate']))
      const learned = this.learn(challenge)
      if (!learned) return res
      retriedAuth = true
      await res.body.dump()
    }
  }

  /** Updates the auth mode from a challenge; false when there is nothing new to try. */
  private learn(challenge: Challenge | undefined): boolean {
    if (challenge === undefined) return false
    if (challenge.scheme === 'bearer') {
      const realm = challenge.params['realm']
      if (realm === undefined || !URL.canParse(realm)) return false
      // The realm is where the mirror sends its credentials: the redirect rules apply to it too.
      if (this.redirects.refusal(new URL(realm)) !== undefined) return false
      this.auth = { scheme: 'bearer', realm, service: challenge.params['service'] ?? '' }
      return true
    }
    if (challenge.scheme === 'basic') {
      if (this.config.username === undefined) return false
      const wasBasic = this.auth.scheme === 'basic'
      this.auth = { scheme: 'basic' }
      return !wasBasic
    }
    return false
  }

  private async authorizationFor(scope: string, rejectedToken: string | undefined): Promise<string | undefined> {
    const auth = this.auth
    if (auth.scheme === 'basic') return this.basicCredentials()
    if (auth.scheme !== 'bearer') return undefined
    const key = TokenCache.key(auth.realm, auth.service, scope, this.config.username)
    const stale = rejectedToken?.replace(/^Bearer /, '')
    const token = await this.tokens.get(key, () => this.fetchToken(auth.realm, auth.service, scope), stale)
    return `Bearer ${token.value}`
  }

  private basicCredentials(): string | undefined {
    if (this.config.username === undefined || this.config.password === undefined) return undefined
    return `Basic ${Buffer.from(`${this.config.username}:${this.config.password}`).toString('base64')}`
  }

  private async fetchToken(realm: string, service: string, scope: string): Promise<{ value: string; expiresAt: number }> {
    const url = new URL(realm)
    if (service !== '') url.searchParams.set('service', service)
    url.searchParams.set('scope', scope)
    const headers: Record<string, string> = { 'user-agent': this.userAgent() }
    const basic = this.basicCredentials()
    if (basic !== undefined) headers['authorization'] = basic
    const started = Date.now()
    let res: Dispatcher.ResponseData
    try {
      res = await this.metadata.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method: 'GET', headers })
    } catch (err) {
      const last = lastAnswer(err)
      if (last === undefined) {
        this.options.onError?.((err as NodeJS.ErrnoException).code ?? 'network')
        throw new UpstreamUnreachableError(this.name, err)
      }
      this.options.onResponse?.({ method: 'GET', status: last.statusCode, headers: last.headers, seconds: (Date.now() - started) / 1000 })
      throw new RegistryError('UPSTREAM_ERROR', `token service of ${this.name} answered ${last.statusCode}`, { detail: { upstream: this.name, status: last.statusCode } })
    }
    this.options.onResponse?.({ method: 'GET', status: res.statusCode, headers: res.headers, seconds: (Date.now() - started) / 1000 })
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump()
      throw new RegistryError('DENIED', `upstream ${this.name} refused a token`, { detail: { upstream: this.name, status: res.statusCode } })
    }
    if (res.statusCode !== 200) {
      await res.body.dump()
      throw new RegistryError('UPSTREAM_ERROR', `token service of ${this.name} answered ${res.statusCode}`, { detail: { upstream: this.name, status: res.statusCode } })
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown }
    try {
      body = (await res.body.json()) as typeof body
    } catch (err) {
      throw new RegistryError('UPSTREAM_ERROR', `token service of ${this.name} sent an unreadable answer`, { cause: err })
    }
    const value = typeof body.token === 'string' && body.token !== '' ? body.token : body.access_token
    if (typeof value !== 'string' || value === '') throw new RegistryError('UPSTREAM_ERROR', `token service of ${this.name} sent no token`)
    // The token spec's default lifetime is 60 s when expires_in is absent.
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60
    return { value, expiresAt: started + expiresIn * 1000 }
  }

  private userAgent(): string {
    return this.options.userAgent ?? 'stevedore'
  }

  private async followRedirects(req: UpstreamRequest, authorization: string | undefined): Promise<UpstreamResponse> {
    let url = new URL(req.path, this.origin)
    let auth = authorization
    const seen = new Set<string>([url.href])
    const dispatcher = req.resume === true ? this.blobs : this.metadata
    const policy = req.resume === true ? BLOB_RETRIES : METADATA_RETRIES
    const step = this.options.connectTimeoutMs + this.options.readTimeoutMs
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent(), ...req.headers }
      if (auth !== undefined) headers['authorization'] = auth
      let res: { statusCode: number; headers: Record<string, string | string[] | undefined>; body: UpstreamBody }
      const started = process.hrtime.bigint()
      try {
        res = await withHeadersDeadline(
          dispatcher.request({
            origin: url.origin,
            path: `${url.pathname}${url.search}`,
            method: req.method,
            headers,
            ...(req.signal !== undefined ? { signal: req.signal } : {}),
          }),
          2 * step + worstCaseDelayMs(policy),
        )
      } catch (err) {
        if (req.signal?.aborted === true) throw err
        const last = lastAnswer(err)
        if (last === undefined) {
          this.options.onError?.((err as NodeJS.ErrnoException).code ?? 'network')
          throw new UpstreamUnreachableError(this.name, err)
        }
        res = last
      }
      if (req.signal !== undefined) {
        // The caller's signal (a fill's deadline) must still stop the body.
        const body = res.body
        const stop = (): void => {
          body.destroy(req.signal?.reason instanceof Error ? req.signal.reason : new Error('aborted'))
        }
        if (req.signal.aborted) stop()
        else {
          req.signal.addEventListener('abort', stop, { once: true })
          body.once('close', () => req.signal?.removeEventListener('abort', stop))
        }
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      this.options.onResponse?.({ method: req.method, status: res.statusCode, headers: res.headers, seconds })
      const location = res.headers['location']
      if (!REDIRECTS.has(res.statusCode) || typeof location !== 'string') {
        return { status: res.statusCode, headers: res.headers, body: res.body }
      }
      await res.body.dump()
      if (hop >= MAX_REDIRECTS) throw new RegistryError('UPSTREAM_ERROR', `upstream ${this.name} redirected too many times`)
      let next: URL
      try {
        next = new URL(location, url)
      } catch {
        throw new RegistryError('UPSTREAM_ERROR', `upstream ${this.name} sent an unreadable redirect`)
      }
      this.redirects.check(url, next, seen)
      seen.add(next.href)
      // Presigned object-storage URLs carry their own credentials; ours must not follow them.
      if (next.origin !== url.origin) auth = undefined
      url = next
    }
  }
}

/**
 * undici's own timeouts do not cover every stage: a proxy that drops a
 * CONNECT leaves the request pending forever, deaf even to its abort signal.
 * So the answer's headers get one deadline of ours; a late answer is dumped.
 */
function withHeadersDeadline(pending: Promise<Dispatcher.ResponseData>, ms: number): Promise<Dispatcher.ResponseData> {
  return new Promise((resolve, reject) => {
    let late = false
    const timer = setTimeout(() => {
      late = true
      reject(new HeadersDeadlineError(`no answer within ${ms} ms`))
    }, ms)
    pending.then(
      (res) => {
        clearTimeout(timer)
        if (late) res.body.destroy()
        else resolve(res)
      },
      (err: unknown) => {
        clearTimeout(timer)
        reject(err)
      },
    )
  })
}

/**
 * Once its retries are spent, undici's retry handler reports the last 5xx
 * answer as a RequestRetryError: that is still the upstream's answer (a 502
 * to pass on, not "unreachable"). Its body is gone; an empty one stands in.
 */
function lastAnswer(err: unknown): { statusCode: number; headers: Record<string, string | string[] | undefined>; body: UpstreamBody } | undefined {
  if (!(err instanceof undiciErrors.RequestRetryError) || typeof err.statusCode !== 'number' || err.statusCode < 300) return undefined
  const body = Object.assign(Readable.from([]), { dump: async (): Promise<void> => undefined })
  return { statusCode: err.statusCode, headers: (err.headers ?? {}) as Record<string, string | string[] | undefined>, body }
}

function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic')
}
