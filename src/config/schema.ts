// The configuration is one TypeBox schema: its types, defaults, bounds and
// error messages all come from here and from fields.ts, storage.ts and
// upstreams.ts. validateConfig checks a parsed YAML document against it,
// decodes it (units to numbers, renamed keys), then reads the secrets it names.
import { Type, type StaticDecode, type TSchema } from '@sinclair/typebox'
import { TransformDecodeError, Value } from '@sinclair/typebox/value'
import { ConfigError, Invalid, configErrorOf, dottedKey, joinKey, type Messages } from './errors.js'
import { DAY_MS, Duration, GIB, Int, Listen, MIB, OneOf, Size, Text } from './fields.js'
import { resolveStorage, Storage, type StorageConfig } from './storage.js'
import { resolveUpstream, Upstreams, type SecretReader, type UpstreamConfig } from './upstreams.js'
import { Insights } from './insights.js'
import { Cluster, resolveCluster, type ClusterConfig } from './cluster.js'
import { Prefetch, Prepull, Prewarm } from './warming.js'

export { ConfigError } from './errors.js'
export { parseListen } from './fields.js'
export type { FilesystemStorageConfig, S3StorageConfig, StorageConfig } from './storage.js'
export type { SecretReader, UpstreamConfig } from './upstreams.js'
export type { PrefetchConfig, PrepullConfig, PrewarmConfig } from './warming.js'
export type { InsightsConfig } from './insights.js'
export type { ClusterConfig } from './cluster.js'

const Cache = Type.Transform(Type.Object({
  // Ages compared with clocks, not timers: up to a year.
  tagTtl: Duration({ default: '5m', minMs: 0, maxMs: 365 * DAY_MS }),
  maxStaleAge: Duration({ default: '24h', minMs: 0, maxMs: 365 * DAY_MS }),
  notFoundTtl: Duration({ default: '30s', minMs: 0 }),
  memory: Size({ default: '64MiB', maxBytes: 64 * GIB }),
  // Pauses are capped at 6h by the rate-limit tracker anyway.
  rateLimitBackoff: Duration({ default: '60s', minMs: 1000, maxMs: 6 * 3_600_000 }),
}, { additionalProperties: false, default: {} })).Decode((c) => {
  if (c.maxStaleAge < c.tagTtl) throw new Invalid('maxStaleAge', 'must not be shorter than cache.tagTtl')
  return {
    /** How long a tag→digest answer is used without asking the upstream. */
    tagTtlMs: c.tagTtl,
    /** Past this age a tag is revalidated before answering, unless the upstream is down or rate-limiting. */
    maxStaleMs: c.maxStaleAge,
    /** How long an upstream 404 for a tag is remembered. */
    notFoundTtlMs: c.notFoundTtl,
    /** Bytes of manifests kept in memory. */
    memoryBytes: c.memory,
    /** How long manifest GETs to a rate-limited upstream pause when it sends no Retry-After. */
    rateLimitBackoffMs: c.rateLimitBackoff,
  }
}).Encode((c) => ({ tagTtl: c.tagTtlMs, maxStaleAge: c.maxStaleMs, notFoundTtl: c.notFoundTtlMs, memory: c.memoryBytes, rateLimitBackoff: c.rateLimitBackoffMs }))

const Timeouts = Type.Transform(Type.Object({
  connect: Duration({ default: '5s' }),
  read: Duration({ default: '30s' }),
  // No default: a fill that keeps making progress may take as long as it takes.
  fill: Type.Optional(Duration()),
  shutdown: Duration({ default: '25s' }),
}, { additionalProperties: false, default: {} })).Decode((t) => ({
  /** TCP and TLS connect to an upstream. */
  connectMs: t.connect,
  /** Longest silence on an upstream socket (headers or body): the progress deadline. */
  readMs: t.read,
  /** Longest a whole blob fill may take; none when undefined. */
  ...(t.fill !== undefined ? { fillMs: t.fill as number | undefined } : {}),
  /** How long SIGTERM waits for running transfers. */
  shutdownMs: t.shutdown,
})).Encode((t) => ({ connect: t.connectMs, read: t.readMs, ...(t.fillMs !== undefined ? { fill: t.fillMs } : {}), shutdown: t.shutdownMs }))

const MANY = 1_000_000

const Limits = Type.Transform(Type.Object({
  fills: Int(1, 10_000, { default: 32 }),
  fillsReservedForPulls: Int(0, 9_999, { default: 8 }),
  fillQueue: Int(0, MANY, { default: 256 }),
  responses: Int(1, MANY, { default: 1024 }),
  responseQueue: Int(0, MANY, { default: 1024 }),
  queueTimeout: Duration({ default: '10s' }),
  // Big send buffers are 1MiB each: fewer than one is none.
  sendBuffers: Size({ default: '128MiB', minBytes: MIB, maxBytes: 16 * GIB }),
  connections: Int(1, MANY, { default: 4096 }),
  idleTimeout: Duration({ default: '60s' }),
  writeTimeout: Duration({ default: '60s' }),
}, { additionalProperties: false, default: {} })).Decode(({ queueTimeout, idleTimeout, writeTimeout, ...counts }) => {
  // Reserving every slot would leave none for prefetches and background work.
  if (counts.fillsReservedForPulls >= counts.fills) throw new Invalid('fillsReservedForPulls', `must be less than limits.fills (${counts.fills})`)
  return {
    ...counts,
    /** How long work waits in a full queue before a 503. */
    queueTimeoutMs: queueTimeout,
    /** A client that sends nothing (no request, or an idle keep-alive) is closed after this. */
    idleTimeoutMs: idleTimeout,
    /** A client that accepts no bytes of a write for this long is dropped. */
    writeTimeoutMs: writeTimeout,
  }
}).Encode(({ queueTimeoutMs, idleTimeoutMs, writeTimeoutMs, ...counts }) => ({ ...counts, queueTimeout: queueTimeoutMs, idleTimeout: idleTimeoutMs, writeTimeout: writeTimeoutMs }))

const Log = Type.Object({
  level: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
}, { additionalProperties: false, default: {} })

// Client authentication: off unless configured.
const Auth = Type.Object({
  htpasswd: Text(),
}, { additionalProperties: false })

// HTTPS on the listener: off unless configured.
const Tls = Type.Object({
  cert: Text(),
  key: Text(),
}, { additionalProperties: false })

/** The whole configuration document. */
export const ConfigSchema = Type.Transform(Type.Object({
  listen: Listen({ default: '0.0.0.0:5000' }),
  storage: Storage,
  upstreams: Upstreams,
  /** Where names without a registry host go; none when unset. */
  defaultUpstream: Type.Optional(Text()),
  cache: Cache,
  timeouts: Timeouts,
  limits: Limits,
  auth: Type.Optional(Auth),
  tls: Type.Optional(Tls),
  prefetch: Prefetch,
  prewarm: Prewarm,
  prepull: Prepull,
  insights: Insights,
  /** Replicas sharing upstream fetches; none when unset. */
  cluster: Type.Optional(Cluster),
  log: Log,
}, { additionalProperties: false, problem: 'the config file must be a YAML mapping' })).Decode(({ log, ...c }) => {
  if (c.defaultUpstream !== undefined && !c.upstreams.has(c.defaultUpstream)) {
    throw new Invalid('defaultUpstream', `names ${JSON.stringify(c.defaultUpstream)}, which is not in upstreams`)
  }
  return { ...c, logLevel: log.level }
}).Encode(({ logLevel, ...c }) => ({ ...c, log: { level: logLevel } }))

type ConfigDocument = StaticDecode<typeof ConfigSchema>

export type CacheConfig = Readonly<StaticDecode<typeof Cache>>
export type TimeoutConfig = Readonly<StaticDecode<typeof Timeouts>>
export type LimitsConfig = Readonly<StaticDecode<typeof Limits>>
export type LogLevel = StaticDecode<typeof Log>['level']

export type Config = Readonly<Omit<ConfigDocument, 'storage' | 'upstreams' | 'cache' | 'timeouts' | 'limits' | 'cluster'> & {
  readonly storage: StorageConfig
  readonly upstreams: ReadonlyMap<string, UpstreamConfig>
  readonly cache: CacheConfig
  readonly timeouts: TimeoutConfig
  readonly limits: LimitsConfig
  /** The replicas this one shares upstream fetches with; undefined: no cluster. */
  readonly cluster: ClusterConfig | undefined
}>

/** The embedded default: what `stevedore serve` runs with no config file. */
export const DEFAULT_CONFIG_DOCUMENT = {
  listen: '0.0.0.0:5000',
  storage: { filesystem: { root: './data' } },
  upstreams: {
    'docker.io': { url: 'https://registry-1.docker.io' },
    'ghcr.io': { url: 'https://ghcr.io' },
    'quay.io': { url: 'https://quay.io' },
    'registry.k8s.io': { url: 'https://registry.k8s.io' },
    'gcr.io': { url: 'https://gcr.io' },
    'public.ecr.aws': { url: 'https://public.ecr.aws' },
    'mcr.microsoft.com': { url: 'https://mcr.microsoft.com' },
  },
  defaultUpstream: 'docker.io',
} as const

/** The limits with nothing configured. */
export const DEFAULT_LIMITS: LimitsConfig = Value.Decode(Limits, Value.Default(Limits, undefined))

export interface ValidateOptions {
  readonly env?: NodeJS.ProcessEnv
  readonly readSecret?: SecretReader
}

const isMapping = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * A copy of `value` with keys the schema knows dropped where YAML left them
 * empty (`fill:` is null), as if absent; record entries and unknown keys
 * stay, so `docker.io:` with nothing under it is still an error.
 */
function withoutNulls(schema: TSchema, value: unknown, path: string, root: unknown): unknown {
  const key = (): string => dottedKey(path, root)
  if (Array.isArray(value)) {
    // Value.Default would merge a list into a mapping's default ({} + [] = {}), hiding it.
    if (isMapping(schema['default'])) throw new ConfigError(key(), (schema as Messages).problem ?? 'must be a mapping')
    return value.map((v, i) => withoutNulls((schema['items'] as TSchema | undefined) ?? Type.Unknown(), v, `${path}/${i}`, root))
  }
  if (!isMapping(value)) return value
  const properties = schema['properties'] as Record<string, TSchema> | undefined
  const entries = Object.values((schema['patternProperties'] ?? {}) as Record<string, TSchema>)[0]
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) {
    // Assigning it would set the prototype instead of a key.
    if (k === '__proto__') throw new ConfigError(joinKey(key(), k), 'is not a known key')
    const known = properties !== undefined && Object.hasOwn(properties, k) ? properties[k] : undefined
    if (v === null && known !== undefined) continue
    const inner = known ?? entries
    out[k] = inner === undefined ? v : withoutNulls(inner, v, `${path}/${k}`, root)
  }
  return out
}

/** Validates a parsed YAML document into a Config, applying defaults. Throws ConfigError. */
export function validateConfig(raw: unknown, options: ValidateOptions = {}): Config {
  const env = options.env ?? {}
  const readSecret = options.readSecret ?? (() => {
    throw new Error('no file access')
  })
  const doc = Value.Default(ConfigSchema, withoutNulls(ConfigSchema, raw, '', raw))
  const first = Value.Errors(ConfigSchema, doc).First()
  if (first !== undefined) throw configErrorOf(first, doc)
  let decoded: ConfigDocument
  try {
    decoded = Value.Decode(ConfigSchema, doc)
  } catch (err) {
    if (err instanceof TransformDecodeError && err.error instanceof Invalid) {
      throw new ConfigError(joinKey(dottedKey(err.path, doc), err.error.key), err.error.problem)
    }
    throw err
  }
  const upstreams = new Map<string, UpstreamConfig>()
  for (const [name, u] of decoded.upstreams) upstreams.set(name, resolveUpstream(u, env, readSecret))
  const { cluster: clusterDocument, ...rest } = decoded
  const cluster = clusterDocument === undefined
    ? undefined
    : resolveCluster(clusterDocument, { env, readSecret, listenPort: decoded.listen.port, listenerTls: decoded.tls !== undefined })
  return { ...rest, storage: resolveStorage(decoded.storage, env), upstreams, cluster }
}
