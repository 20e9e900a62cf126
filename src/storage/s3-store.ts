import { randomUUID } from 'node:crypto'
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream'
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client, type S3ClientConfig } from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import type { Logger } from 'pino'
import type { S3StorageConfig } from '../config/schema.js'
import { parseDigest, type DigestAlgorithm } from '../oci/digest.js'
import { BlobNotFoundError, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange } from './blob-store.js'
import { S3Bucket } from './s3-bucket.js'
import { describe, DigestRequiredError, isNotFound, TruncatedReadError } from './s3-errors.js'
import { prepareBucket } from './s3-maintenance.js'
import { S3BlobWriter } from './s3-writer.js'

/** Bytes per multipart part; S3 wants at least 5 MiB for every part but the last. */
export const DEFAULT_PART_SIZE = 8 * 1024 * 1024
/** Lifetime of a presigned redirect URL. */
const REDIRECT_EXPIRY_SECONDS = 300

/** Tuning and test hooks for S3BlobStore; the configuration says where the bucket is. */
export interface S3BlobStoreOptions {
  readonly log: Logger
  /** Bytes per multipart part; default DEFAULT_PART_SIZE. */
  readonly partSize?: number
  /** Multipart uploads and leftover objects older than this are crash leftovers, removed by init (storage.s3.staleUploadAge). */
  readonly staleUploadMs?: number
  /** How long writable() waits for its probe. */
  readonly probeTimeoutMs?: number
  /** Client settings merged over the ones built from the config (tests: retries, timeouts). */
  readonly clientOverrides?: Partial<S3ClientConfig>
}

/**
 * Blobs and documents in one S3 bucket under a prefix:
 * `<prefix>blobs/<alg>/<hex>`, `<prefix>docs/<key>`, `<prefix>stevedore-layout.json`.
 * Writes stream as multipart uploads to the blob's own key, invisible until
 * completed; a completed object is always a verified blob. Several processes
 * may share one bucket and prefix.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3'
  private readonly bucket: S3Bucket
  private readonly partSize: number
  private readonly staleUploadMs: number
  private readonly probeTimeoutMs: number
  private readonly probeKey: string

  constructor(private readonly config: S3StorageConfig, options: S3BlobStoreOptions) {
    this.bucket = new S3Bucket(config, options.log, options.clientOverrides)
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE
    this.staleUploadMs = options.staleUploadMs ?? 30 * 60_000
    this.probeTimeoutMs = options.probeTimeoutMs ?? 5_000
    this.probeKey = `${config.prefix}probes/${randomUUID()}`
  }

  /** The SDK client on the bucket (tests put objects behind the store's back). */
  get client(): S3Client {
    return this.bucket.client
  }

  async init(): Promise<void> {
    await prepareBucket(this.bucket, this.staleUploadMs)
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    const size = await this.bucket.headSize(this.bucket.blobKey(digest))
    return size === undefined ? undefined : { digest, size }
  }

  async read(digest: string, range?: ByteRange): Promise<Readable> {
    let body: unknown
    let contentLength: number | undefined
    let contentRange: string | undefined
    try {
      const out = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket.name,
        Key: this.bucket.blobKey(digest),
        ...(range !== undefined ? { Range: `bytes=${range.start}-${range.end}` } : {}),
      }))
      body = out.Body
      contentLength = out.ContentLength
      contentRange = out.ContentRange
    } catch (err) {
      if (isNotFound(err)) throw new BlobNotFoundError(digest)
      throw err
    }
    if (!(body instanceof Readable)) throw new Error(`S3 GetObject of ${digest} returned no stream`)
    const expected = range !== undefined ? range.end - range.start + 1 : contentLength
    // Some S3-compatible servers (s3rver) read `bytes=0-0` as "from 0 to the end": the
    // answer still starts at the right byte, so taking its first `expected` bytes is right.
    const overlong = range !== undefined && contentLength !== undefined && contentLength > range.end - range.start + 1 &&
      contentRange?.startsWith(`bytes ${range.start}-`) === true
    if (expected === undefined || (contentLength !== undefined && contentLength !== expected && !overlong)) {
      body.destroy()
      throw new Error(`S3 GetObject of ${digest} answered ${String(contentLength)} bytes, expected ${String(expected)}`)
    }
    const checked = new LengthCheck(digest, expected)
    // pipeline destroys both on any error or premature close, and the S3 socket when the reader gives up.
    pipeline(body, checked, () => undefined)
    return checked
  }

  /**
   * A writer for one blob, uploading straight to the key of expectedDigest
   * (the digest commit will be called with). Without it: DigestRequiredError.
   */
  async createWriter(algorithm: DigestAlgorithm = 'sha256', expectedDigest?: string): Promise<BlobWriter> {
    if (expectedDigest === undefined) throw new DigestRequiredError()
    return new S3BlobWriter(this.bucket, this.partSize, algorithm, expectedDigest)
  }

  async delete(digest: string): Promise<boolean> {
    const key = this.bucket.blobKey(digest)
    if ((await this.bucket.headSize(key)) === undefined) return false
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket.name, Key: key }))
    return true
  }

  async *list(): AsyncIterable<BlobInfo> {
    const base = `${this.bucket.prefix}blobs/`
    for await (const obj of this.bucket.listObjects(base)) {
      const rest = obj.key.slice(base.length)
      const slash = rest.indexOf('/')
      if (slash < 0) continue
      const digest = `${rest.slice(0, slash)}:${rest.slice(slash + 1)}`
      if (parseDigest(digest) === undefined) continue
      yield { digest, size: obj.size }
    }
  }

  async redirectUrl(digest: string): Promise<string | undefined> {
    if (!this.config.redirect) return undefined
    const command = new GetObjectCommand({ Bucket: this.bucket.name, Key: this.bucket.blobKey(digest) })
    return getSignedUrl(this.bucket.presignClient, command, { expiresIn: REDIRECT_EXPIRY_SECONDS })
  }

  async getDocument(key: string): Promise<Buffer | undefined> {
    return this.bucket.getObjectBytes(this.bucket.documentKey(key))
  }

  async putDocument(key: string, bytes: Uint8Array): Promise<void> {
    // A PutObject replaces the object atomically: readers see the old or the new bytes.
    await this.client.send(new PutObjectCommand({
      Bucket: this.bucket.name,
      Key: this.bucket.documentKey(key),
      Body: bytes,
      ContentLength: bytes.byteLength,
      ContentType: 'application/octet-stream',
    }))
  }

  async deleteDocument(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket.name, Key: this.bucket.documentKey(key) }))
  }

  async *listDocuments(prefix: string): AsyncIterable<string> {
    const start = prefix.replace(/\/+$/, '')
    const base = this.bucket.documentsBase
    const keyPrefix = start === '' ? base : `${this.bucket.documentKey(start)}/`
    for await (const obj of this.bucket.listObjects(keyPrefix)) yield obj.key.slice(base.length)
  }

  async writable(): Promise<boolean> {
    const abortSignal = AbortSignal.timeout(this.probeTimeoutMs)
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket.name, Key: this.probeKey, Body: 'ok' }), { abortSignal })
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket.name, Key: this.probeKey }), { abortSignal })
      return true
    } catch (err) {
      this.bucket.log.debug({ err: describe(err) }, 'S3 write probe failed')
      return false
    }
  }

  /** Closes idle sockets (tests, shutdown). */
  destroy(): void {
    this.bucket.destroy()
  }
}

/**
 * Passes a blob stream through and ends it after exactly `expected` bytes;
 * a source that ends short errors the stream instead of ending it.
 */
class LengthCheck extends Transform {
  private received = 0

  constructor(private readonly digest: string, private readonly expected: number) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const room = this.expected - this.received
    if (room <= 0) {
      callback()
      return
    }
    if (chunk.byteLength <= room) {
      this.received += chunk.byteLength
      callback(null, chunk)
      return
    }
    // An over-long answer: end now and drop the rest.
    this.received = this.expected
    this.push(chunk.subarray(0, room))
    this.push(null)
    callback()
  }

  override _flush(callback: TransformCallback): void {
    callback(this.received === this.expected ? null : new TruncatedReadError(this.digest, this.expected, this.received))
  }
}

/** The S3 store the configuration names, not yet initialised. */
export function createS3BlobStore(config: S3StorageConfig, log: Logger, options: Omit<S3BlobStoreOptions, 'log'> = {}): S3BlobStore {
  return new S3BlobStore(config, { ...options, log })
}
