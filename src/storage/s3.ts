import { randomUUID, type Hash } from 'node:crypto'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import type { Logger } from 'pino'
import type { S3StorageConfig } from '../config/schema.js'
import { newHash, parseDigest, type DigestAlgorithm } from '../oci/digest.js'
import { BlobNotFoundError, DigestMismatchError, LAYOUT_VERSION, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange } from './blob-store.js'
import { LayoutError } from './filesystem.js'

/** Bytes buffered per multipart part; S3 wants at least 5 MiB for every part but the last. */
export const DEFAULT_PART_SIZE = 8 * 1024 * 1024
/** Parts uploading while the next one fills: memory per fill is at most (1 + this) × part size. */
const PARTS_IN_FLIGHT = 2
/** The first part buffer starts this small and doubles: most blobs (configs, small layers) never need a whole part. */
const FIRST_BUFFER = 256 * 1024
/** Lifetime of a presigned redirect URL. */
const REDIRECT_EXPIRY_SECONDS = 300
/** A single CopyObject handles up to 5 GiB; larger staged blobs are copied part by part. */
const MAX_SINGLE_COPY = 5 * 1024 * 1024 * 1024
const COPY_PART_SIZE = 512 * 1024 * 1024
const MARKER = 'stevedore-layout.json'
const DOCUMENT_KEY = /^[A-Za-z0-9._:@+-]+(?:\/[A-Za-z0-9._:@+-]+)*$/

/** Why the bucket cannot be used: a stable code for callers, a message naming bucket and endpoint. */
export type StorageUnavailableCode = 'S3_UNREACHABLE' | 'S3_NO_SUCH_BUCKET' | 'S3_ACCESS_DENIED' | 'S3_ERROR'

/** The S3 bucket cannot be reached or used (thrown by init; main decides whether to retry). */
export class StorageUnavailableError extends Error {
  override name = 'StorageUnavailableError'
  constructor(readonly code: StorageUnavailableCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** A blob read from S3 ended before the announced length: never a clean short end. */
export class TruncatedReadError extends Error {
  override name = 'TruncatedReadError'
  readonly code = 'S3_TRUNCATED_READ'
  constructor(readonly digest: string, readonly expected: number, readonly received: number) {
    super(`read of blob ${digest} from S3 ended after ${received} of ${expected} bytes`)
  }
}

/** Tuning and test hooks for S3BlobStore; the configuration says where the bucket is. */
export interface S3BlobStoreOptions {
  readonly log: Logger
  /** Bytes per multipart part; default DEFAULT_PART_SIZE. */
  readonly partSize?: number
  /** Multipart uploads and staged objects older than this are crash leftovers, removed by init (storage.s3.staleUploadAge). */
  readonly staleUploadMs?: number
  /** How long writable() waits for its probe. */
  readonly probeTimeoutMs?: number
  /** Client settings merged over the ones built from the config (tests: retries, timeouts). */
  readonly clientOverrides?: Partial<S3ClientConfig>
}

function checkKey(key: string): string {
  if (!DOCUMENT_KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
    throw new Error(`invalid document key ${JSON.stringify(key)}`)
  }
  return key
}

interface AwsError {
  name?: string
  code?: string
  Code?: string
  $metadata?: { httpStatusCode?: number }
}

function asAwsError(err: unknown): AwsError {
  return typeof err === 'object' && err !== null ? (err as AwsError) : {}
}

const statusOf = (err: unknown): number | undefined => asAwsError(err).$metadata?.httpStatusCode

function isNotFound(err: unknown): boolean {
  const e = asAwsError(err)
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.Code === 'NoSuchKey' || (statusOf(err) === 404 && e.name !== 'NoSuchBucket')
}

/** 501/405: an S3-compatible endpoint (s3rver, some gateways) without this API. */
function isUnsupported(err: unknown): boolean {
  const e = asAwsError(err)
  const status = statusOf(err)
  return status === 501 || status === 405 || e.name === 'NotImplemented' || e.name === 'MethodNotAllowed'
}

function describe(err: unknown): string {
  const e = asAwsError(err)
  const status = statusOf(err)
  const code = e.code ?? e.name ?? 'Error'
  const message = err instanceof Error ? err.message : String(err)
  return `${code}${status !== undefined ? ` (HTTP ${status})` : ''}: ${message}`
}

/**
 * Blobs and documents in one S3 bucket under a prefix:
 * `<prefix>blobs/<alg>/<hex>`, `<prefix>docs/<key>`, `<prefix>stevedore-layout.json`.
 * Writes stream as multipart uploads, which are invisible until completed;
 * a completed object is always a verified blob. Several processes may share
 * one bucket and prefix.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3'
  readonly client: S3Client
  readonly bucket: string
  readonly prefix: string
  readonly partSize: number
  private readonly presignClient: S3Client
  private readonly log: Logger
  private readonly staleUploadMs: number
  private readonly probeTimeoutMs: number
  private readonly where: string
  private readonly probeKey: string
  private warnedUnsupportedAbort = false

  constructor(private readonly config: S3StorageConfig, options: S3BlobStoreOptions) {
    this.log = options.log
    this.bucket = config.bucket
    this.prefix = config.prefix
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE
    this.staleUploadMs = options.staleUploadMs ?? 30 * 60_000
    this.probeTimeoutMs = options.probeTimeoutMs ?? 5_000
    this.where = `S3 bucket ${JSON.stringify(config.bucket)}${config.endpoint !== undefined ? ` at ${config.endpoint}` : ` in ${config.region}`}`
    this.probeKey = `${this.prefix}probes/${randomUUID()}`
    const base: S3ClientConfig = {
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      // Without keys in the config the SDK's default chain applies: env, shared files, web identity (IRSA), instance roles.
      ...(config.accessKeyId !== undefined && config.secretAccessKey !== undefined
        ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
        : {}),
      // Blobs are verified against their sha256 by us. The SDK's default CRC headers are
      // rejected by several S3-compatible stores, so send checksums only where S3 demands them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
      requestHandler: {
        connectionTimeout: 5_000,
        // Idle time on a socket, body included: a client stalling longer than this loses its stream.
        requestTimeout: 120_000,
        // Every blob stream holds a socket: the SDK's default of 50 would queue the 51st reader.
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 1024 }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 1024 }),
      },
      ...options.clientOverrides,
    }
    this.client = new S3Client({ ...base, ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}) })
    const publicEndpoint = config.publicEndpoint
    this.presignClient = publicEndpoint !== undefined ? new S3Client({ ...base, endpoint: publicEndpoint }) : this.client
  }

  /** `<prefix>blobs/<alg>/<hex>`. */
  blobKey(digest: string): string {
    const d = parseDigest(digest)
    if (d === undefined) throw new Error(`invalid digest ${JSON.stringify(digest)}`)
    return `${this.prefix}blobs/${d.algorithm}/${d.hex}`
  }

  /** `<prefix>docs/<key>`; throws on a key that is not a clean relative path. */
  documentKey(key: string): string {
    return `${this.prefix}docs/${checkKey(key)}`
  }

  /** Key of a staged upload, used when a writer does not know its digest before commit. */
  stagingKey(): string {
    return `${this.prefix}uploads/${randomUUID()}`
  }

  private unavailable(err: unknown, doing: string): StorageUnavailableError {
    const e = asAwsError(err)
    const status = statusOf(err)
    let code: StorageUnavailableCode = 'S3_ERROR'
    if (e.name === 'NoSuchBucket') code = 'S3_NO_SUCH_BUCKET'
    else if (status === 403 || e.name === 'AccessDenied' || e.name === 'InvalidAccessKeyId' || e.name === 'SignatureDoesNotMatch') code = 'S3_ACCESS_DENIED'
    else if (status === undefined) code = 'S3_UNREACHABLE'
    return new StorageUnavailableError(code, `${this.where}: ${doing} failed: ${describe(err)}`, { cause: err })
  }

  async init(): Promise<void> {
    const markerKey = `${this.prefix}${MARKER}`
    let marker: Buffer | undefined
    try {
      marker = await this.getObjectBytes(markerKey)
    } catch (err) {
      throw this.unavailable(err, `reading ${markerKey}`)
    }
    if (marker !== undefined) {
      let version: unknown
      try {
        version = (JSON.parse(marker.toString('utf8')) as { version?: unknown }).version
      } catch {
        throw new LayoutError(`${this.where}: ${markerKey} is not valid JSON: refusing to use this bucket and prefix`)
      }
      if (version !== LAYOUT_VERSION) {
        throw new LayoutError(`${this.where}: ${markerKey} says layout version ${String(version)}; this Stevedore reads version ${LAYOUT_VERSION} only`)
      }
    } else {
      try {
        await this.client.send(new PutObjectCommand({
          Bucket: this.bucket,
          Key: markerKey,
          Body: `${JSON.stringify({ version: LAYOUT_VERSION })}\n`,
          ContentType: 'application/json',
        }))
      } catch (err) {
        throw this.unavailable(err, `writing ${markerKey}`)
      }
    }
    await this.abortStaleUploads()
    await this.removeStaleStaging()
  }

  /** Best effort: a crash leaves uploads that cost storage but are never visible objects. */
  private async abortStaleUploads(): Promise<void> {
    const cutoff = Date.now() - this.staleUploadMs
    let aborted = 0
    try {
      let keyMarker: string | undefined
      let uploadIdMarker: string | undefined
      for (;;) {
        const page = await this.client.send(new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          Prefix: this.prefix,
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
        }))
        for (const upload of page.Uploads ?? []) {
          if (upload.Key === undefined || upload.UploadId === undefined) continue
          if (upload.Initiated !== undefined && upload.Initiated.getTime() > cutoff) continue
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId }))
          aborted++
        }
        if (page.IsTruncated !== true) break
        keyMarker = page.NextKeyMarker
        uploadIdMarker = page.NextUploadIdMarker
      }
      if (aborted > 0) this.log.info({ aborted, olderThanMs: this.staleUploadMs }, 'aborted multipart uploads left by an earlier process')
    } catch (err) {
      this.log.warn({
        err: describe(err),
        aborted,
        hint: isUnsupported(err) ? 'this S3 endpoint does not support listing or aborting multipart uploads; add a lifecycle rule (AbortIncompleteMultipartUpload) instead' : undefined,
      }, 'could not clean up stale multipart uploads; going on')
    }
  }

  /** Staged uploads and write probes a crashed process left behind, once older than any live one. */
  private async removeStaleStaging(): Promise<void> {
    const cutoff = Date.now() - this.staleUploadMs
    try {
      for (const dir of ['uploads/', 'probes/']) {
        for await (const obj of this.listObjects(`${this.prefix}${dir}`)) {
          if (obj.lastModified !== undefined && obj.lastModified.getTime() > cutoff) continue
          await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: obj.key }))
        }
      }
    } catch (err) {
      this.log.warn({ err: describe(err) }, 'could not remove stale staged uploads; going on')
    }
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    const size = await this.headSize(this.blobKey(digest))
    return size === undefined ? undefined : { digest, size }
  }

  /** Size of an object, or undefined when there is none. */
  async headSize(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }))
      return out.ContentLength ?? 0
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async read(digest: string, range?: ByteRange): Promise<Readable> {
    let body: unknown
    let contentLength: number | undefined
    let contentRange: string | undefined
    try {
      const out = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket,
        Key: this.blobKey(digest),
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
   * A writer for one blob. With expectedDigest (the digest the caller will
   * commit) the multipart upload goes straight to the blob's key; without it,
   * a blob over one part is staged and copied into place at commit.
   */
  async createWriter(algorithm: DigestAlgorithm = 'sha256', expectedDigest?: string): Promise<BlobWriter> {
    return new S3BlobWriter(this, algorithm, expectedDigest, this.log)
  }

  async delete(digest: string): Promise<boolean> {
    const key = this.blobKey(digest)
    if ((await this.headSize(key)) === undefined) return false
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }))
    return true
  }

  async *list(): AsyncIterable<BlobInfo> {
    const base = `${this.prefix}blobs/`
    for await (const obj of this.listObjects(base)) {
      const rest = obj.key.slice(base.length)
      const slash = rest.indexOf('/')
      if (slash < 0) continue
      const digest = `${rest.slice(0, slash)}:${rest.slice(slash + 1)}`
      if (parseDigest(digest) === undefined) continue
      yield { digest, size: obj.size }
    }
  }

  /** Every object under a key prefix, paginated. */
  async *listObjects(keyPrefix: string): AsyncIterable<{ key: string; size: number; lastModified?: Date }> {
    let token: string | undefined
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: keyPrefix,
        ...(token !== undefined ? { ContinuationToken: token } : {}),
      }))
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined) continue
        yield { key: obj.Key, size: obj.Size ?? 0, ...(obj.LastModified !== undefined ? { lastModified: obj.LastModified } : {}) }
      }
      if (page.IsTruncated !== true || page.NextContinuationToken === undefined) return
      token = page.NextContinuationToken
    }
  }

  async redirectUrl(digest: string): Promise<string | undefined> {
    if (!this.config.redirect) return undefined
    return getSignedUrl(this.presignClient, new GetObjectCommand({ Bucket: this.bucket, Key: this.blobKey(digest) }), { expiresIn: REDIRECT_EXPIRY_SECONDS })
  }

  private async getObjectBytes(key: string): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))
      if (out.Body === undefined) return Buffer.alloc(0)
      const bytes = await out.Body.transformToByteArray()
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async getDocument(key: string): Promise<Buffer | undefined> {
    return this.getObjectBytes(this.documentKey(key))
  }

  async putDocument(key: string, bytes: Uint8Array): Promise<void> {
    // A PutObject replaces the object atomically: readers see the old or the new bytes.
    await this.client.send(new PutObjectCommand({
      Bucket: this.bucket,
      Key: this.documentKey(key),
      Body: bytes,
      ContentLength: bytes.byteLength,
      ContentType: 'application/octet-stream',
    }))
  }

  async deleteDocument(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.documentKey(key) }))
  }

  async *listDocuments(prefix: string): AsyncIterable<string> {
    const start = prefix.replace(/\/+$/, '')
    const base = `${this.prefix}docs/`
    const keyPrefix = start === '' ? base : `${base}${checkKey(start)}/`
    for await (const obj of this.listObjects(keyPrefix)) yield obj.key.slice(base.length)
  }

  async writable(): Promise<boolean> {
    const abortSignal = AbortSignal.timeout(this.probeTimeoutMs)
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.probeKey, Body: 'ok' }), { abortSignal })
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.probeKey }), { abortSignal })
      return true
    } catch (err) {
      this.log.debug({ err: describe(err) }, 'S3 write probe failed')
      return false
    }
  }

  /** Best-effort abort of one multipart upload; an endpoint without the API is reported once. */
  async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
    } catch (err) {
      if (isUnsupported(err)) {
        if (!this.warnedUnsupportedAbort) {
          this.warnedUnsupportedAbort = true
          this.log.warn({ err: describe(err) }, 'this S3 endpoint cannot abort multipart uploads: abandoned parts stay until a lifecycle rule removes them')
        }
        return
      }
      this.log.warn({ key, uploadId, err: describe(err) }, 'could not abort multipart upload')
    }
  }

  /** Copies a staged object to its final key: one CopyObject up to 5 GiB, part copies beyond. */
  async copyObject(from: string, to: string, size: number): Promise<void> {
    const source = `${this.bucket}/${from.split('/').map(encodeURIComponent).join('/')}`
    if (size <= MAX_SINGLE_COPY) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: source }))
      return
    }
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: to, ContentType: 'application/octet-stream' }))
    if (UploadId === undefined) throw new Error('S3 CreateMultipartUpload returned no UploadId')
    try {
      const parts: CompletedPart[] = []
      for (let start = 0, n = 1; start < size; start += COPY_PART_SIZE, n++) {
        const end = Math.min(start + COPY_PART_SIZE, size) - 1
        const out = await this.client.send(new UploadPartCopyCommand({ Bucket: this.bucket, Key: to, UploadId, PartNumber: n, CopySource: source, CopySourceRange: `bytes=${start}-${end}` }))
        parts.push({ PartNumber: n, ETag: out.CopyPartResult?.ETag })
      }
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: to, UploadId, MultipartUpload: { Parts: parts } }))
    } catch (err) {
      await this.abortUpload(to, UploadId)
      throw err
    }
  }

  /** Closes idle sockets (tests, shutdown). */
  destroy(): void {
    this.client.destroy()
    if (this.presignClient !== this.client) this.presignClient.destroy()
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

interface Upload {
  readonly key: string
  readonly uploadId: string
  /** True when the upload targets a staging key and must be copied at commit. */
  readonly staged: boolean
}

/**
 * Streams a blob into S3 while hashing it. Bytes collect in a part buffer;
 * a full buffer becomes an UploadPart (up to PARTS_IN_FLIGHT at once) while
 * the next fills. A blob that fits one part is one PutObject at commit.
 * The multipart upload targets the final key when the digest is known up
 * front, else a staging key that commit copies: either way nothing is a
 * visible blob until the bytes are verified.
 */
class S3BlobWriter implements BlobWriter {
  written = 0
  private readonly hash: Hash
  private buffer: Buffer | undefined
  private filled = 0
  private readonly spare: Buffer[] = []
  private upload: Upload | undefined
  private readonly parts: CompletedPart[] = []
  private readonly inflight = new Set<Promise<void>>()
  private failure: Error | undefined
  private state: 'open' | 'committing' | 'done' = 'open'
  private stagedObject: string | undefined

  constructor(
    private readonly store: S3BlobStore,
    private readonly algorithm: DigestAlgorithm,
    private readonly expectedDigest: string | undefined,
    private readonly log: Logger,
  ) {
    this.hash = newHash(algorithm)
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error('write after commit or cancel')
    if (this.failure !== undefined) throw this.failure
    this.hash.update(chunk)
    const partSize = this.store.partSize
    let offset = 0
    while (offset < chunk.byteLength) {
      // A full part goes out only once a byte follows it: a blob of exactly one part stays one PutObject.
      if (this.filled === partSize) {
        try {
          await this.sendPart()
        } catch (err) {
          this.failure ??= err instanceof Error ? err : new Error(String(err))
          throw err
        }
      }
      const buffer = this.room()
      const n = Math.min(buffer.byteLength - this.filled, chunk.byteLength - offset)
      buffer.set(chunk.subarray(offset, offset + n), this.filled)
      this.filled += n
      offset += n
      this.written += n
    }
  }

  async writev(chunks: readonly Uint8Array[]): Promise<void> {
    for (const chunk of chunks) await this.write(chunk)
  }

  /** The part buffer, with room for at least one more byte (grown up to the part size). */
  private room(): Buffer {
    const partSize = this.store.partSize
    let buffer = this.buffer
    if (buffer === undefined) {
      buffer = this.spare.pop() ?? Buffer.allocUnsafe(Math.min(FIRST_BUFFER, partSize))
      this.buffer = buffer
    }
    if (this.filled === buffer.byteLength && buffer.byteLength < partSize) {
      const bigger = Buffer.allocUnsafe(Math.min(buffer.byteLength * 2, partSize))
      buffer.copy(bigger, 0, 0, this.filled)
      this.buffer = buffer = bigger
    }
    return buffer
  }

  private async startUpload(): Promise<Upload> {
    if (this.upload !== undefined) return this.upload
    const staged = this.expectedDigest === undefined
    const key = staged ? this.store.stagingKey() : this.store.blobKey(this.expectedDigest)
    const out = await this.store.client.send(new CreateMultipartUploadCommand({ Bucket: this.store.bucket, Key: key, ContentType: 'application/octet-stream' }))
    if (out.UploadId === undefined) throw new Error('S3 CreateMultipartUpload returned no UploadId')
    this.upload = { key, uploadId: out.UploadId, staged }
    return this.upload
  }

  /** Uploads the filled buffer as the next part; resolves once it may be reused or another part may start. */
  private async sendPart(): Promise<void> {
    const body = this.buffer
    const length = this.filled
    if (body === undefined || length === 0) return
    this.buffer = undefined
    this.filled = 0
    const upload = await this.startUpload()
    while (this.inflight.size >= PARTS_IN_FLIGHT) await Promise.race(this.inflight)
    if (this.failure !== undefined) throw this.failure
    const partNumber = this.parts.length + 1
    this.parts.push({ PartNumber: partNumber })
    const sent: Promise<void> = this.store.client
      .send(new UploadPartCommand({
        Bucket: this.store.bucket,
        Key: upload.key,
        UploadId: upload.uploadId,
        PartNumber: partNumber,
        Body: body.subarray(0, length),
        ContentLength: length,
      }))
      .then(
        (out) => {
          this.parts[partNumber - 1] = { PartNumber: partNumber, ETag: out.ETag }
          this.spare.push(body)
        },
        (err: unknown) => {
          this.failure ??= err instanceof Error ? err : new Error(String(err))
        },
      )
      .finally(() => this.inflight.delete(sent))
    this.inflight.add(sent)
  }

  async commit(digest: string, size: number, onVerified?: () => void): Promise<void> {
    if (this.state !== 'open') throw new Error('commit after commit or cancel')
    this.state = 'committing'
    try {
      if (this.failure !== undefined) throw this.failure
      const actual = `${this.algorithm}:${this.hash.digest('hex')}`
      if (actual !== digest || this.written !== size) throw new DigestMismatchError(digest, actual, size, this.written)
      if (this.expectedDigest !== undefined && this.expectedDigest !== digest) {
        throw new Error(`writer was created for ${this.expectedDigest}, not ${digest}`)
      }
      onVerified?.()
      await this.publish(digest, size)
      this.state = 'done'
      this.release()
    } catch (err) {
      await this.discard()
      throw err
    }
  }

  private async publish(digest: string, size: number): Promise<void> {
    const { client, bucket } = this.store
    const key = this.store.blobKey(digest)
    if (this.upload === undefined) {
      // Content-addressed: an object already there was verified by whoever wrote it.
      if ((await this.store.headSize(key)) === size) return
      await client.send(new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: this.buffer?.subarray(0, this.filled) ?? Buffer.alloc(0),
        ContentLength: this.filled,
        ContentType: 'application/octet-stream',
      }))
      return
    }
    await this.sendPart()
    while (this.inflight.size > 0) await Promise.race(this.inflight)
    if (this.failure !== undefined) throw this.failure
    const upload = this.upload
    if ((await this.store.headSize(key)) === size) {
      await this.store.abortUpload(upload.key, upload.uploadId)
      this.upload = undefined
      return
    }
    await client.send(new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: upload.key,
      UploadId: upload.uploadId,
      MultipartUpload: { Parts: this.parts },
    }))
    this.upload = undefined
    if (upload.staged) {
      this.stagedObject = upload.key
      await this.store.copyObject(upload.key, key, size)
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: upload.key }))
      this.stagedObject = undefined
    }
  }

  async cancel(): Promise<void> {
    if (this.state !== 'open') return
    this.state = 'committing'
    await this.discard()
  }

  /** Waits for parts in flight, then aborts the upload and removes a staged object; never throws. */
  private async discard(): Promise<void> {
    this.state = 'done'
    await Promise.allSettled([...this.inflight])
    const upload = this.upload
    this.upload = undefined
    if (upload !== undefined) await this.store.abortUpload(upload.key, upload.uploadId)
    if (this.stagedObject !== undefined) {
      const key = this.stagedObject
      this.stagedObject = undefined
      await this.store.client.send(new DeleteObjectCommand({ Bucket: this.store.bucket, Key: key })).catch((err: unknown) => {
        this.log.warn({ key, err: describe(err) }, 'could not remove staged upload')
      })
    }
    this.release()
  }

  private release(): void {
    this.buffer = undefined
    this.spare.length = 0
  }
}

/** The S3 store the configuration names, not yet initialised. */
export function createS3BlobStore(config: S3StorageConfig, log: Logger, options: Omit<S3BlobStoreOptions, 'log'> = {}): S3BlobStore {
  return new S3BlobStore(config, { ...options, log })
}
