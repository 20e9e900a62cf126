import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { RegistryError } from '../oci/errors.js'
import { BlobNotFoundError, type BlobStore, type ByteRange } from '../storage/blob-store.js'
import type { UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'
import { BlobFill, FillReader, type FillHooks } from './blob-fill.js'
import { FileSource, type BlobSource } from './blob-source.js'
import { parseRange } from './range.js'

export type CacheResult = 'hit' | 'miss' | 'joined' | 'stale' | 'revalidated'

export interface BlobTarget {
  readonly client: UpstreamClient
  readonly repository: string
  readonly digest: string
}

export interface BlobAnswer {
  readonly cache: CacheResult
  /** Total size of the blob. */
  readonly size: number
  /** Present for 206 answers. */
  readonly range?: ByteRange
  /** The body as a stream (a store without local files); the caller must consume or destroy it. */
  readonly body?: Readable
  /** The body as a source to send from the range's start (a local file, or a fill); the caller must close it. */
  readonly source?: BlobSource
  /** A URL to redirect the client to instead of a body. */
  readonly redirect?: string
}

export interface BlobServiceOptions {
  readonly fillTimeoutMs: number
  readonly spoolDir: string
  readonly log: Logger
  readonly hooks?: FillHooks
  /** Told when a stored blob is read, for LRU eviction. */
  readonly onAccess?: (digest: string, size: number) => void
  /** Pins a digest while a stream of it is open, so eviction leaves it alone. */
  readonly pin?: (digest: string) => () => void
}

/** Blob answers from the store, or from one shared upstream fill per digest. */
export class BlobService {
  private readonly fills = new Map<string, BlobFill>()

  constructor(private readonly store: BlobStore, private readonly options: BlobServiceOptions) {}

  /** Fills running now (for metrics and graceful shutdown). */
  get inflight(): ReadonlyMap<string, BlobFill> {
    return this.fills
  }

  async head(target: BlobTarget): Promise<BlobAnswer> {
    const info = await this.store.stat(target.digest)
    if (info !== undefined) {
      this.options.onAccess?.(target.digest, info.size)
      return { cache: 'hit', size: info.size }
    }
    const fill = this.fills.get(target.digest)
    if (fill !== undefined) {
      await fill.ready
      if (fill.size !== undefined) return { cache: 'joined', size: fill.size }
    }
    // Never a false 404: a mirror in front of us, or containerd, decides on this answer.
    const res = await target.client.request({ method: 'HEAD', path: `/v2/${target.repository}/blobs/${target.digest}`, repository: target.repository })
    await res.body.dump()
    if (res.status !== 200) {
      throw errorForUpstreamStatus(target.client.name, res.status, res.headers, blobUnknown(target.digest))
    }
    const size = Number(res.headers['content-length'])
    if (!Number.isSafeInteger(size) || size < 0) throw new RegistryError('UPSTREAM_ERROR', `upstream ${target.client.name} sent no blob size`)
    return { cache: 'miss', size }
  }

  async get(target: BlobTarget, rangeHeader: string | undefined, allowRedirect: boolean): Promise<BlobAnswer> {
    const hit = await this.fromStore(target.digest, rangeHeader, allowRedirect)
    if (hit !== undefined) return hit
    let fill = this.fills.get(target.digest)
    const joined = fill !== undefined
    if (fill === undefined) fill = this.startFill(target)
    await fill.ready
    const size = fill.size
    const range = size !== undefined ? parseRange(rangeHeader, size) : undefined
    const source = new FillReader(fill, range !== undefined ? range.end + 1 : undefined, !joined)
    return { cache: joined ? 'joined' : 'miss', size: size ?? -1, source, ...(range !== undefined ? { range } : {}) }
  }

  private async fromStore(digest: string, rangeHeader: string | undefined, allowRedirect: boolean): Promise<BlobAnswer | undefined> {
    if (this.store.open !== undefined) return this.fromLocalFile(digest, rangeHeader)
    const info = await this.store.stat(digest)
    if (info === undefined) return undefined
    const range = parseRange(rangeHeader, info.size)
    this.options.onAccess?.(digest, info.size)
    if (allowRedirect && this.store.redirectUrl !== undefined) {
      const url = await this.store.redirectUrl(digest)
      if (url !== undefined) return { cache: 'hit', size: info.size, redirect: url }
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
    return { cache: 'hit', size: info.size, body, ...(range !== undefined ? { range } : {}) }
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
    return { cache: 'hit', size, source, ...(range !== undefined ? { range } : {}) }
  }

  private startFill(target: BlobTarget): BlobFill {
    const hooks = this.options.hooks ?? {}
    const unpin = this.options.pin?.(target.digest)
    const fill = new BlobFill(target.digest, this.store, { client: target.client, repository: target.repository }, {
      fillTimeoutMs: this.options.fillTimeoutMs,
      spoolDir: this.options.spoolDir,
      log: this.options.log,
      hooks: {
        ...hooks,
        // Joining a fill that no longer caches would only get a client cut: let the next request start its own.
        onPassThrough: (f) => {
          if (this.fills.get(f.digest) === f) this.fills.delete(f.digest)
          hooks.onPassThrough?.(f)
        },
        onEnd: (f, outcome, failure) => {
          // Only now may a new request start another fill: the store has the blob, or nothing.
          if (this.fills.get(f.digest) === f) this.fills.delete(f.digest)
          unpin?.()
          if (outcome === 'published') this.options.onAccess?.(f.digest, f.written)
          hooks.onEnd?.(f, outcome, failure)
        },
      },
    })
    this.fills.set(target.digest, fill)
    return fill
  }

  /** Resolves when every fill running now has ended (for shutdown). */
  async drain(): Promise<void> {
    await Promise.all([...this.fills.values()].map((f) => f.done))
  }
}

export function blobUnknown(digest: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { detail: { digest } })
}
