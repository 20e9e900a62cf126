/** OCI distribution error codes this mirror can answer with, and their HTTP status. */
export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_UNKNOWN: 404,
  NAME_INVALID: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  TAG_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UPSTREAM_ERROR: 502,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const

export type ErrorCode = keyof typeof ERROR_STATUS

/**
 * The one error type routes throw. The error handler renders it as the
 * spec's `{"errors":[...]}` body; `headers` carries extras such as Retry-After.
 */
export class RegistryError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly detail: unknown
  readonly headers: Record<string, string>

  constructor(code: ErrorCode, message: string, options: { detail?: unknown; headers?: Record<string, string>; status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RegistryError'
    this.code = code
    this.status = options.status ?? ERROR_STATUS[code]
    this.detail = options.detail ?? null
    this.headers = options.headers ?? {}
  }

  /** The JSON body the distribution spec prescribes. */
  body(): { errors: Array<{ code: string; message: string; detail: unknown }> } {
    // UPSTREAM_ERROR is ours, not the spec's: clients only know UNAVAILABLE-like codes.
    const code = this.code === 'UPSTREAM_ERROR' ? 'UNAVAILABLE' : this.code
    return { errors: [{ code, message: this.message, detail: this.detail }] }
  }
}

