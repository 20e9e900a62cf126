import type { UpstreamConfig } from '../config/schema.js'
import { RegistryError } from '../oci/errors.js'
import { looksLikeRegistryHost, requireName } from '../oci/names.js'

export interface Route {
  readonly upstream: UpstreamConfig
  /** The repository on the upstream, e.g. `library/alpine`. */
  readonly repository: string
  /** The name as the client sent it (for Link rewriting). */
  readonly clientName: string
}

// Other names clients use for Docker Hub.
const DOCKER_HUB_ALIASES = new Set(['index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'])

/** Compiles `repositories` patterns: `*` within one path component, `**` across components. */
export function compileRepositoryPattern(pattern: string): RegExp {
  const body = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('')
  return new RegExp(`^${body}$`)
}

/**
 * Picks the upstream for a request: by containerd's `ns` query parameter, else
 * by a host-like first path component (podman/CRI-O prefix mirrors), else the
 * default upstream. Anything not configured is refused: never an open proxy.
 */
export class Router {
  private readonly patterns = new Map<string, RegExp[]>()

  constructor(private readonly upstreams: ReadonlyMap<string, UpstreamConfig>, private readonly defaultUpstream: string | undefined) {
    for (const [name, u] of upstreams) {
      if (u.repositories !== undefined) this.patterns.set(name, u.repositories.map(compileRepositoryPattern))
    }
  }

  route(clientName: string, ns: string | undefined): Route {
    let upstream: UpstreamConfig | undefined
    let rest = clientName
    if (ns !== undefined && ns !== '') {
      upstream = this.lookup(ns)
      if (upstream === undefined) throw denied(`registry ${JSON.stringify(ns)} is not mirrored here`, { ns })
    } else {
      const slash = clientName.indexOf('/')
      const first = slash < 0 ? '' : clientName.slice(0, slash)
      if (first !== '' && looksLikeRegistryHost(first)) {
        upstream = this.lookup(first)
        if (upstream === undefined) throw denied(`registry ${JSON.stringify(first)} is not mirrored here`, { registry: first })
        rest = clientName.slice(slash + 1)
      } else if (this.defaultUpstream !== undefined) {
        upstream = this.upstreams.get(this.defaultUpstream)
      }
      if (upstream === undefined) throw denied('no upstream is configured for names without a registry host', { name: clientName })
    }
    requireName(rest)
    const repository = upstream.dockerHub && !rest.includes('/') ? `library/${rest}` : rest
    // `library/` can push a name past the spec's 255: the upstream would refuse it, and we would answer 502.
    if (repository !== rest) requireName(repository)
    const patterns = this.patterns.get(upstream.name)
    if (patterns !== undefined && !patterns.some((p) => p.test(repository))) {
      throw denied(`repository ${repository} of ${upstream.name} is not mirrored here`, { registry: upstream.name, repository })
    }
    return { upstream, repository, clientName }
  }

  private lookup(host: string): UpstreamConfig | undefined {
    const key = host.toLowerCase()
    return this.upstreams.get(key) ?? (DOCKER_HUB_ALIASES.has(key) ? this.upstreams.get('docker.io') : undefined)
  }
}

function denied(message: string, detail: Record<string, string>): RegistryError {
  return new RegistryError('DENIED', message, { detail })
}
