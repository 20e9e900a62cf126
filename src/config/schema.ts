import { parseDuration, parseSize } from './units.js'

export interface UpstreamConfig {
  /** The key clients route by: a registry host such as `docker.io` or `registry.example.com:5443`. */
  readonly name: string
  readonly url: URL
  readonly username?: string
  readonly password?: string
  /** A PEM bundle to trust for this upstream, on top of the system's. */
  readonly ca?: string
  readonly insecureSkipVerify: boolean
  /** Allowed repository patterns (`*` within one path component, `**` across); undefined = all. */
  readonly repositories?: readonly string[]
  /** Docker Hub: one-component names mean `library/<name>`. */
  readonly dockerHub: boolean
}

export interface FilesystemStorageConfig { readonly kind: 'filesystem'; readonly root: string }
export interface S3StorageConfig {
  readonly kind: 's3'
  readonly bucket: string
  readonly prefix: string
  readonly region: string
  readonly endpoint?: string
  readonly publicEndpoint?: string
  readonly forcePathStyle: boolean
  readonly redirect: boolean
  readonly accessKeyId?: string
  readonly secretAccessKey?: string
  /** Local folder where fills in progress are spooled so joiners can read them. */
  readonly spoolDir: string
}

export interface StorageConfig {
  readonly backend: FilesystemStorageConfig | S3StorageConfig
  /** Quota in bytes (blobs and manifests); undefined = unbounded. */
  readonly maxSize?: number
  readonly evict: boolean
}

export interface CacheConfig {
  /** How long a tag→digest answer is used without asking the upstream. */
  readonly tagTtlMs: number
  /** Past this age a tag is revalidated before answering, unless the upstream is down or rate-limiting. */
  readonly maxStaleMs: number
  /** How long an upstream 404 for a tag is remembered. */
  readonly notFoundTtlMs: number
  /** Bytes of manifests kept in memory. */
  readonly memoryBytes: number
  /** How long manifest GETs to a rate-limited upstream pause when it sends no Retry-After. */
  readonly rateLimitBackoffMs: number
}

export interface TimeoutConfig {
  readonly connectMs: number
  /** Longest silence on an upstream socket (headers or body). */
  readonly readMs: number
  /** Longest a whole blob fill may take. */
  readonly fillMs: number
  /** How long SIGTERM waits for running transfers. */
  readonly shutdownMs: number
}

export interface Config {
  readonly listen: { readonly host: string; readonly port: number }
  readonly storage: StorageConfig
  readonly upstreams: ReadonlyMap<string, UpstreamConfig>
  readonly defaultUpstream?: string
  readonly cache: CacheConfig
  readonly timeouts: TimeoutConfig
  readonly logLevel: string
}

/** An invalid configuration: one line naming the key and what is wrong. */
export class ConfigError extends Error {
  constructor(readonly key: string, problem: string) {
    super(`config: ${key}: ${problem}`)
    this.name = 'ConfigError'
  }
}

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

type Doc = Record<string, unknown>

const isObject = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v)

function objectAt(doc: Doc, key: string, path: string, required = false): Doc | undefined {
  const v = doc[key]
  if (v === undefined || v === null) {
    if (required) throw new ConfigError(path, 'is required')
    return undefined
  }
  if (!isObject(v)) throw new ConfigError(path, 'must be a mapping')
  return v
}

function stringAt(doc: Doc, key: string, path: string, required = false): string | undefined {
  const v = doc[key]
  if (v === undefined || v === null) {
    if (required) throw new ConfigError(path, 'is required')
    return undefined
  }
  if (typeof v !== 'string' || v === '') throw new ConfigError(path, 'must be a non-empty string')
  return v
}

function boolAt(doc: Doc, key: string, path: string, fallback: boolean): boolean {
  const v = doc[key]
  if (v === undefined || v === null) return fallback
  if (typeof v !== 'boolean') throw new ConfigError(path, 'must be true or false')
  return v
}

function durationAt(doc: Doc, key: string, path: string, fallback: number): number {
  const v = doc[key]
  if (v === undefined || v === null) return fallback
  const ms = parseDuration(v)
  if (ms === undefined) throw new ConfigError(path, `must be a duration such as "30s", "5m" or "24h" (got ${JSON.stringify(v)})`)
  return ms
}

function sizeAt(doc: Doc, key: string, path: string): number | undefined {
  const v = doc[key]
  if (v === undefined || v === null) return undefined
  const bytes = parseSize(v)
  if (bytes === undefined) throw new ConfigError(path, `must be a size such as "50GiB" or "512MB" (got ${JSON.stringify(v)})`)
  return bytes
}

function rejectUnknown(doc: Doc, allowed: readonly string[], path: string): void {
  for (const key of Object.keys(doc)) {
    if (!allowed.includes(key)) throw new ConfigError(path === '' ? key : `${path}.${key}`, 'is not a known key')
  }
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:5000`). */
export function parseListen(value: string, path = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]*)):(\d{1,5})$/.exec(value)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || port > 65535) throw new ConfigError(path, `must be HOST:PORT (got ${JSON.stringify(value)})`)
  const host = m[1] ?? m[2] ?? ''
  return { host: host === '' ? '0.0.0.0' : host, port }
}

const REGISTRY_HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d{1,5})?$/
const REPOSITORY_PATTERN = /^[a-z0-9*]+(?:[._/-]+[a-z0-9*]+|[*]+)*$/

export type SecretReader = (path: string) => string

function validateUpstream(name: string, doc: unknown, env: NodeJS.ProcessEnv, readSecret: SecretReader): UpstreamConfig {
  const path = `upstreams.${name}`
  if (!REGISTRY_HOST.test(name) || !(name.includes('.') || name.includes(':') || name === 'localhost')) {
    throw new ConfigError(path, 'must be keyed by a registry host such as docker.io or registry.example.com:5443')
  }
  if (!isObject(doc)) throw new ConfigError(path, 'must be a mapping with at least url')
  rejectUnknown(doc, ['url', 'username', 'password', 'passwordFile', 'passwordEnv', 'ca', 'insecureSkipVerify', 'repositories'], path)
  const urlText = stringAt(doc, 'url', `${path}.url`, true) as string
  let url: URL
  try {
    url = new URL(urlText)
  } catch {
    throw new ConfigError(`${path}.url`, `is not a URL (got ${JSON.stringify(urlText)})`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(`${path}.url`, 'must be http:// or https://')
  if (url.pathname !== '/' || url.search !== '' || url.username !== '' || url.password !== '') {
    throw new ConfigError(`${path}.url`, 'must be a bare origin such as https://registry.example.com (no path, query or credentials)')
  }
  const username = stringAt(doc, 'username', `${path}.username`)
  const sources = ['password', 'passwordFile', 'passwordEnv'].filter((k) => doc[k] !== undefined && doc[k] !== null)
  if (sources.length > 1) throw new ConfigError(path, `set only one of password, passwordFile, passwordEnv (got ${sources.join(', ')})`)
  let password = stringAt(doc, 'password', `${path}.password`)
  const passwordFile = stringAt(doc, 'passwordFile', `${path}.passwordFile`)
  if (passwordFile !== undefined) {
    try {
      password = readSecret(passwordFile).replace(/\r?\n$/, '')
    } catch (err) {
      throw new ConfigError(`${path}.passwordFile`, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
  }
  const passwordEnv = stringAt(doc, 'passwordEnv', `${path}.passwordEnv`)
  if (passwordEnv !== undefined) {
    password = env[passwordEnv]
    if (password === undefined || password === '') throw new ConfigError(`${path}.passwordEnv`, `environment variable ${passwordEnv} is not set`)
  }
  if ((username === undefined) !== (password === undefined)) {
    throw new ConfigError(path, 'username and a password (password, passwordFile or passwordEnv) go together')
  }
  const caFile = stringAt(doc, 'ca', `${path}.ca`)
  let ca: string | undefined
  if (caFile !== undefined) {
    try {
      ca = readSecret(caFile)
    } catch (err) {
      throw new ConfigError(`${path}.ca`, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`${path}.ca`, 'is not a PEM certificate bundle')
  }
  let repositories: string[] | undefined
  const repos = doc['repositories']
  if (repos !== undefined && repos !== null) {
    if (!Array.isArray(repos) || repos.length === 0) throw new ConfigError(`${path}.repositories`, 'must be a non-empty list of patterns')
    repositories = repos.map((p, i) => {
      if (typeof p !== 'string' || !REPOSITORY_PATTERN.test(p)) {
        throw new ConfigError(`${path}.repositories[${i}]`, `must be a repository pattern such as "library/*" or "myorg/**" (got ${JSON.stringify(p)})`)
      }
      return p
    })
  }
  return {
    name,
    url,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(ca !== undefined ? { ca } : {}),
    insecureSkipVerify: boolAt(doc, 'insecureSkipVerify', `${path}.insecureSkipVerify`, false),
    ...(repositories !== undefined ? { repositories } : {}),
    dockerHub: name === 'docker.io' || url.hostname === 'registry-1.docker.io',
  }
}

function validateStorage(doc: Doc | undefined, env: NodeJS.ProcessEnv): StorageConfig {
  const d = doc ?? { filesystem: { root: './data' } }
  rejectUnknown(d, ['filesystem', 's3', 'maxSize', 'evict'], 'storage')
  const fs = objectAt(d, 'filesystem', 'storage.filesystem')
  const s3 = objectAt(d, 's3', 'storage.s3')
  if (fs !== undefined && s3 !== undefined) throw new ConfigError('storage', 'set either filesystem or s3, not both')
  let backend: StorageConfig['backend']
  if (s3 !== undefined) {
    rejectUnknown(s3, ['bucket', 'prefix', 'region', 'endpoint', 'publicEndpoint', 'forcePathStyle', 'redirect', 'accessKeyId', 'secretAccessKey', 'spoolDir'], 'storage.s3')
    const prefix = stringAt(s3, 'prefix', 'storage.s3.prefix') ?? ''
    const accessKeyId = stringAt(s3, 'accessKeyId', 'storage.s3.accessKeyId')
    const secretAccessKey = stringAt(s3, 'secretAccessKey', 'storage.s3.secretAccessKey')
    if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) throw new ConfigError('storage.s3', 'accessKeyId and secretAccessKey go together')
    const endpoint = stringAt(s3, 'endpoint', 'storage.s3.endpoint')
    const publicEndpoint = stringAt(s3, 'publicEndpoint', 'storage.s3.publicEndpoint')
    for (const [k, v] of [['endpoint', endpoint], ['publicEndpoint', publicEndpoint]] as const) {
      if (v !== undefined && !URL.canParse(v)) throw new ConfigError(`storage.s3.${k}`, `is not a URL (got ${JSON.stringify(v)})`)
    }
    backend = {
      kind: 's3',
      bucket: stringAt(s3, 'bucket', 'storage.s3.bucket', true) as string,
      prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`,
      region: stringAt(s3, 'region', 'storage.s3.region') ?? env['AWS_REGION'] ?? env['AWS_DEFAULT_REGION'] ?? 'us-east-1',
      ...(endpoint !== undefined ? { endpoint } : {}),
      ...(publicEndpoint !== undefined ? { publicEndpoint } : {}),
      forcePathStyle: boolAt(s3, 'forcePathStyle', 'storage.s3.forcePathStyle', false),
      redirect: boolAt(s3, 'redirect', 'storage.s3.redirect', false),
      ...(accessKeyId !== undefined ? { accessKeyId } : {}),
      ...(secretAccessKey !== undefined ? { secretAccessKey } : {}),
      spoolDir: stringAt(s3, 'spoolDir', 'storage.s3.spoolDir') ?? '/tmp/stevedore-spool',
    }
  } else {
    const f = fs ?? { root: './data' }
    rejectUnknown(f, ['root'], 'storage.filesystem')
    backend = { kind: 'filesystem', root: stringAt(f, 'root', 'storage.filesystem.root', true) as string }
  }
  const maxSize = sizeAt(d, 'maxSize', 'storage.maxSize')
  if (maxSize !== undefined && maxSize < 1024 * 1024) throw new ConfigError('storage.maxSize', 'must be at least 1MiB')
  return { backend, ...(maxSize !== undefined ? { maxSize } : {}), evict: boolAt(d, 'evict', 'storage.evict', true) }
}

export interface ValidateOptions {
  readonly env?: NodeJS.ProcessEnv
  readonly readSecret?: SecretReader
}

/** Validates a parsed YAML document into a Config, applying defaults. Throws ConfigError. */
export function validateConfig(raw: unknown, options: ValidateOptions): Config {
  const env = options.env ?? {}
  const readSecret = options.readSecret ?? (() => {
    throw new Error('no file access')
  })
  if (!isObject(raw)) throw new ConfigError('(root)', 'the config file must be a YAML mapping')
  rejectUnknown(raw, ['listen', 'storage', 'upstreams', 'defaultUpstream', 'cache', 'timeouts', 'log'], '')

  const listen = parseListen(stringAt(raw, 'listen', 'listen') ?? '0.0.0.0:5000')

  const upstreamDoc = objectAt(raw, 'upstreams', 'upstreams', true) as Doc
  const upstreams = new Map<string, UpstreamConfig>()
  for (const [name, doc] of Object.entries(upstreamDoc)) upstreams.set(name, validateUpstream(name, doc, env, readSecret))
  if (upstreams.size === 0) throw new ConfigError('upstreams', 'must list at least one upstream')

  const defaultUpstream = stringAt(raw, 'defaultUpstream', 'defaultUpstream')
  if (defaultUpstream !== undefined && !upstreams.has(defaultUpstream)) {
    throw new ConfigError('defaultUpstream', `names ${JSON.stringify(defaultUpstream)}, which is not in upstreams`)
  }

  const cacheDoc = objectAt(raw, 'cache', 'cache') ?? {}
  rejectUnknown(cacheDoc, ['tagTtl', 'maxStaleAge', 'notFoundTtl', 'memory', 'rateLimitBackoff'], 'cache')
  const memoryBytes = sizeAt(cacheDoc, 'memory', 'cache.memory') ?? 64 * 1024 * 1024
  const cache: CacheConfig = {
    tagTtlMs: durationAt(cacheDoc, 'tagTtl', 'cache.tagTtl', 5 * 60_000),
    maxStaleMs: durationAt(cacheDoc, 'maxStaleAge', 'cache.maxStaleAge', 24 * 3_600_000),
    notFoundTtlMs: durationAt(cacheDoc, 'notFoundTtl', 'cache.notFoundTtl', 30_000),
    memoryBytes,
    rateLimitBackoffMs: durationAt(cacheDoc, 'rateLimitBackoff', 'cache.rateLimitBackoff', 60_000),
  }
  if (cache.maxStaleMs < cache.tagTtlMs) throw new ConfigError('cache.maxStaleAge', 'must not be shorter than cache.tagTtl')

  const t = objectAt(raw, 'timeouts', 'timeouts') ?? {}
  rejectUnknown(t, ['connect', 'read', 'fill', 'shutdown'], 'timeouts')
  const timeouts: TimeoutConfig = {
    connectMs: durationAt(t, 'connect', 'timeouts.connect', 5_000),
    readMs: durationAt(t, 'read', 'timeouts.read', 30_000),
    fillMs: durationAt(t, 'fill', 'timeouts.fill', 30 * 60_000),
    shutdownMs: durationAt(t, 'shutdown', 'timeouts.shutdown', 25_000),
  }
  for (const [k, v] of Object.entries(timeouts)) {
    if (v <= 0) throw new ConfigError(`timeouts.${k.replace(/Ms$/, '')}`, 'must be greater than zero')
  }

  const logDoc = objectAt(raw, 'log', 'log') ?? {}
  rejectUnknown(logDoc, ['level'], 'log')
  const logLevel = stringAt(logDoc, 'level', 'log.level') ?? 'info'
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError('log.level', `must be one of fatal, error, warn, info, debug, trace, silent (got ${JSON.stringify(logLevel)})`)
  }

  return {
    listen,
    storage: validateStorage(objectAt(raw, 'storage', 'storage'), env),
    upstreams,
    ...(defaultUpstream !== undefined ? { defaultUpstream } : {}),
    cache,
    timeouts,
    logLevel,
  }
}
