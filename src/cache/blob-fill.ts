import { randomUUID, type Hash } from 'node:crypto'
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { newHash, parseDigest, type DigestAlgorithm } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { writeFully } from '../storage/write-fully.js'
import { DigestMismatchError, type BlobStore, type BlobWriter } from '../storage/blob-store.js'
import { BusyError } from '../limits/slots.js'
import type { UpstreamBlob } from '../upstream/blob-download.js'
import { RecentChunks } from './recent-chunks.js'

// Re-reading a fill's file after storage failed: large reads, few syscalls.
const READ_CHUNK = 1024 * 1024
// The newest bytes of a fill kept in memory, for readers that keep up with it.
const RECENT_WINDOW = 2 * 1024 * 1024
// In pass-through, how far the upstream may run ahead of the one client still served.
const PASS_THROUGH_WINDOW = 8 * 1024 * 1024

/**
 * waiting: for a fill slot and the upstream's answer; streaming: bytes
 * arrive; verified: every byte arrived and matches the digest (stored, or
 * served without caching when storage failed); failed: nothing is stored.
 */
export type FillState = 'waiting' | 'streaming' | 'verified' | 'failed'
export type FillFailure = 'upstream' | 'digest_mismatch' | 'timeout' | 'storage' | 'busy' | 'shutdown'

/** Where a fill gets its bytes: the narrow view of the upstream a fill needs. */
export interface FillSource {
  /** The upstream's name, for logs and metrics. */
  readonly upstream: string
  /** The registry it is (its URL's origin): what the fill proves holds the blob. */
  readonly registry: string
  /** The replica that owns the digest, when the bytes come through it rather than straight from the upstream. */
  readonly via?: string
  /**
   * Asks the upstream for the blob. Resolves once it answered 200; rejects
   * with a RegistryError when it answered otherwise or not at all.
   */
  open(signal: AbortSignal): Promise<UpstreamBlob>
}

export interface FillEvents {
  /** The blob is published; awaited before the fill ends (what must be durable with it). Never rejects. */
  onStored?(fill: BlobFill): Promise<void>
  /** The fill ended, verified or failed; `failure` says why it failed. */
  onEnd?(fill: BlobFill, failure?: FillFailure): void
  /** Storage failed mid-fill: the fill now serves only the client that started it, and caches nothing. */
  onPassThrough?(fill: BlobFill): void
  onUpstreamBytes?(bytes: number): void
}

export interface FillOptions {
  readonly spoolDir: string
  readonly log: Logger
  /** Waits for a fill slot; resolves with its release. */
  /** A fill slot; a wait the signal ends leaves the queue (so no slot is granted to it later). */
  readonly acquireSlot: (signal: AbortSignal) => Promise<() => void>
  /** An overall cap on the transfer (timeouts.fill); none when undefined. Silence is bounded by the upstream client's read timeout. */
  readonly maxDurationMs?: number
  readonly events?: FillEvents
}

/** The store could not take the bytes (disk full, S3 error): not the upstream's fault. */
class StorageFailure extends Error {
  override name = 'StorageFailure'
}

/**
 * One upstream transfer of one blob into the store, and the state every
 * reader of it follows. Every client that asks for the blob meanwhile reads
 * the bytes already written (FillReader), so N clients cost one upstream GET
 * and one disk write. The fill outlives the client that started it; it ends
 * verified (and stored), or failed with nothing stored.
 *
 * If the store fails mid-way (disk full, S3 down), the fill turns into a
 * pass-through for the client that started it: that client still gets every
 * byte, verified, from memory with backpressure; joiners are cut (so they
 * retry) and nothing is cached.
 */
export class BlobFill {
  state: FillState = 'waiting'
  /** Total size from the upstream's Content-Length, once known. */
  size: number | undefined
  /** Bytes received and readable from the local file. */
  written = 0
  /** Bytes received from the upstream (beyond `written` only in pass-through). */
  received = 0
  /** True once the verified bytes are published in the store. */
  stored = false
  /** True once storage failed and the fill serves only its originator. */
  passThrough = false
  error: Error | undefined
  readonly upstream: string
  readonly registry: string
  /** True while the bytes come through the replica that owns the digest; false once the upstream serves them instead. */
  forwarded: boolean
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
  private wanted: { readonly start: number; readonly endExclusive: number | undefined } = { start: 0, endExclusive: undefined }
  private readonly abortController = new AbortController()
  // Pass-through data after `written`, for the originator only; queue[0] starts at queueOffset.
  private queue: Buffer[] = []
  private queueOffset = 0
  private queuedBytes = 0
  private readonly recent = new RecentChunks(RECENT_WINDOW)

  constructor(
    readonly digest: string,
    /** Only writers are asked of the store: a fill never reads it. */
    private readonly store: Pick<BlobStore, 'createWriter'>,
    private readonly source: FillSource,
    private readonly options: FillOptions,
  ) {
    this.upstream = source.upstream
    this.registry = source.registry
    this.forwarded = source.via !== undefined
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve
      this.rejectReady = reject
    })
    // A fill nobody waits on must not crash the process with an unhandled rejection.
    this.ready.catch(() => undefined)
    this.done = this.run().catch((err: unknown) => {
      options.log.error({ err, digest }, 'blob fill: unexpected error')
    })
  }

  /** Registers a one-shot callback for the next progress or state change. */
  onChange(cb: () => void): () => void {
    this.waiters.add(cb)
    return () => this.waiters.delete(cb)
  }

  /** Ends the fill now (shutdown past its deadline): readers are cut, nothing is stored. */
  abort(reason: string): void {
    this.abortController.abort(new FillAborted(reason))
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
    for (let first = this.queue[0]; first !== undefined && this.queueOffset + first.byteLength <= position; first = this.queue[0]) {
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
    if (this.spoolPath !== undefined) void rm(this.spoolPath, { force: true }).catch(() => undefined)
  }

  /** What the originator reads, [start, endExclusive): in pass-through, only those bytes are queued for it. */
  originatorWants(start: number, endExclusive: number | undefined): void {
    this.wanted = { start, endExclusive }
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
    const signal = this.options.maxDurationMs !== undefined
      ? AbortSignal.any([this.abortController.signal, AbortSignal.timeout(this.options.maxDurationMs)])
      : this.abortController.signal
    let releaseSlot: (() => void) | undefined
    let writer: BlobWriter | undefined
    let body: UpstreamBlob | undefined
    let destroyOnAbort: (() => void) | undefined
    try {
      const digest = parseDigest(this.digest)
      if (digest === undefined) throw new RegistryError('DIGEST_INVALID', 'invalid digest')
      releaseSlot = await this.options.acquireSlot(signal)
      body = await this.source.open(signal)
      const opened = body
      // A stalled body would hold the loop below forever: aborting destroys it.
      destroyOnAbort = () => opened.destroy()
      signal.addEventListener('abort', destroyOnAbort, { once: true })
      // The temp file only once the upstream has answered: a refused or failing request costs no disk.
      writer = await this.startWriting(digest.algorithm)
      this.size = body.size
      this.state = 'streaming'
      this.resolveReady()
      this.notify()
      const hash = await this.stream(body, writer, digest.algorithm, signal)
      if (hash !== undefined) {
        writer = undefined
        this.verifyPassThrough(hash, digest.algorithm)
      } else {
        const w = writer
        writer = undefined
        await this.publish(w)
        await this.options.events?.onStored?.(this)
      }
      this.options.log.debug({ digest: this.digest, bytes: this.received, ms: Date.now() - this.startedAt }, 'blob fill published')
      this.options.events?.onEnd?.(this)
    } catch (err) {
      const { error, failure } = toFillError(err, this.upstream, signal)
      this.error = error
      // Readers of verified bytes finish reading them; only unverified fills cut their readers.
      if (this.state !== 'verified') this.state = 'failed'
      body?.destroy()
      await writer?.cancel().catch(() => undefined)
      this.rejectReady(error)
      this.notify()
      const level = failure === 'storage' ? 'error' : 'warn'
      this.options.log[level]({ digest: this.digest, upstream: this.upstream, bytes: this.received, failure, err: error }, this.state === 'verified' ? 'blob served but not cached' : 'blob fill failed')
      this.options.events?.onEnd?.(this, failure)
    } finally {
      // An overall cap's signal lives on after the fill: it must not keep the body.
      if (destroyOnAbort !== undefined) signal.removeEventListener('abort', destroyOnAbort)
      releaseSlot?.()
      // Readers still behind read the file; the memory goes back now.
      this.recent.clear()
      this.release()
    }
  }

  private async startWriting(algorithm: DigestAlgorithm): Promise<BlobWriter> {
    let writer: BlobWriter | undefined
    try {
      writer = await this.store.createWriter(algorithm, this.digest)
      if (writer.localPath !== undefined) {
        this.readHandle = await open(writer.localPath, 'r')
      } else {
        // The store writes elsewhere (S3): spool locally so joiners can read what arrived.
        await mkdir(this.options.spoolDir, { recursive: true })
        this.spoolPath = join(this.options.spoolDir, randomUUID())
        this.readHandle = await open(this.spoolPath, 'w+')
      }
      return writer
    } catch (err) {
      await writer?.cancel().catch(() => undefined)
      throw new StorageFailure(`cannot start writing: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
    }
  }

  /** Takes the body into the store; in pass-through returns the hash of every byte, which the store no longer keeps. */
  private async stream(body: UpstreamBlob, started: BlobWriter, algorithm: DigestAlgorithm, signal: AbortSignal): Promise<Hash | undefined> {
    let writer: BlobWriter | undefined = started
    let hash: Hash | undefined
    const spool = writer.localPath === undefined ? this.readHandle : undefined
    for await (const batch of body.batches) {
      signal.throwIfAborted()
      let bytes = 0
      for (const chunk of batch) bytes += chunk.byteLength
      this.received += bytes
      this.options.events?.onUpstreamBytes?.(bytes)
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
          hash = await this.enterPassThrough(err, failed, algorithm)
        }
      }
      if (hash !== undefined) {
        let at = this.received - bytes
        for (const chunk of batch) {
          hash.update(chunk)
          // Only what the originator will read is queued: the fill must not wait for it to take bytes outside its range.
          const from = Math.max(at, this.wanted.start)
          const to = Math.min(at + chunk.byteLength, this.wanted.endExclusive ?? Number.MAX_SAFE_INTEGER)
          if (from < to) {
            if (this.queue.length === 0 && from > this.queueOffset) this.queueOffset = from
            this.queue.push(from === at && to === at + chunk.byteLength ? chunk : chunk.subarray(from - at, to - at))
            this.queuedBytes += to - from
          }
          at += chunk.byteLength
        }
        // The originator must see these bytes before the fill waits for it to take them.
        this.notify()
        while (this.queuedBytes > PASS_THROUGH_WINDOW && !this.originatorGone) await raceAbort(this.changed(), signal)
        if (this.originatorGone) throw new StorageFailure('storage failed and the client that started the fill left')
      }
      this.notify()
    }
    return hash
  }

  private async publish(writer: BlobWriter): Promise<void> {
    try {
      await writer.commit(this.digest, this.size ?? this.written, () => {
        this.size ??= this.written
        this.state = 'verified'
        this.notify()
      })
    } catch (err) {
      if (err instanceof DigestMismatchError) throw err
      throw new StorageFailure(`cannot publish: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
    }
    this.stored = true
    this.notify()
  }

  /** Pass-through end: the originator gets its last byte once the fill's own hash matches; nothing is stored. */
  private verifyPassThrough(hash: Hash, algorithm: DigestAlgorithm): never {
    const actual = `${algorithm}:${hash.digest('hex')}`
    if (actual !== this.digest || (this.size !== undefined && this.received !== this.size)) {
      throw new DigestMismatchError(this.digest, actual, this.size ?? this.received, this.received)
    }
    this.size ??= this.received
    this.state = 'verified'
    this.notify()
    throw new StorageFailure('served without caching: storage failed mid-fill')
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
    this.options.events?.onPassThrough?.(this)
    const hash = newHash(algorithm)
    const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(this.written, 1)))
    for (let pos = 0; pos < this.written;) {
      const n = await this.readAt(buffer, Math.min(buffer.byteLength, this.written - pos), pos)
      if (n <= 0) throw new StorageFailure('cannot re-read the bytes written before storage failed')
      hash.update(buffer.subarray(0, n))
      pos += n
    }
    this.notify() // joiners wake up and see they are cut
    return hash
  }
}

/** The fill was ended from outside (shutdown). */
class FillAborted extends Error {
  override name = 'FillAborted'
}

/** Rejects with the signal's reason as soon as it aborts, whatever `work` does. */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined)
    return Promise.reject(signal.reason)
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

function toFillError(thrown: unknown, upstream: string, signal: AbortSignal): { error: Error; failure: FillFailure } {
  // An abort surfaces as whatever the destroyed body threw: the signal says why.
  const err: unknown = signal.aborted ? signal.reason : thrown
  if (err instanceof FillAborted) {
    return { error: new RegistryError('UNAVAILABLE', `blob fill stopped: ${err.message}`, { cause: err }), failure: 'shutdown' }
  }
  if (err instanceof StorageFailure) {
    return { error: new RegistryError('UNAVAILABLE', `cache storage failed: ${err.message}`, { cause: err }), failure: 'storage' }
  }
  if (err instanceof BusyError) return { error: err, failure: 'busy' }
  if (err instanceof RegistryError) return { error: err, failure: 'upstream' }
  if (err instanceof DigestMismatchError) {
    const error = new RegistryError('UPSTREAM_ERROR', `upstream ${upstream} sent content that does not match its digest`, { detail: { expected: err.expected, actual: err.actual }, cause: err })
    return { error, failure: 'digest_mismatch' }
  }
  const name = (err as Error | null)?.name
  if (name === 'TimeoutError' || name === 'AbortError' || (err as NodeJS.ErrnoException | null)?.code === 'UND_ERR_BODY_TIMEOUT') {
    return { error: new RegistryError('UPSTREAM_ERROR', `blob fill from ${upstream} timed out`, { cause: err }), failure: 'timeout' }
  }
  const code = (err as NodeJS.ErrnoException | null)?.code
  return { error: new RegistryError('UPSTREAM_ERROR', `blob transfer from ${upstream} failed`, { detail: { reason: code ?? String(err) }, cause: err }), failure: 'upstream' }
}
