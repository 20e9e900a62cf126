import { isIP } from 'node:net'
import { RegistryError } from '../oci/errors.js'

/**
 * Which hosts an upstream may send the mirror to. Registries redirect blob
 * GETs to object storage or a CDN on other hosts; a hostile or compromised
 * upstream could instead point the mirror at an internal address (a cloud
 * metadata service, the cluster's API). Without a list, any host is allowed
 * except loopback, private and link-local IP literals and `localhost`; the
 * upstream's own host is always allowed. With a list, only its patterns
 * (`host`, `*.domain`) and the upstream's own host.
 */
export class RedirectRules {
  private readonly patterns: readonly RegExp[] | undefined

  constructor(private readonly upstreamHost: string, allowed: readonly string[] | undefined) {
    this.patterns = allowed?.map((p) => new RegExp(`^${p.toLowerCase().split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]+(?:\\.[^.]+)*')}$`))
  }

  /** Throws UPSTREAM_ERROR unless `next` may be followed from `from`. */
  check(from: URL, next: URL, seen: ReadonlySet<string>): void {
    if (next.protocol !== 'https:' && next.protocol !== 'http:') throw refused(`a redirect to ${next.protocol}`)
    if (seen.has(next.href)) throw refused(`a redirect loop (back to ${next.origin}${next.pathname})`)
    // An upgrade to TLS is fine; a downgrade from it is not.
    if (from.protocol === 'https:' && next.protocol === 'http:') throw refused(`a redirect from https to http (${next.host})`)
    const host = next.hostname.toLowerCase().replace(/^\[|\]$/g, '')
    if (host === this.upstreamHost) return
    if (this.patterns !== undefined) {
      if (!this.patterns.some((p) => p.test(host))) throw refused(`a redirect to ${host}, which is not in redirectHosts`)
      return
    }
    if (host === 'localhost' || host.endsWith('.localhost') || isInternalAddress(host)) throw refused(`a redirect to the internal address ${host}`)
  }
}

function refused(what: string): RegistryError {
  return new RegistryError('UPSTREAM_ERROR', `upstream sent ${what}; not followed`)
}

/** Loopback, private, link-local, unique-local, unspecified and CGNAT literals. */
export function isInternalAddress(host: string): boolean {
  const kind = isIP(host)
  if (kind === 4) {
    const [a = 0, b = 0] = host.split('.').map(Number)
    return a === 0 || a === 10 || a === 127 || (a === 100 && b >= 64 && b < 128) || (a === 169 && b === 254) || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)
  }
  if (kind === 6) {
    const h = host.toLowerCase()
    if (h === '::' || h === '::1') return true
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
    if (mapped !== null) return isInternalAddress(mapped[1] as string)
    return /^f[cd]/.test(h) || /^fe[89ab]/.test(h)
  }
  return false
}
