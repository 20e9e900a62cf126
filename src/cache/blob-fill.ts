import { randomUUID, type Hash } from 'node:crypto'
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { newHash, parseDigest, type DigestAlgorithm } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { writeFully } from '../storage/write-fully.js'
import { DigestMismatchError, type BlobStore, type BlobWriter } from '../storage/blob-store.js'
import type { UpstreamBody, UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'
import type { BlobSource } from './blob-source.js'
import { chunkBatches } from './chunk-batches.js'
import { RecentChunks } from './recent-chunks.js'

// Re-reading a fill's file after storage failed: large reads, few syscalls.
const READ_CHUNK = 1024 * 1024
// How much of the upstream body may wait for the disk before the upstream is paused.
const UPSTREAM_BATCH = 4 * 1024 * 1024
// The newest bytes of a fill kept in memory, for readers that keep up with it.
const RECENT_WINDOW = 2 * 1024 * 1024
// In pass-through, how far the upstream may run ahead of the one client still served.
const PASS_THROUGH_WINDOW = 8 * 1024 * 1024

export type FillState = 'connecting' | 'streaming' | 'verified' | 'published' | 'failed'
export type FillFailure = 'upstream' | 'digest_mismatch' | 'timeout' | 'storage'

export interface FillSource {
  readonly client: UpstreamClient
  readonly repository: string
}

export interface FillHooks {
  onStart?(fill: BlobFill): void
  /** Storage failed mid-fill: the fill now serves only the client that started it, and caches nothing. */
  onPassThrough?(fill: BlobFill): void
  /** Called once when the fill ends, with the outcome; `failure` says why a failed fill failed. */
  onEnd?(fill: BlobFill, outcome: 'published' | 'failed', failure?: FillFailure): void
  onUpstreamBytes?(bytes: number): void
}

/** The store could not take the bytes (disk full, S3 error): not the upstream's fault. */
class StorageFailure extends Error {
  override name = 'StorageFailure'
}

/**
 * One upstream transfer of one blob into the store. Every client that asks
 * for the blob meanwhile reads the bytes already written through its own
 * FillReader, so N clients cost one upstream GET and one disk write. The fill
 * outlives the client that started it; it ends verified and published, or
 * failed with nothing stored.
 *
 * If the store fails mid-way (disk full, S3 down), the fill turns into a
 * pass-through for the client that started it: that client still gets every
 * byte, verified, from memory with backpressure; joiners are cut (aborted, so
 * they retry) and nothing is cached.
 */
export class BlobFill {
  state: FillState = 'connecting'
  /** Total size from the upstream's Content-Length, once known. */
  size: number | undefined
  /** Bytes received and readable from the local file. */
  written = 0
  /** Bytes received from the upstream (beyond `written` only in pass-through). */
  received = 0
  /** True once storage failed and the fill serves only its originator. */
  passThrough = false
  error: Error | undefined
  readonly upstream: string
  /** Resolves when the upstream answered 200 (size known), rejects when it did not. */
  readonly ready: Promise<void>
  /** Resolves when the fill has ended, either way; never rejects. */
  readonly done: Promise<void>
  readonly startedAt = Date.now()

  private resolveReady!: () => void
  private rejectReady!: (err: Error) => void
  private waiters = new Set<() => void>()
  private readHandle: FileHandle | undefined
  private refs = 1 // the fill's own
  private spoolPath: string | undefined
  private originatorGone = false
  // Pass-through data after `written`, for the originator only; queue[0] starts at queueOffset.
  private queue: Buffer[] = []
  private queueOffset = 0
  private queuedBytes = 0
  private recent = new RecentChunks(RECENT_WINDOW)

  constructor(
    readonly digest: string,
    private readonly store: BlobStore,
    private readonly source: FillSource,
    private readonly options: { fillTimeoutMs: number; spoolDir: string; log: Logger; hooks: FillHooks },
  ) {
    this.upstream = source.client.name
    options.hooks.onStart?.(this)
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve
      this.rejectReady = reject
    })
    // A fill nobody waits on must not crash the process with an unhandled rejection.
    this.ready.catch(() => undefined)
    this.done = this.run().catch(() => undefined)
  }

  /** Registers a one-shot callback for the next progress or state change. */
  onChange(cb: () => void): () => void {
    this.waiters.add(cb)
    return () => this.waiters.delete(cb)
  }

  /** Reads bytes written so far at position; the handle stays open while any reader holds a ref. */
  async readAt(buffer: Buffer, length: number, position: number): Promise<number> {
    const handle = this.readHandle
    if (handle === undefined) throw new Error('fill has no readable data')
    const { bytesRead } = await handle.read(buffer, 0, length, position)
    return bytesRead
  }

  /**
   * Where the bytes a reader can get now end: the file's, or in pass-through
   * the queue's (not `received`: a batch counted there may not be queued yet).
   */
  get available(): number {
    return this.passThrough ? this.queueOffset + this.queuedBytes : this.written
  }

  /** The newest written bytes at position, at most maxLength, from memory; undefined when they are only in the file. */
  recentAt(position: number, maxLength: number): Buffer | undefined {
    return this.recent.slice(position, maxLength)
  }

  /** Pass-through bytes from position on, at most maxLength; frees what lies before position. */
  takeQueued(position: number, maxLength: number): Buffer | undefined {
    while (this.queue.length > 0) {
      const first = this.queue[0] as Buffer
      if (this.queueOffset + first.byteLength > position) break
      this.queue.shift()
      this.queueOffset += first.byteLength
      this.queuedBytes -= first.byteLength
    }
    const first = this.queue[0]
    if (first === undefined || position < this.queueOffset) return undefined
    const start = position - this.queueOffset
    const chunk = first.subarray(start, Math.min(first.byteLength, start + maxLength))
    this.notify() // the upstream may run ahead again
    return chunk
  }

  retain(): void {
    this.refs++
  }

  release(): void {
    if (--this.refs > 0) return
    const handle = this.readHandle
    this.readHandle = undefined
    void handle?.close().catch(() => undefined)
    if (this.spoolPath !== undefined) void rm(this.spoolPath, { force: true })
  }

  /** The originator's reader is gone: in pass-through nobody needs the bytes any more. */
  originatorLeft(): void {
    this.originatorGone = true
    this.notify()
  }

  private notify(): void {
    const waiters = this.waiters
    this.waiters = new Set()
    for (const w of waiters) w()
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.onChange(resolve))
  }

  private async run(): Promise<void> {
    const { log } = this.options
    let writer: BlobWriter | undefined
    let spool: FileHandle | undefined
    let body: UpstreamBody | undefined
    let hash: Hash | undefined
    const abort = AbortSignal.timeout(this.options.fillTimeoutMs)
    try {
      const digest = parseDigest(this.digest)
      if (digest === undefined) throw new RegistryError('DIGEST_INVALID', 'invalid digest')
      try {
        writer = await this.store.createWriter(digest.algorithm, this.digest)
        if (writer.localPath !== undefined) {
          this.readHandle = await open(writer.localPath, 'r')
        } else {
          // The store writes elsewhere (S3): spool locally so joiners can read what arrived.
          await mkdir(this.options.spoolDir, { recursive: true })
          this.spoolPath = join(this.options.spoolDir, randomUUID())
          spool = await open(this.spoolPath, 'w+')
          this.readHandle = spool
        }
      } catch (err) {
        throw new StorageFailure(`cannot start writing: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
      }
      const res = await this.source.client.request({
        method: 'GET',
        path: `/v2/${this.source.repository}/blobs/${this.digest}`,
        repository: this.source.repository,
        signal: abort,
      })
      body = res.body
      if (res.status !== 200) {
        await res.body.dump()
        throw errorForUpstreamStatus(this.upstream, res.status, res.headers, new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream', { detail: { digest: this.digest } }))
      }
      const length = Number(res.headers['content-length'])
      if (Number.isSafeInteger(length) && length >= 0) this.size = length
      this.state = 'streaming'
      this.resolveReady()
      this.notify()
      for await (const batch of chunkBatches(res.body, UPSTREAM_BATCH)) {
        let bytes = 0
        for (const chunk of batch) bytes += chunk.byteLength
        this.received += bytes
        this.options.hooks.onUpstreamBytes?.(bytes)
        if (this.size !== undefined && this.received > this.size) throw new RegistryError('UPSTREAM_ERROR', 'upstream sent more bytes than it announced')
        if (writer !== undefined) {
          try {
            // One write per batch, not per chunk: each costs the event loop a thread-pool round trip.
            if (spool !== undefined) await writeFully(spool, batch, this.written)
            await writer.writev(batch)
            for (const chunk of batch) {
              this.written += chunk.byteLength
              this.recent.append(chunk, this.written)
            }
          } catch (err) {
            // Whatever of this batch reached the file is not counted: it goes to the originator from memory.
            const failed = writer
            writer = undefined
            hash = await this.enterPassThrough(err, failed, digest.algorithm)
          }
        }
        if (hash !== undefined) {
          for (const chunk of batch) {
            this.queue.push(chunk)
            this.queuedBytes += chunk.byteLength
            hash.update(chunk)
          }
          // The originator must see these bytes before the fill waits for it to take them.
          this.notify()
          while (this.queuedBytes > PASS_THROUGH_WINDOW && !this.originatorGone) await this.changed()
          if (this.originatorGone) throw new StorageFailure('storage failed and the client that started the fill left')
        }
        this.notify()
      }
      if (hash !== undefined || writer === undefined) {
        if (hash === undefined) throw new StorageFailure('storage failed')
        const actual = `${digest.algorithm}:${hash.digest('hex')}`
        if (actual !== this.digest || (this.size !== undefined && this.received !== this.size)) {
          throw new DigestMismatchError(this.digest, actual, this.size ?? this.received, this.received)
        }
        this.size ??= this.received
        this.state = 'verified'
        this.notify()
        throw new StorageFailure('served without caching: storage failed mid-fill')
      }
      const w = writer
      try {
        await w.commit(this.digest, this.size ?? this.written, () => {
          this.size ??= this.written
          this.state = 'verified'
          this.notify()
        })
      } catch (err) {
        if (err instanceof DigestMismatchError) throw err
        throw new StorageFailure(`cannot publish: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
      }
      writer = undefined
      this.state = 'published'
      this.notify()
      log.debug({ digest: this.digest, bytes: this.written, ms: Date.now() - this.startedAt }, 'blob fill published')
      this.options.hooks.onEnd?.(this, 'published')
    } catch (err) {
      const { error, failure } = toFillError(err, this.upstream)
      this.error = error
      // Readers of verified bytes finish reading them; only unverified fills cut their readers.
      if (this.state !== 'verified') this.state = 'failed'
      if (body !== undefined && !body.destroyed) body.destroy()
      await writer?.cancel().catch(() => undefined)
      this.rejectReady(error)
      this.notify()
      const level = failure === 'storage' ? 'error' : 'warn'
      log[level]({ digest: this.digest, upstream: this.upstream, bytes: this.received, failure, err: error }, this.state === 'verified' ? 'blob served but not cached' : 'blob fill failed')
      this.options.hooks.onEnd?.(this, 'failed', failure)
    } finally {
      // Readers still behind read the file; the memory goes back now.
      this.recent.clear()
      this.release()
    }
  }

  /**
   * Storage failed: cancel the write, hash what is already in the local file
   * so the rest can still be verified, and serve only the originator.
   */
  private async enterPassThrough(cause: unknown, writer: BlobWriter, algorithm: DigestAlgorithm): Promise<Hash> {
    this.options.log.error({ digest: this.digest, upstream: this.upstream, written: this.written, err: cause }, 'storage failed mid-fill: passing the blob through uncached')
    this.passThrough = true
    this.queueOffset = this.written
    this.recent.clear()
    await writer.cancel().catch(() => undefined)
    this.options.hooks.onPassThrough?.(this)
    const hash = newHash(algorithm)
    const buffer = Buffer.allocUnsafe(READ_CHUNK)
    for (let pos = 0; pos < this.written;) {
      const n = await this.readAt(buffer, Math.min(READ_CHUNK, this.written - pos), pos)
      if (n <= 0) throw new StorageFailure('cannot re-read the bytes written before storage failed')
      hash.update(buffer.subarray(0, n))
      pos += n
    }
    this.notify() // joiners wake up and see they are cut
    return hash
  }
}

function toFillError(err: unknown, upstream: string): { error: Error; failure: FillFailure } {
  if (err instanceof StorageFailure) {
    return { error: new RegistryError('UNAVAILABLE', `cache storage failed: ${err.message}`, { cause: err }), failure: 'storage' }
  }
  if (err instanceof RegistryError) return { error: err, failure: 'upstream' }
  if (err instanceof DigestMismatchError) {
    const error = new RegistryError('UPSTREAM_ERROR', `upstream ${upstream} sent content that does not match its digest`, { detail: { expected: err.expected, actual: err.actual }, cause: err })
    return { error, failure: 'digest_mismatch' }
  }
  const name = (err as Error | null)?.name
  if (name === 'TimeoutError' || name === 'AbortError') {
    return { error: new RegistryError('UPSTREAM_ERROR', `blob fill from ${upstream} timed out`, { cause: err }), failure: 'timeout' }
  }
  const code = (err as NodeJS.ErrnoException | null)?.code
  return { error: new RegistryError('UPSTREAM_ERROR', `blob transfer from ${upstream} failed`, { detail: { reason: code ?? String(err) }, cause: err }), failure: 'upstream' }
}

/**
 * A client's view of a fill: bytes [start, endExclusive) as they arrive. The
 * last byte is held back until the whole blob is verified, so a client never
 * sees a clean end of unverified content; a failed fill rejects (the client's
 * connection is cut). Readers that keep up get the fill's own chunks from
 * memory; the others read its file.
 */
export class FillReader implements BlobSource {
  private closed = false

  /** endExclusive undefined means to the end of the blob. The originator is the request that started the fill. */
  constructor(private readonly fill: BlobFill, private readonly endExclusive: number | undefined, private readonly originator: boolean) {
    fill.retain()
  }

  readable(pos: number): number | undefined | Promise<number | undefined> {
    const now = this.check(pos)
    return now === WAIT ? this.waitFor(pos) : now
  }

  inMemory(pos: number, max: number): Buffer | undefined {
    const fill = this.fill
    if (pos < fill.written) return fill.recentAt(pos, max)
    return fill.passThrough && this.originator ? fill.takeQueued(pos, max) : undefined
  }

  read(buffer: Buffer, length: number, pos: number): Promise<number> {
    return this.fill.readAt(buffer, Math.min(length, this.fill.written - pos), pos)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.originator) this.fill.originatorLeft()
    this.fill.release()
  }

  private async waitFor(pos: number): Promise<number | undefined> {
    for (;;) {
      await new Promise<void>((resolve) => this.fill.onChange(resolve))
      const now = this.check(pos)
      if (now !== WAIT) return now
    }
  }

  private check(pos: number): number | undefined | typeof WAIT {
    const fill = this.fill
    if (fill.state === 'failed') throw fill.error ?? new Error('fill failed')
    if (fill.passThrough && !this.originator) throw new Error('cache storage failed; retry')
    const verified = fill.state === 'verified' || fill.state === 'published'
    const available = fill.available
    const total = fill.size
    const end = this.endExclusive ?? total
    // Everything received is readable, except the very last byte of the blob until verified.
    let limit = verified ? available : Math.min(available, total !== undefined ? total - 1 : available - 1)
    if (end !== undefined) limit = Math.min(limit, end)
    if (pos < limit) return limit
    if (verified && (end === undefined || pos >= Math.min(end, available))) return undefined
    return WAIT
  }
}

const WAIT = Symbol('wait')
