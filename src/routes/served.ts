import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CacheResult } from '../cache/blobs.js'
import type { Mirror } from '../mirror.js'

/** Who asked: what the mirror can tell one puller from another. */
export interface ClientId {
  readonly address: string
  readonly userAgent: string | undefined
}

/** A blob GET that is about to send: a pull is not over while one runs. */
export interface BlobStarted {
  /** Matches the `seq` of its ServedRequest. */
  readonly seq: number
  readonly upstream: string
  readonly repository: string
  readonly digest: string
  readonly client: ClientId
  /** ms since the epoch */
  readonly at: number
}

/** A manifest or blob request, answered (or cut). */
export interface ServedRequest {
  readonly seq: number
  readonly kind: 'manifest' | 'blob'
  readonly method: string
  readonly status: number
  readonly upstream: string
  readonly repository: string
  /** The tag a manifest was asked for by. */
  readonly tag: string | undefined
  /** The manifest's or blob's digest, once known. */
  readonly digest: string | undefined
  /** The manifest answered (not copied: the cache's own bytes). */
  readonly manifest: { readonly mediaType: string; readonly bytes: Buffer } | undefined
  readonly cache: CacheResult | undefined
  /** Answered with a redirect to the store: the client fetches the bytes from there. */
  readonly redirect: boolean
  /** Body bytes sent: 0 for HEAD, redirects and responses cut before their end. */
  readonly bytes: number
  /** The whole response was handed to the socket. */
  readonly complete: boolean
  readonly client: ClientId
  /** ms since the epoch */
  readonly startedAt: number
  readonly firstByteAt: number | undefined
  readonly endedAt: number
}

/** Hears every manifest and blob request the mirror answers (insights). Must not throw or block. */
export interface RequestListener {
  blobStarted(started: BlobStarted): void
  served(request: ServedRequest): void
}

let nextSeq = 0

/** A request's number, for matching its start to its end. */
export const requestSeq = (): number => ++nextSeq

// Enough for any real client's; a 16 KB one must not be kept per pull.
const MAX_USER_AGENT = 256

const clientOf = (request: FastifyRequest): ClientId => {
  const ua = request.headers['user-agent']
  return { address: request.ip, userAgent: ua !== undefined && ua.length > MAX_USER_AGENT ? ua.slice(0, MAX_USER_AGENT) : ua }
}

/** Tells the listeners a blob GET begins sending. */
export function announceBlobStart(mirror: Mirror, request: FastifyRequest): void {
  const ctx = request.stevedore
  if (mirror.requestListeners.size === 0 || ctx.upstream === undefined || ctx.repository === undefined || ctx.digest === undefined) return
  const started: BlobStarted = { seq: ctx.seq, upstream: ctx.upstream, repository: ctx.repository, digest: ctx.digest, client: clientOf(request), at: Date.now() }
  for (const l of mirror.requestListeners) l.blobStarted(started)
}

/** Tells the listeners a manifest or blob request ended; called once per request, by recordResponse. */
export function announceServed(mirror: Mirror, request: FastifyRequest, reply: FastifyReply, seconds: number): void {
  const ctx = request.stevedore
  if (mirror.requestListeners.size === 0 || (ctx.kind !== 'manifest' && ctx.kind !== 'blob') || ctx.upstream === undefined || ctx.repository === undefined) return
  const endedAt = Date.now()
  const complete = reply.raw.writableFinished
  const served: ServedRequest = {
    seq: ctx.seq,
    kind: ctx.kind,
    method: request.method,
    status: reply.raw.statusCode,
    upstream: ctx.upstream,
    repository: ctx.repository,
    tag: ctx.tag,
    digest: ctx.digest,
    manifest: ctx.manifest,
    cache: ctx.cache,
    redirect: ctx.redirect === true,
    bytes: complete ? (ctx.bytes ?? 0) : 0,
    complete,
    client: clientOf(request),
    startedAt: endedAt - Math.round(seconds * 1000),
    firstByteAt: ctx.firstByteAt,
    endedAt,
  }
  for (const l of mirror.requestListeners) l.served(served)
}
