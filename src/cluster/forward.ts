import type { Logger } from 'pino'
import type { BlobTarget, FillRoute, FillRouter, RoutedBlob } from '../cache/blobs.js'
import { ERROR_STATUS, RegistryError, type ErrorCode } from '../oci/errors.js'
import { downloadBlob, type UpstreamBlob } from '../upstream/blob-download.js'
import { chunkBatches } from '../upstream/chunk-batches.js'
import { PEER_REFUSED_HEADER, peerBlobPath } from './paths.js'
import { isPeerUnreachable, type PeerClient } from './peer-client.js'
import { withUpstreamResume } from './resume.js'
import { ownerOf } from './ring.js'

const BATCH = 4 * 1024 * 1024
// An owner's error body is a small JSON document; anything longer is not one.
const MAX_ERROR_BODY = 16 * 1024

// The owner asked the upstream and this is its answer: asking again from here would get the same one.
// Not 429: registries limit per source address, and this replica may leave through another one.
// Not UNAUTHORIZED: an upstream's 401 reaches us as DENIED, so this one is the owner's own client auth.
const UPSTREAM_ANSWERS = new Set<ErrorCode>(['BLOB_UNKNOWN', 'DENIED'])

/** Why a replica fetched a blob it does not own from the upstream itself. */
export type FallbackReason = 'unreachable' | 'refused' | 'owner_error' | 'mid_stream'

export interface ForwardEvents {
  /** A fill of a digest another replica owns began through it. */
  onForwarded?(owner: string): void
  onFallback?(owner: string, reason: FallbackReason): void
  onPeerBytes?(bytes: number): void
}

export interface PeerMembers {
  /** The members in the ring now, self included. */
  live(): readonly string[]
  /** An owner that could not be reached leaves the ring until it answers a health check again. */
  markDown(origin: string): void
}

export interface PeerFillRouterOptions {
  readonly self: string
  readonly members: PeerMembers
  readonly peers: Pick<PeerClient, 'request'>
  /** Whether a replica keeps what it serves for an owner (per-replica disks), or leaves the writing to the owner (a shared bucket). */
  readonly keep: boolean
  readonly log: Logger
  readonly events?: ForwardEvents
}

/**
 * Sends each miss to the digest's owner (rendezvous hashing over the live
 * members), so the replicas fetch a blob from the upstream once between
 * them. Never worse than no cluster: an owner that cannot be reached, that
 * answers with an error of its own, or that fails mid-stream is replaced by
 * the upstream, from the byte reached.
 */
export class PeerFillRouter implements FillRouter {
  constructor(private readonly options: PeerFillRouterOptions) {}

  route(target: BlobTarget): FillRoute | undefined {
    const owner = ownerOf(target.digest, this.options.members.live())
    if (owner === undefined || owner === this.options.self) return undefined
    return { via: owner, keep: this.options.keep, open: (signal) => this.open(owner, target, signal) }
  }

  private async open(owner: string, target: BlobTarget, signal: AbortSignal): Promise<RoutedBlob> {
    const { log, events } = this.options
    const fromUpstream = async (reason: FallbackReason, err?: unknown): Promise<RoutedBlob> => {
      events?.onFallback?.(owner, reason)
      log.warn({ owner, digest: target.digest, reason, err }, 'owner replica did not serve the blob: fetching it from the upstream')
      return { blob: await downloadBlob(target.client, target.repository, target.digest, signal), fromOwner: false }
    }
    let res: Awaited<ReturnType<PeerClient['request']>>
    try {
      res = await this.options.peers.request(owner, 'GET', peerBlobPath({ upstream: target.client.name, repository: target.repository, digest: target.digest }), { signal })
    } catch (err) {
      if (signal.aborted) throw err
      // Only an owner we could not connect to leaves the ring: one slow to answer (its own upstream is slow) is alive, and
      // dropping it would move its digests and make the replicas disagree. Its health check decides.
      if (isPeerUnreachable(err)) this.options.members.markDown(owner)
      return fromUpstream('unreachable', err)
    }
    if (res.statusCode !== 200) {
      const refused = res.headers[PEER_REFUSED_HEADER] !== undefined
      const error = await ownerError(res)
      if (refused) {
        log.error({ owner }, 'owner replica refused our signature: is cluster.secretFile the same on every replica?')
        return fromUpstream('refused')
      }
      if (error !== undefined && UPSTREAM_ANSWERS.has(error.code)) throw error
      return fromUpstream('owner_error', error)
    }
    events?.onForwarded?.(owner)
    const length = Number(res.headers['content-length'])
    const body = res.body
    const counted = async function* (): AsyncGenerator<readonly Buffer[]> {
      for await (const batch of chunkBatches(body, BATCH)) {
        let bytes = 0
        for (const chunk of batch) bytes += chunk.byteLength
        events?.onPeerBytes?.(bytes)
        yield batch
      }
    }
    const fromOwner: UpstreamBlob = {
      size: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
      batches: counted(),
      destroy: () => {
        if (!body.destroyed) body.destroy()
      },
    }
    const blob = withUpstreamResume(fromOwner, target, signal, (offset, err) => {
      if (isPeerUnreachable(err)) this.options.members.markDown(owner)
      events?.onFallback?.(owner, 'mid_stream')
      log.warn({ owner, digest: target.digest, offset, err }, 'owner replica failed mid-stream: resuming from the upstream')
    })
    return { blob, fromOwner: true }
  }
}

/** The owner's error answer as ours, when it is the spec's JSON body; undefined otherwise. Consumes the body. */
async function ownerError(res: Awaited<ReturnType<PeerClient['request']>>): Promise<RegistryError | undefined> {
  let text = ''
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8')
      if (text.length > MAX_ERROR_BODY) {
        res.body.destroy()
        return undefined
      }
    }
  } catch {
    return undefined
  }
  try {
    const first = (JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown; detail?: unknown }> }).errors?.[0]
    const code = first?.code
    if (typeof code !== 'string' || !Object.hasOwn(ERROR_STATUS, code)) return undefined
    const retryAfter = res.headers['retry-after']
    return new RegistryError(code as ErrorCode, typeof first?.message === 'string' ? first.message : 'error from the owner replica', {
      status: res.statusCode,
      detail: first?.detail ?? null,
      headers: typeof retryAfter === 'string' ? { 'retry-after': retryAfter } : {},
    })
  } catch {
    return undefined
  }
}
