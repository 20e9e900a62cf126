// One replica's insights, as `stevedore report` asks for them: the summary,
// images, layers and recent pulls, each a GET of the mirror's API.
import { request, type Dispatcher } from 'undici'
import { credentialsRefused, errorMessage, mirrorAgent, readJsonBody, unanswered } from '../../cli/mirror-http.js'
import { sleep } from '../../lib/abortable-sleep.js'
import type { ImagesResponse, LayersResponse, PullsResponse, Summary } from '../types.js'

/** Why a replica is left out of the report: `auth` (401/429), `unreachable` (no answer after the retries), `refused` (any other answer), `interrupted`. */
export type ReplicaErrorKind = 'auth' | 'unreachable' | 'refused' | 'interrupted'

export class ReplicaError extends Error {
  override name = 'ReplicaError'
  constructor(readonly kind: ReplicaErrorKind, message: string) {
    super(message)
  }
}

/** What one replica answered: four documents from the same instance. */
export interface Replica {
  /** The --mirror it was asked at. */
  readonly url: string
  readonly instance: string
  readonly summary: Summary
  readonly images: ImagesResponse
  readonly layers: LayersResponse
  readonly pulls: PullsResponse
}

export interface FetchOptions {
  readonly mirror: URL
  /** `Basic …` for a mirror with client auth on. */
  readonly authorization?: string
  /** PEM of a private CA to trust for an https mirror. */
  readonly caPem?: string
  /** For connecting, the headers and the body each. */
  readonly timeoutMs: number
  /** Waits before each try after the first, when there was no answer or a 5xx. */
  readonly backoffMs: readonly number[]
  readonly signal?: AbortSignal
  /** Told before each wait. */
  readonly onRetry?: (reason: string, waitMs: number) => void
}

// The API's largest answer with the default bounds: 2000 images with their samples and layers, about 10 MB.
const MAX_BODY = 64 * 1024 * 1024
/**
 * What the report asks each replica for: everything it keeps (a limit above a
 * replica's bounds means all). The size advice and unique bytes need every
 * image, not a top slice, or an image past the slice would look unshared.
 */
export const ENDPOINTS = {
  summary: '/api/v1/summary',
  images: '/api/v1/images?limit=1000000',
  layers: '/api/v1/layers?limit=1000000',
  pulls: '/api/v1/pulls?limit=1000000',
} as const

/** A failure that asking again may cure: no answer, or a 5xx. */
class Transient extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Whether the answer names its instance and has the list, every entry an object with the string `key`. */
function listOf(body: unknown, list: string, key: string): boolean {
  if (!isObject(body) || typeof body['instance'] !== 'string') return false
  const entries = body[list]
  return Array.isArray(entries) && entries.every((e) => isObject(e) && typeof e[key] === 'string')
}

function isSummary(body: unknown): body is Summary {
  return isObject(body) && typeof body['instance'] === 'string' && isObject(body['requests']) && isObject(body['bytes']) &&
    isObject(body['upstreamSaved']) && isObject(body['pulls']) && isObject(body['cache']) && Array.isArray(body['upstreams'])
}

const SHAPES: Record<keyof typeof ENDPOINTS, (body: unknown) => boolean> = {
  summary: isSummary,
  images: (b) => listOf(b, 'images', 'image'),
  layers: (b) => listOf(b, 'layers', 'digest'),
  pulls: (b) => listOf(b, 'pulls', 'image'),
}

/** One GET, its answer judged: the JSON of a 2xx, else a ReplicaError (or a Transient to retry). */
async function getOnce(agent: Dispatcher, url: string, o: FetchOptions): Promise<unknown> {
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'stevedore-report' }
  if (o.authorization !== undefined) headers['authorization'] = o.authorization
  let res: Dispatcher.ResponseData
  try {
    res = await request(url, { dispatcher: agent, method: 'GET', headers, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs, ...(o.signal !== undefined ? { signal: o.signal } : {}) })
  } catch (err) {
    if (o.signal?.aborted === true) throw new ReplicaError('interrupted', 'interrupted')
    const why = unanswered(url, err)
    throw why.retry ? new Transient(why.message) : new ReplicaError('unreachable', why.message)
  }
  let body: unknown
  try {
    body = await readJsonBody(res, MAX_BODY, () => new ReplicaError('refused', `${url}: an answer of more than ${MAX_BODY} bytes`))
  } catch (err) {
    if (err instanceof ReplicaError) throw err
    res.body.destroy()
    if (o.signal?.aborted === true) throw new ReplicaError('interrupted', 'interrupted')
    throw new Transient(unanswered(url, err).message)
  }
  const status = res.statusCode
  if (status >= 200 && status < 300) return body
  const said = errorMessage(body)
  if (status === 401) throw new ReplicaError('auth', credentialsRefused(url, o.authorization !== undefined))
  if (status === 429) throw new ReplicaError('auth', `${url}: the mirror refuses this address after too many failed logins (429)`)
  if (status >= 500) throw new Transient(`${url}: ${status}${said !== undefined ? ` ${said}` : ''}`)
  if (status === 404) throw new ReplicaError('refused', `${url}: 404${said !== undefined ? ` ${said}` : ''} (is --mirror a Stevedore mirror with the insights API?)`)
  throw new ReplicaError('refused', `${url}: ${status}${said !== undefined ? ` ${said}` : ''}`)
}

async function getWithRetries(agent: Dispatcher, url: string, o: FetchOptions): Promise<unknown> {
  for (let tries = 0; ; tries++) {
    try {
      return await getOnce(agent, url, o)
    } catch (err) {
      if (!(err instanceof Transient)) throw err
      const waitMs = o.backoffMs[tries]
      if (waitMs === undefined) throw new ReplicaError('unreachable', `${err.message} (gave up after ${tries + 1} ${tries === 0 ? 'try' : 'tries'})`)
      o.onRetry?.(err.message, waitMs)
      await sleep(waitMs, o.signal)
      if (o.signal?.aborted === true) throw new ReplicaError('interrupted', 'interrupted')
    }
  }
}

/** Asks one replica for the summary, then the images, layers and pulls at once; rejects with a ReplicaError. */
export async function fetchReplica(o: FetchOptions): Promise<Replica> {
  const agent = mirrorAgent(o.timeoutMs, o.caPem)
  // The first failure settles the replica: the others stop asking (and waiting to ask again).
  const settled = new AbortController()
  const each: FetchOptions = { ...o, signal: o.signal !== undefined ? AbortSignal.any([o.signal, settled.signal]) : settled.signal }
  const get = async (name: keyof typeof ENDPOINTS): Promise<unknown> => {
    const url = new URL(ENDPOINTS[name], o.mirror).toString()
    try {
      const body = await getWithRetries(agent, url, each)
      if (!SHAPES[name](body)) throw new ReplicaError('refused', `${url}: the answer is not the insights API's JSON (is --mirror a Stevedore mirror of this version?)`)
      return body
    } catch (err) {
      settled.abort()
      throw err
    }
  }
  try {
    // The summary first: a replica that is down or refuses is told (and retried) once, not four times.
    const summary = await get('summary') as Summary
    const [images, layers, pulls] = await Promise.all([get('images'), get('layers'), get('pulls')]) as [ImagesResponse, LayersResponse, PullsResponse]
    const instances = new Set([summary.instance, images.instance, layers.instance, pulls.instance])
    // A Service address spreads the four requests over several replicas: their figures would not belong together.
    if (instances.size > 1) {
      throw new ReplicaError('refused', `${o.mirror.origin}: answered by several replicas (${[...instances].join(', ')}): a load-balanced address; give each replica's own address with --mirror`)
    }
    return { url: o.mirror.origin, instance: summary.instance, summary, images, layers, pulls }
  } finally {
    settled.abort()
    await agent.close()
  }
}
