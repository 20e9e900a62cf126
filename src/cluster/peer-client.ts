// HTTP from one replica to another: signed, on our own keep-alive pool,
// never through a proxy. Upstream clients honour HTTPS_PROXY (an egress
// proxy is how many clusters reach registries), but a peer is a pod IP on
// the cluster network: sent through that proxy it would leave the cluster,
// or fail, and either way the blob would no longer be fetched once.
import { checkServerIdentity } from 'node:tls'
import { Agent, type Dispatcher } from 'undici'
import { signPeerRequest } from './peer-auth.js'

/** Where every peer route lives on a replica's listener. */
export const PEER_PATH_PREFIX = '/_stevedore/peer'
/** The health probe's path: 200 when the replica can serve peer requests. */
export const PEER_HEALTH_PATH = `${PEER_PATH_PREFIX}/health`

export interface PeerClientOptions {
  /** TCP connect, and the TLS handshake for https peers. */
  readonly connectTimeoutMs: number
  /** Longest silence from a peer: before its headers, or within its body. */
  readonly readTimeoutMs: number
  readonly secret: Buffer
  readonly tls?: { ca?: string; serverName?: string }
}

// A peer that could not be reached at all, as opposed to one that answered badly or too slowly:
// the forwarder fetches from the upstream itself and takes the peer out of the ring.
const UNREACHABLE = new Set([
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ETIMEDOUT', 'EPIPE',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_HAS_EXPIRED',
])

/** Whether a PeerClient.request failure means the peer could not be reached (connect, TLS or socket failure). */
export function isPeerUnreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && UNREACHABLE.has(code)
}

// A health answer is a few bytes; past this the connection is dropped rather than read.
const HEALTH_BODY_LIMIT = 64 * 1024

/** Signed requests to other replicas on one pool of its own. */
export class PeerClient {
  private readonly agent: Agent

  constructor(private readonly options: PeerClientOptions) {
    const { ca, serverName } = options.tls ?? {}
    // Pods are reached on their IPs, which change with every reschedule and
    // are rarely in a certificate; a certificate for the Service name
    // (stevedore.stevedore.svc, what cert-manager issues) is. So with
    // serverName the handshake sends it as SNI and the certificate is checked
    // against it instead of the IP dialled. The CA still has to sign it: what
    // is given up is only the binding to one pod, which the shared secret
    // already does not give (every replica holds it).
    const identity = serverName === undefined
      ? {}
      : { servername: serverName, checkServerIdentity: (_host: string, cert: Parameters<typeof checkServerIdentity>[1]) => checkServerIdentity(serverName, cert) }
    // A plain Agent reads no environment: HTTP_PROXY, HTTPS_PROXY and NO_PROXY never apply.
    this.agent = new Agent({
      connect: {
        timeout: options.connectTimeoutMs,
        // Given, it replaces the system store: peers' certificates come from the cluster's own CA.
        ...(ca !== undefined ? { ca } : {}),
        ...identity,
      },
      headersTimeout: options.readTimeoutMs,
      bodyTimeout: options.readTimeoutMs,
    })
  }

  /**
   * A signed request to a peer; the dispatcher is our own undici Agent (not
   * the global dispatcher, never EnvHttpProxyAgent/ProxyAgent, so HTTPS_PROXY
   * and HTTP_PROXY never apply). The caller consumes or dumps the body.
   */
  request(
    origin: string,
    method: 'GET' | 'HEAD',
    pathWithQuery: string,
    options: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): Promise<Dispatcher.ResponseData> {
    // Signed last, so that no header a caller passes can stand in for the signature.
    const headers = { ...options.headers, ...signPeerRequest(this.options.secret, method, pathWithQuery) }
    return this.agent.request({ origin, method, path: pathWithQuery, headers, ...(options.signal !== undefined ? { signal: options.signal } : {}) })
  }

  /** The health probe: signed GET /_stevedore/peer/health, true on 200 before `signal` aborts. Body always consumed. */
  async probe(origin: string, signal: AbortSignal): Promise<boolean> {
    try {
      const res = await this.request(origin, 'GET', PEER_HEALTH_PATH, { signal })
      // Read to its end so that the connection goes back to the pool for the next probe.
      await res.body.dump({ limit: HEALTH_BODY_LIMIT, signal })
      return res.statusCode === 200
    } catch {
      return false
    }
  }

  /** Closes the pool once running requests end. */
  async close(): Promise<void> {
    await this.agent.close()
  }

  /** Destroys every connection now; running requests fail. */
  destroy(): void {
    this.agent.destroy().catch(() => undefined)
  }
}
