import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import {
  AbortMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import type { Logger } from 'pino'
import type { S3StorageConfig } from '../config/schema.js'
import { parseDigest } from '../oci/digest.js'
import { describe, isNotFound, isUnsupported } from './s3-errors.js'

const DOCUMENT_KEY = /^[A-Za-z0-9._:@+-]+(?:\/[A-Za-z0-9._:@+-]+)*$/

function checkKey(key: string): string {
  if (!DOCUMENT_KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
    throw new Error(`invalid document key ${JSON.stringify(key)}`)
  }
  return key
}

/** An object as a listing names it. */
export interface ListedObject {
  readonly key: string
  readonly size: number
  readonly lastModified?: Date
}

/**
 * One bucket and key prefix, as the store, its writers and its maintenance
 * share it: the clients, the key layout (`<prefix>blobs/<alg>/<hex>`,
 * `<prefix>docs/<key>`), and the few requests all three make.
 */
export class S3Bucket {
  readonly client: S3Client
  /** Signs redirect URLs: the client itself, or one for the public endpoint. */
  readonly presignClient: S3Client
  readonly name: string
  readonly prefix: string
  /** "S3 bucket "x" at <endpoint>" (or "in <region>"), for messages. */
  readonly where: string
  private warnedUnsupportedAbort = false

  constructor(config: S3StorageConfig, readonly log: Logger, clientOverrides: Partial<S3ClientConfig> = {}) {
    this.name = config.bucket
    this.prefix = config.prefix
    this.where = `S3 bucket ${JSON.stringify(config.bucket)}${config.endpoint !== undefined ? ` at ${config.endpoint}` : ` in ${config.region}`}`
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
      ...clientOverrides,
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

  /** `<prefix>docs/`: every document key starts with it. */
  get documentsBase(): string {
    return `${this.prefix}docs/`
  }

  /** `<prefix>docs/<key>`; throws on a key that is not a clean relative path. */
  documentKey(key: string): string {
    return `${this.documentsBase}${checkKey(key)}`
  }

  /** Size of an object, or undefined when there is none. */
  async headSize(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.name, Key: key }))
      return out.ContentLength ?? 0
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  /** A small object's bytes (documents, the layout marker), or undefined when there is none. */
  async getObjectBytes(key: string): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.name, Key: key }))
      if (out.Body === undefined) return Buffer.alloc(0)
      const bytes = await out.Body.transformToByteArray()
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  /** Every object under a key prefix, paginated. */
  async *listObjects(keyPrefix: string): AsyncIterable<ListedObject> {
    let token: string | undefined
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({
        Bucket: this.name,
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

  /** Best-effort abort of one multipart upload; an endpoint without the API is reported once. */
  async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.name, Key: key, UploadId: uploadId }))
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

  /** Closes idle sockets (tests, shutdown). */
  destroy(): void {
    this.client.destroy()
    if (this.presignClient !== this.client) this.presignClient.destroy()
  }
}
