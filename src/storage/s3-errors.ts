// What the S3 backend throws, and how it reads the SDK's errors.

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

/**
 * createWriter on S3 was not told the digest: an upload goes straight to the
 * blob's own key (invisible until completed), so it must know that key up front.
 */
export class DigestRequiredError extends Error {
  override name = 'DigestRequiredError'
  readonly code = 'S3_DIGEST_REQUIRED'
  constructor() {
    super('the S3 store writes a blob only under the digest it will be committed with: pass expectedDigest to createWriter')
  }
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

export function isNotFound(err: unknown): boolean {
  const e = asAwsError(err)
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.Code === 'NoSuchKey' || (statusOf(err) === 404 && e.name !== 'NoSuchBucket')
}

/** 501/405: an S3-compatible endpoint (s3rver, some gateways) without this API. */
export function isUnsupported(err: unknown): boolean {
  const e = asAwsError(err)
  const status = statusOf(err)
  return status === 501 || status === 405 || e.name === 'NotImplemented' || e.name === 'MethodNotAllowed'
}

/** One line for logs: the SDK's error name, the HTTP status, the message. */
export function describe(err: unknown): string {
  const e = asAwsError(err)
  const status = statusOf(err)
  const code = e.code ?? e.name ?? 'Error'
  const message = err instanceof Error ? err.message : String(err)
  return `${code}${status !== undefined ? ` (HTTP ${status})` : ''}: ${message}`
}

/** The typed start-up error for a failed request to the bucket `where` names. */
export function unavailable(err: unknown, where: string, doing: string): StorageUnavailableError {
  const e = asAwsError(err)
  const status = statusOf(err)
  let code: StorageUnavailableCode = 'S3_ERROR'
  if (e.name === 'NoSuchBucket') code = 'S3_NO_SUCH_BUCKET'
  else if (status === 403 || e.name === 'AccessDenied' || e.name === 'InvalidAccessKeyId' || e.name === 'SignatureDoesNotMatch') code = 'S3_ACCESS_DENIED'
  else if (status === undefined) code = 'S3_UNREACHABLE'
  return new StorageUnavailableError(code, `${where}: ${doing} failed: ${describe(err)}`, { cause: err })
}
