import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { SlotClass, Slots } from '../limits/slots.js'
import { RegistryError } from '../oci/errors.js'
import { BlobNotFoundError, type BlobStore, type ByteRange } from '../storage/blob-store.js'
import { downloadBlob, type UpstreamBlob } from '../upstream/blob-download.js'
import type { UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'
import { BlobFill, type FillEvents } from './blob-fill.js'
import { FileSource, type BlobSource } from './blob-source.js'
import { FillReader } from './fill-reader.js'
import { parseRange } from './range.js'
import { SingleFlight } from '../lib/single-flight.js'
import type { Confirmation, ContentScopes } from './scopes.js'
import { verifyOnly } from './verify-only-writer.js'

export type CacheResult = 'hit' | 'miss' | 'joined' | 'stale' | 'revalidated'

export interface BlobTarget {
  readonly client: UpstreamClient
  readonly repository: string
  readonly digest: string
}

/** What a blob GET is answered with. Every `source` and `body` must be closed or consumed by the caller. */
export type BlobAnswer =
  /** A stored blob as a local file, sent from the range's start. */
  | { readonly kind: 'file'; readonly cache: 'hit'; readonly size: number; readonly range: ByteRange | undefined; readonly source: BlobSource }
  /** A stored blob as a stream (a store without local files). */
  | { readonly kind: 'stream'; readonly cache: 'hit'; readonly size: number; readonly range: ByteRange | undefined; readonly body: Readable }
  /** A stored blob the client fetches itself (a presigned URL). */
  | { readonly kind: 'redirect'; readonly cache: 'hit'; readonly size: number; readonly url: string }
  /** A fill in progress; size undefined when the upstream announced none. */
  | { readonly kind: 'fill'; readonly cache: 'miss' | 'joined'; readonly size: number | undefined; readonly range: ByteRange | undefined; readonly source: BlobSource }

/** A blob made warm for nobody in particular (a prefetch): no bytes are read here. */
export interface Warming {
  /** hit: stored already; miss: this call started its fill; joined: a fill was running (a pull's, say). */
  readonly cache: 'hit' | 'miss' | 'joined'
  readonly size: number | undefined
  /** Bytes stored so far. */
  bytes(): number
  /** Resolves once the blob is stored, verified; rejects with why not. */
  readonly done: Promise<void>
}

export interface BlobHeadAnswer {
  readonly cache: 'hit' | 'miss' | 'joined'
  readonly size: number
}

export interface BlobGetOptions {
  readonly range?: string
  /** Whether a store's presigned URL may answer instead of the bytes. */
  readonly allowRedirect?: boolean
  /** Live pulls keep their reserved fill slots over background work. */
  readonly slotClass?: SlotClass
  /** A miss is filled from the upstream here, never forwarded (a peer asked: this replica owns the digest). */
  readonly direct?: boolean
}

/**
 * Where a fill gets its bytes when another replica owns the digest
 * (src/cluster): every replica then fetches each blob once between them.
 */
export interface FillRouter {
  /** The route for this target's fill; undefined when this replica fetches it from the upstream itself. */
  route(target: BlobTarget): FillRoute | undefined
}

export interface FillRoute {
  /** The replica the bytes come from, for logs. */
  readonly via: string
  /** Whether this replica stores the bytes too (its own disk), or only serves them (the shared bucket its owner writes). */
  readonly keep: boolean
  /** As downloadBlob: the whole blob as one stream, from the owner or, should it fail, from the upstream. */
  open(signal: AbortSignal): Promise<RoutedBlob>
}

export interface RoutedBlob {
  readonly blob: UpstreamBlob
  /** False when the owner did not serve it and the upstream does: then nobody else writes it, so this replica must. */
  readonly fromOwner: boolean
}

export interface BlobServiceOptions {
  readonly spoolDir: string
  readonly log: Logger
  /** Bounds concurrent fills (limits.fills). */
  readonly fillSlots: Slots
  /** An overall cap on one fill (timeouts.fill); none when undefined. */
  readonly maxFillMs?: number
  readonly events?: FillEvents
  /** Told when a stored blob is read, for LRU eviction. */
  readonly onAccess?: (digest: string, size: number) => void
  /** Pins a digest while a stream of it is open, so eviction leaves it alone. */
  readonly pin?: (digest: string) => () => void
  /** Which registries hold which blobs: a cached blob is served only through those. */
  readonly scopes: ContentScopes
  /** Replicas that share the fetching; none: every miss goes to the upstream. */
  readonly router?: FillRouter
}

/** Blob answers from the store, or from one shared upstream fill per digest. */
export class BlobService {
  private readonly fills = new SingleFlight<string, BlobFill>()

  constructor(private readonly store: BlobStore, private readonly options: BlobServiceOptions) {}

  /** Fills running now (for metrics and shutdown). */
  get inflight(): number {
    return this.fills.size
  }

  async head(target: BlobTarget): Promise<BlobHeadAnswer> {
    const info = await this.store.stat(target.digest)
    if (info !== undefined) {
      await this.inScope(target)
      this.options.onAccess?.(target.digest, info.size)
      return { cache: 'hit', size: info.size }
    }
    const fill = this.fills.get(target.digest)
    if (fill !== undefined) {
      if (fill.registry !== target.client.origin) await this.inScope(target)
      await fill.ready
      if (fill.size !== undefined) return { cache: 'joined', size: fill.size }
    }
    // Never a false 404: a mirror in front of us, or containerd, decides on this answer.
    return { cache: 'miss', size: await upstreamSize(target) }
  }

  async get(target: BlobTarget, options: BlobGetOptions = {}): Promise<BlobAnswer> {
    const { range: rangeHeader } = options
    const hit = await this.fromStore(target.digest, rangeHeader, options.allowRedirect ?? false)
    if (hit !== undefined) {
      try {
        await this.inScope(target)
      } catch (err) {
        await closeAnswer(hit)
        throw err
      }
      return hit
    }
    const running = this.fills.get(target.digest)
    // A peer asks because its ring says we own the digest, while ours sends it on: joining would wait on the asker itself.
    if (options.direct === true && running?.forwarded === true) {
      throw new RegistryError('UNAVAILABLE', 'this replica forwards this blob itself; fetch it from the upstream', { headers: { 'retry-after': '1' } })
    }
    // Joining a fill through another registry: this one must hold the blob too.
    if (running !== undefined && running.registry !== target.client.origin) await this.inScope(target)
    if (running === undefined && rangeHeader !== undefined && parseRange(rangeHeader, Number.MAX_SAFE_INTEGER) !== undefined) {
      // A range that cannot be satisfied must not cost a download: one HEAD gives the size.
      parseRange(rangeHeader, await upstreamSize(target))
    }
    const { value: fill, joined } = this.fills.join(target.digest, () => this.startFill(target, options.slotClass ?? 'live', options.direct === true), (f) => f.done)
    await fill.ready
    // Storage failed under this fill: it serves only the client that started it. Others are told to retry, before any byte.
    if (joined && fill.passThrough) throw new RegistryError('UNAVAILABLE', 'cache storage failed during this blob\'s fill; retry', { headers: { 'retry-after': '1' } })
    const size = fill.size
    const range = size !== undefined ? parseRange(rangeHeader, size) : undefined
    const source = new FillReader(fill, range !== undefined ? range.end + 1 : undefined, !joined, range?.start ?? 0)
    return { kind: 'fill', cache: joined ? 'joined' : 'miss', size, range, source }
  }

  /**
   * Makes sure the blob is stored, through the same fills as pulls: a
   * running fill is joined, a new one takes a slot of `slotClass`.
   */
  async warm(target: BlobTarget, slotClass: SlotClass = 'background'): Promise<Warming> {
    const info = await this.store.stat(target.digest)
    if (info !== undefined) {
      await this.inScope(target)
      this.options.onAccess?.(target.digest, info.size)
      return { cache: 'hit', size: info.size, bytes: () => info.size, done: Promise.resolve() }
    }
    const running = this.fills.get(target.digest)
    if (running !== undefined && running.registry !== target.client.origin) await this.inScope(target)
    const { value: fill, joined } = this.fills.join(target.digest, () => this.startFill(target, slotClass, false), (f) => f.done)
    // Nobody reads this fill's bytes: should storage fail, it must not wait for a reader that never comes.
    if (!joined) fill.originatorLeft()
    await fill.ready
    const done = fill.done.then(() => {
      if (!fill.stored) throw fill.error ?? new RegistryError('UPSTREAM_ERROR', 'blob fill failed')
    })
    return { cache: joined ? 'joined' : 'miss', size: fill.size, bytes: () => fill.written, done }
  }

  /** Resolves when every fill running now has ended (for shutdown). */
  async drain(): Promise<void> {
    await Promise.all([...this.fills.values()].map((f) => f.done))
  }

  /** Ends every running fill now: their readers are cut, nothing is stored. Returns the digests cut. */
  abortAll(reason: string): string[] {
    const cut = [...this.fills.values()]
    for (const fill of cut) fill.abort(reason)
    return cut.map((f) => f.digest)
  }

  /** Resolves when the target's registry is known to hold the blob (asking it with one HEAD when nobody knows). */
  private inScope(target: BlobTarget): Promise<void> {
    return this.options.scopes.ensure(target.client.origin, target.digest, () => confirmBlob(target), () => blobUnknown(target.digest))
  }

  private async fromStore(digest: string, rangeHeader: string | undefined, allowRedirect: boolean): Promise<BlobAnswer | undefined> {
    if (this.store.open !== undefined) return this.fromLocalFile(digest, rangeHeader)
    const info = await this.store.stat(digest)
    if (info === undefined) return undefined
    const range = parseRange(rangeHeader, info.size)
    this.options.onAccess?.(digest, info.size)
    if (allowRedirect && this.store.redirectUrl !== undefined) {
      const url = await this.store.redirectUrl(digest)
      if (url !== undefined) return { kind: 'redirect', cache: 'hit', size: info.size, url }
    }
    const unpin = this.options.pin?.(digest)
    let body: Readable
    try {
      body = await this.store.read(digest, range)
    } catch (err) {
      unpin?.()
      // Evicted between stat and open: treat as a miss and refill.
      if (err instanceof BlobNotFoundError) return undefined
      throw err
    }
    if (unpin !== undefined) body.once('close', unpin)
    return { kind: 'stream', cache: 'hit', size: info.size, range, body }
  }

  /** A locally stored blob as an open file: one open gives presence and size, no separate stat. */
  private async fromLocalFile(digest: string, rangeHeader: string | undefined): Promise<BlobAnswer | undefined> {
    const open = this.store.open?.bind(this.store)
    if (open === undefined) return undefined
    const unpin = this.options.pin?.(digest)
    let opened: Awaited<ReturnType<typeof open>>
    try {
      opened = await open(digest)
    } catch (err) {
      unpin?.()
      throw err
    }
    if (opened === undefined) {
      unpin?.()
      return undefined
    }
    const { handle, size } = opened
    const close = async (): Promise<void> => {
      unpin?.()
      await handle.close().catch(() => undefined)
    }
    let range: ByteRange | undefined
    try {
      range = parseRange(rangeHeader, size)
    } catch (err) {
      await close()
      throw err
    }
    this.options.onAccess?.(digest, size)
    const source = new FileSource(handle, range !== undefined ? range.end + 1 : size, close)
    return { kind: 'file', cache: 'hit', size, range, source }
  }

  private startFill(target: BlobTarget, slotClass: SlotClass, direct: boolean): BlobFill {
    const { events = {}, fillSlots } = this.options
    const unpin = this.options.pin?.(target.digest)
    const route = direct ? undefined : this.options.router?.route(target)
    // Settled once the route opened (the writer is asked for only after that): an asker on a shared bucket keeps
    // nothing while its owner serves the bytes, as the owner alone writes the object; when the upstream serves
    // them instead (owner down, refusing, failing), nobody else writes it, so this replica does.
    let keep = route === undefined || route.keep
    // Not kept here: the bytes are still hashed, so clients are cut on a mismatch.
    const store: Pick<BlobStore, 'createWriter'> = {
      createWriter: (algorithm, digest) => (keep ? this.store : verifyOnly).createWriter(algorithm, digest),
    }
    const fill: BlobFill = new BlobFill(target.digest, store, {
      upstream: target.client.name,
      registry: target.client.origin,
      ...(route !== undefined ? { via: route.via } : {}),
      open: route !== undefined
        ? async (signal) => {
            const { blob, fromOwner } = await route.open(signal)
            if (!fromOwner) {
              keep = true
              // From the upstream now: a peer asking us may join it rather than be sent away.
              fill.forwarded = false
            }
            return blob
          }
        : (signal) => downloadBlob(target.client, target.repository, target.digest, signal),
    }, {
      spoolDir: this.options.spoolDir,
      log: this.options.log,
      // A forwarded fill takes no slot: it waits on the owner, whose own fill takes one there. Were both to take
      // one, replicas with their slots full of fills forwarded to each other would wait on each other until
      // queueTimeout. It stays bounded by the clients' requests (limits.connections) that hold it.
      acquireSlot: route !== undefined ? async () => () => undefined : (signal) => fillSlots.acquire(slotClass, signal),
      ...(this.options.maxFillMs !== undefined ? { maxDurationMs: this.options.maxFillMs } : {}),
      events: {
        ...events,
        // Joining a fill that no longer caches would only get a client cut: let the next request start its own.
        onPassThrough: (f) => {
          this.fills.end(f.digest, f)
          events.onPassThrough?.(f)
        },
        // Fetched through this registry: it holds the blob. Written before the fill ends, so a restart knows it.
        // An asker on a shared bucket keeps nothing: the owner records what it stored.
        onStored: async (f) => {
          if (keep) await this.options.scopes.record(f.registry, [f.digest])
        },
        onEnd: (f, failure) => {
          // Only now may a new request start another fill: the store has the blob, or nothing.
          this.fills.end(f.digest, f)
          unpin?.()
          if (f.stored) this.options.onAccess?.(f.digest, f.written)
          events.onEnd?.(f, failure)
        },
      },
    })
    return fill
  }
}

/** Releases what an answer holds, when it is not sent after all. */
async function closeAnswer(answer: BlobAnswer): Promise<void> {
  if (answer.kind === 'file' || answer.kind === 'fill') await answer.source.close()
  else if (answer.kind === 'stream') answer.body.destroy()
}

/** One HEAD: does this registry hold the blob? Throws when it cannot say (down, failing, rate-limiting). */
async function confirmBlob(target: BlobTarget): Promise<Confirmation> {
  const res = await target.client.request({ method: 'HEAD', path: `/v2/${target.repository}/blobs/${target.digest}`, repository: target.repository })
  await res.body.dump()
  if (res.status === 200) return 'present'
  if (res.status === 404) return 'absent'
  if (res.status === 401 || res.status === 403) return 'denied'
  throw errorForUpstreamStatus(target.client.name, res.status, res.headers, blobUnknown(target.digest))
}

/** The blob's size as the upstream tells it to a HEAD. */
async function upstreamSize(target: BlobTarget): Promise<number> {
  const res = await target.client.request({ method: 'HEAD', path: `/v2/${target.repository}/blobs/${target.digest}`, repository: target.repository })
  await res.body.dump()
  if (res.status !== 200) {
    throw errorForUpstreamStatus(target.client.name, res.status, res.headers, blobUnknown(target.digest))
  }
  const size = Number(res.headers['content-length'])
  if (!Number.isSafeInteger(size) || size < 0) throw new RegistryError('UPSTREAM_ERROR', `upstream ${target.client.name} sent no blob size`)
  return size
}

function blobUnknown(digest: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { detail: { digest } })
}
