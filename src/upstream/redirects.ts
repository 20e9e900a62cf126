import ipaddr from 'ipaddr.js'
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
    const problem = this.hostProblem(next)
    if (problem !== undefined) throw refused(`a redirect to ${problem}`)
  }

  /**
   * Whether the upstream may send the mirror to this URL other than by a
   * redirect (a token realm): undefined when it may, else what is wrong.
   */
  refusal(url: URL): string | undefined {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return `${url.protocol}`
    return this.hostProblem(url)
  }

  private hostProblem(url: URL): string | undefined {
    const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '')
    if (host === this.upstreamHost) return undefined
    if (this.patterns !== undefined) return this.patterns.some((p) => p.test(host)) ? undefined : `${host}, which is not in redirectHosts`
    if (host === 'localhost' || host.endsWith('.localhost') || isInternalAddress(host)) return `the internal address ${host}`
    return undefined
  }
}

function refused(what: string): RegistryError {
  return new RegistryError('UPSTREAM_ERROR', `upstream sent ${what}; not followed`)
}

/**
 * Any IP literal that is not plain public unicast: loopback, private,
 * link-local, unique-local, CGNAT, unspecified, multicast, reserved, and
 * IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo), which
 * the URL parser writes in hex (`[::ffff:127.0.0.1]` becomes `::ffff:7f00:1`).
 */
export function isInternalAddress(host: string): boolean {
  if (!ipaddr.isValid(host)) return false
  return ipaddr.process(host).range() !== 'unicast'
}
