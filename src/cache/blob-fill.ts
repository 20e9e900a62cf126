import { randomUUID } from 'node:crypto'
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { parseDigest } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { DigestMismatchError, type BlobStore, type BlobWriter } from '../storage/blob-store.js'
import type { UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'

// Reads of a fill in progress: large enough to keep syscalls few, small enough that joiners see bytes promptly.
const READ_CHUNK = 1024 * 1024

export type FillState = 'connecting' | 'streaming' | 'verified' | 'published' | 'failed'

export interface FillSource {
  readonly client: UpstreamClient
  readonly repository: string
}

export type FillFailure = 'upstream' | 'digest_mismatch' | 'timeout' | 'storage'

export interface FillHooks {
  onStart?(fill: BlobFill): void
  /** Called once when the fill ends, with the outcome; `failure` says why a failed fill failed. */
  onEnd?(fill: BlobFill, outcome: 'published' | 'failed', failure?: FillFailure): void
  onUpstreamBytes?(bytes: number): void
}

/**
 * One upstream transfer of one blob into the store. Every client that asks
 * for the blob meanwhile reads the bytes already written through its own
 * FillReader, so N clients cost one upstream GET and one disk write. The fill
 * outlives the client that started it; it ends verified and published, or
 * failed with nothing stored.
 */
export class BlobFill {
  state: FillState = 'connecting'
  /** Total size from the upstream's Content-Length, once known. */
  size: number | undefined
  /** Bytes received and readable from the local file. */
  written = 0
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

  private notify(): void {
    const waiters = this.waiters
    this.waiters = new Set()
    for (const w of waiters) w()
  }

  private async run(): Promise<void> {
    const { log } = this.options
    let writer: BlobWriter | undefined
    let spool: FileHandle | undefined
    const abort = AbortSignal.timeout(this.options.fillTimeoutMs)
    try {
      const digest = parseDigest(this.digest)
      if (digest === undefined) throw new RegistryError('DIGEST_INVALID', 'invalid digest')
      writer = await this.store.createWriter(digest.algorithm)
      if (writer.localPath !== undefined) {
        this.readHandle = await open(writer.localPath, 'r')
      } else {
        // The store writes elsewhere (S3): spool locally so joiners can read what arrived.
        await mkdir(this.options.spoolDir, { recursive: true })
        this.spoolPath = join(this.options.spoolDir, randomUUID())
        spool = await open(this.spoolPath, 'w+')
        this.readHandle = spool
      }
      const res = await this.source.client.request({
        method: 'GET',
        path: `/v2/${this.source.repository}/blobs/${this.digest}`,
        repository: this.source.repository,
        signal: abort,
      })
      if (res.status !== 200) {
        await res.body.dump()
        throw errorForUpstreamStatus(this.source.client.name, res.status, res.headers, new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream', { detail: { digest: this.digest } }))
      }
      const length = Number(res.headers['content-length'])
      if (Number.isSafeInteger(length) && length >= 0) this.size = length
      this.state = 'streaming'
      this.resolveReady()
      this.notify()
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          if (spool !== undefined) await writeFully(spool, chunk, this.written)
          await writer.write(chunk)
          this.written += chunk.byteLength
          this.options.hooks.onUpstreamBytes?.(chunk.byteLength)
          if (this.size !== undefined && this.written > this.size) throw new RegistryError('UPSTREAM_ERROR', 'upstream sent more bytes than it announced')
          this.notify()
        }
      } finally {
        if (!res.body.destroyed) res.body.destroy()
      }
      await writer.commit(this.digest, this.size ?? this.written, () => {
        this.size ??= this.written
        this.state = 'verified'
        this.notify()
      })
      this.state = 'published'
      this.notify()
      log.debug({ digest: this.digest, bytes: this.written, ms: Date.now() - this.startedAt }, 'blob fill published')
      this.options.hooks.onEnd?.(this, 'published')
    } catch (err) {
      const { error, failure } = toFillError(err, this.source.client.name)
      this.error = error
      this.state = 'failed'
      await writer?.cancel().catch(() => undefined)
      this.rejectReady(error)
      this.notify()
      log.warn({ digest: this.digest, upstream: this.source.client.name, bytes: this.written, err: error }, 'blob fill failed')
      this.options.hooks.onEnd?.(this, 'failed', failure)
    } finally {
      this.release()
    }
  }
}

async function writeFully(handle: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let offset = 0
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset, position + offset)
    offset += bytesWritten
  }
}

function toFillError(err: unknown, upstream: string): { error: Error; failure: FillFailure } {
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
  const failure: FillFailure = code !== undefined && !code.startsWith('UND_') ? 'storage' : 'upstream'
  return { error: new RegistryError('UPSTREAM_ERROR', `blob transfer from ${upstream} failed`, { detail: { reason: code ?? String(err) }, cause: err }), failure }
}

/**
 * A client's view of a fill: bytes [start, end] as they arrive. The last
 * byte is held back until the whole blob is verified, so a client never sees
 * a clean end of unverified content; a failed fill destroys the stream
 * (the client's connection is aborted).
 */
export class FillReader extends Readable {
  private pos: number
  private unsubscribe: (() => void) | undefined
  private reading = false

  /** end is inclusive; undefined means to the end of the blob. */
  constructor(private readonly fill: BlobFill, start: number, private readonly end: number | undefined) {
    super({ highWaterMark: READ_CHUNK })
    this.pos = start
    fill.retain()
  }

  override _read(): void {
    if (!this.reading) void this.pump()
  }

  private async pump(): Promise<void> {
    this.reading = true
    try {
      for (;;) {
        if (this.destroyed) return
        const fill = this.fill
        if (fill.state === 'failed') {
          this.destroy(fill.error ?? new Error('fill failed'))
          return
        }
        const verified = fill.state === 'verified' || fill.state === 'published'
        const total = fill.size
        const endExclusive = this.end !== undefined ? this.end + 1 : total
        // Everything written is readable, except the very last byte of the blob until verified.
        let limit = verified ? fill.written : Math.min(fill.written, total !== undefined ? total - 1 : fill.written - 1)
        if (endExclusive !== undefined) limit = Math.min(limit, endExclusive)
        if (this.pos < limit) {
          const length = Math.min(limit - this.pos, READ_CHUNK)
          const buffer = Buffer.allocUnsafe(length)
          const n = await fill.readAt(buffer, length, this.pos)
          if (this.destroyed) return
          if (n <= 0) throw new Error('short read from fill')
          this.pos += n
          if (!this.push(n === length ? buffer : buffer.subarray(0, n))) return
          continue
        }
        if (verified && (endExclusive === undefined || this.pos >= Math.min(endExclusive, fill.written))) {
          this.push(null)
          return
        }
        await new Promise<void>((resolve) => {
          this.unsubscribe = fill.onChange(resolve)
        })
        this.unsubscribe = undefined
      }
    } catch (err) {
      this.destroy(err as Error)
    } finally {
      this.reading = false
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.unsubscribe?.()
    this.fill.release()
    cb(err)
  }
}
