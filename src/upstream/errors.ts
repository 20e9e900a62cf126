import { RegistryError } from '../oci/errors.js'

/** The upstream could not be reached or did not answer in time. */
export class UpstreamUnreachableError extends RegistryError {
  constructor(upstream: string, cause: unknown) {
    const reason = cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause)
    super('UNAVAILABLE', `upstream ${upstream} is unreachable`, { detail: { upstream, reason }, cause })
    this.name = 'UpstreamUnreachableError'
  }
}

/**
 * Turns an upstream answer that is not a success into the error we give the
 * client. 401/403 become DENIED so containerd falls back to the registry with
 * the node's own credentials; 429 keeps Retry-After.
 */
export function errorForUpstreamStatus(upstream: string, status: number, headers: Record<string, string | string[] | undefined>, notFound: RegistryError): RegistryError {
  if (status === 404) return notFound
  if (status === 401 || status === 403) {
    return new RegistryError('DENIED', `upstream ${upstream} refused access`, { detail: { upstream, status } })
  }
  if (status === 429) {
    const retryAfter = headers['retry-after']
    return new RegistryError('TOOMANYREQUESTS', `upstream ${upstream} is rate-limiting`, {
      detail: { upstream },
      headers: typeof retryAfter === 'string' ? { 'retry-after': retryAfter } : {},
    })
  }
  return new RegistryError('UPSTREAM_ERROR', `upstream ${upstream} answered ${status}`, { detail: { upstream, status } })
}

/** True for answers that mean "the upstream is not able to answer now": serve stale content instead. */
export function isUpstreamOutage(err: unknown): boolean {
  return err instanceof UpstreamUnreachableError || (err instanceof RegistryError && (err.code === 'UPSTREAM_ERROR' || err.code === 'TOOMANYREQUESTS'))
}
