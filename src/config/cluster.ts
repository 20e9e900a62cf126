// `cluster`: the replicas that share one upstream fetch per blob. Absent: no
// cluster. The schema checks the shape; resolveCluster fills in what comes
// from outside the document (POD_IP, the listener, the secret and CA files).
import { isIP } from 'node:net'
import { Type, type StaticDecode } from '@sinclair/typebox'
import { ConfigError, Invalid, shown } from './errors.js'
import { Duration, List, Origin, Text } from './fields.js'
import { readSecretFile, type SecretReader } from './upstreams.js'

/** HMAC keys shorter than this are guessable offline from one signed request. */
export const MIN_SECRET_BYTES = 16

const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9_-]*[a-zA-Z0-9])?'
const DISCOVERY = new RegExp(`^dns:(${LABEL}(?:\\.${LABEL})*)\\.?:(\\d{1,5})$`)
const DISCOVERY_PROBLEM = 'must be dns:HOST:PORT, such as "dns:stevedore-peers.stevedore.svc.cluster.local:5000"'

/** `dns:HOST:PORT`: a headless Service's name and the port every replica listens on. */
const Discovery = Type.Transform(Type.String({ pattern: DISCOVERY.source, problem: DISCOVERY_PROBLEM, showValue: true }))
  .Decode((text) => {
    const m = DISCOVERY.exec(text)
    const port = Number(m?.[2])
    if (m === null || port < 1 || port > 65535) throw new Invalid('', `${DISCOVERY_PROBLEM} (got ${shown(text)})`)
    return { host: (m[1] ?? '').toLowerCase(), port }
  })
  .Encode(({ host, port }) => `dns:${host}:${port}`)

const ClusterTls = Type.Object({
  /** A PEM bundle peers' certificates are checked against, instead of the system store. */
  ca: Type.Optional(Text()),
  /** The name checked in a peer's certificate instead of the IP it was reached on. */
  serverName: Type.Optional(Text()),
}, { additionalProperties: false })

export const Cluster = Type.Transform(Type.Object({
  self: Type.Optional(Origin()),
  peers: Type.Optional(List(Origin(), 'must be a non-empty list of origins such as http://10.0.3.7:5000')),
  discovery: Type.Optional(Discovery),
  secretFile: Text(),
  // A probe every 100ms per peer is already plenty; past 10m a dead peer is forwarded to for too long.
  healthInterval: Duration({ default: '2s', minMs: 100, maxMs: 600_000 }),
  // It is paid by every pull whose owner is unreachable: seconds, not minutes.
  connectTimeout: Duration({ default: '1s', maxMs: 60_000 }),
  discoveryInterval: Duration({ default: '5s', minMs: 100, maxMs: 3_600_000 }),
  tls: Type.Optional(ClusterTls),
}, { additionalProperties: false, problem: 'must be a mapping with secretFile and peers or discovery' })).Decode((c) => {
  if (c.peers !== undefined && c.discovery !== undefined) throw new Invalid('', 'set peers or discovery, not both')
  if (c.peers === undefined && c.discovery === undefined) throw new Invalid('', 'set peers (a static list) or discovery (dns:HOST:PORT)')
  return c
}).Encode((c) => c)

type ClusterDocument = StaticDecode<typeof Cluster>

/** The replicas of one mirror and how they speak to each other. */
export interface ClusterConfig {
  /** This replica's normalised origin, e.g. 'http://10.0.3.7:5000' (no trailing slash, no path). */
  readonly self: string
  /** Normalised origins; self may or may not be listed (membership always includes self). */
  readonly peers?: readonly string[]
  /** A headless Service's A/AAAA records; the scheme is self's. */
  readonly discovery?: { readonly host: string; readonly port: number; readonly scheme: 'http' | 'https' }
  /** The HMAC key peer requests are signed with. */
  readonly secret: Buffer
  /** How often each peer is probed. */
  readonly healthIntervalMs: number
  /** The peer connect deadline after which a replica fetches from upstream itself. */
  readonly connectTimeoutMs: number
  /** How often discovery is resolved again. */
  readonly discoveryIntervalMs: number
  readonly tls?: { readonly ca?: string; readonly serverName?: string }
}

/** What resolveCluster needs from the rest of the configuration. */
export interface ClusterContext {
  readonly env: NodeJS.ProcessEnv
  readonly readSecret: SecretReader
  /** The port this replica listens on: the default self's port. */
  readonly listenPort: number
  /** Whether the listener speaks TLS: the default self's scheme. */
  readonly listenerTls: boolean
}

const schemeOf = (origin: string): 'http' | 'https' => (origin.startsWith('https:') ? 'https' : 'http')

function defaultSelf(ctx: ClusterContext): string {
  const ip = ctx.env['POD_IP'] || undefined
  if (ip === undefined) throw new ConfigError('cluster.self', 'not set and POD_IP is not in the environment')
  const family = isIP(ip)
  if (family === 0) throw new ConfigError('cluster.self', `not set and POD_IP is not an IP address (got ${shown(ip)})`)
  const host = family === 6 ? `[${ip}]` : ip
  // Through URL, so that it reads exactly as a peer's origin for the same address does (IPv6 compressed, default port dropped).
  return new URL(`${ctx.listenerTls ? 'https' : 'http'}://${host}:${ctx.listenPort}`).origin
}

/** The cluster as replicas use it: self settled, secret and CA read. */
export function resolveCluster(c: ClusterDocument, ctx: ClusterContext): ClusterConfig {
  const self = c.self?.origin ?? defaultSelf(ctx)
  const scheme = schemeOf(self)
  // Every replica serves one listener from one config: a peer on the other scheme is a typo, not a topology.
  const other = c.peers?.findIndex((p) => schemeOf(p.origin) !== scheme) ?? -1
  if (other !== -1) throw new ConfigError(`cluster.peers[${other}]`, `must use ${scheme}:// like cluster.self (${self})`)
  const secret = Buffer.from(readSecretFile(ctx.readSecret, c.secretFile, 'cluster.secretFile').replace(/\r?\n$/, ''), 'utf8')
  // The length is said, never the secret.
  if (secret.byteLength < MIN_SECRET_BYTES) {
    throw new ConfigError('cluster.secretFile', `must hold at least ${MIN_SECRET_BYTES} bytes (has ${secret.byteLength}); make one with "openssl rand -hex 32"`)
  }
  let tls: ClusterConfig['tls']
  if (c.tls !== undefined) {
    let ca: string | undefined
    if (c.tls.ca !== undefined) {
      ca = readSecretFile(ctx.readSecret, c.tls.ca, 'cluster.tls.ca')
      if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError('cluster.tls.ca', 'is not a PEM certificate bundle')
    }
    tls = { ...(ca !== undefined ? { ca } : {}), ...(c.tls.serverName !== undefined ? { serverName: c.tls.serverName } : {}) }
  }
  return {
    self,
    ...(c.peers !== undefined ? { peers: [...new Set(c.peers.map((p) => p.origin))] } : {}),
    ...(c.discovery !== undefined ? { discovery: { ...c.discovery, scheme } } : {}),
    secret,
    healthIntervalMs: c.healthInterval,
    connectTimeoutMs: c.connectTimeout,
    discoveryIntervalMs: c.discoveryInterval,
    ...(tls !== undefined ? { tls } : {}),
  }
}
