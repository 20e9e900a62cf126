import { Type, type StaticDecode } from '@sinclair/typebox'
import { ConfigError, Invalid } from './errors.js'
import { Bool, List, Origin, Pattern, RedirectHost, Text } from './fields.js'

const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?'
// A host as clients name it; the lookahead asks for a dot, a port or
// `localhost`, so that a repository name (`library`) is not taken for one.
const UPSTREAM_KEY = new RegExp(`^(?=.*[.:]|localhost$)${LABEL}(?:\\.${LABEL})*(?::\\d{1,5})?$`)
const REPOSITORY_PATTERN = /^[a-z0-9*]+(?:[._/-]+[a-z0-9*]+|[*]+)*$/
const PASSWORD_SOURCES = ['password', 'passwordFile', 'passwordEnv'] as const

const Upstream = Type.Transform(Type.Object({
  url: Origin({ description: 'Where the registry is: a bare http(s) origin.' }),
  username: Type.Optional(Text()),
  password: Type.Optional(Text()),
  passwordFile: Type.Optional(Text()),
  passwordEnv: Type.Optional(Text()),
  ca: Type.Optional(Text({ description: 'A PEM file to trust for this upstream, on top of the system store.' })),
  insecureSkipVerify: Bool(false),
  repositories: Type.Optional(List(
    Pattern(REPOSITORY_PATTERN, 'must be a repository pattern such as "library/*" or "myorg/**"'),
    'must be a non-empty list of patterns',
  )),
  redirectHosts: Type.Optional(List(RedirectHost(), 'must be a non-empty list of hosts such as "cdn.example.com" or "*.example.com"')),
}, {
  additionalProperties: false,
  // TypeBox fills defaults inside a record's entries only when the entry schema has a default.
  default: {},
  problem: 'must be a mapping with at least url',
})).Decode((u) => {
  const sources = PASSWORD_SOURCES.filter((k) => u[k] !== undefined)
  if (sources.length > 1) throw new Invalid('', `set only one of password, passwordFile, passwordEnv (got ${sources.join(', ')})`)
  if ((u.username === undefined) !== (sources.length === 0)) {
    throw new Invalid('', 'username and a password (password, passwordFile or passwordEnv) go together')
  }
  return u
}).Encode((u) => u)

/** `upstreams`: registry host → upstream; at least one. */
export const Upstreams = Type.Transform(Type.Record(Type.String({ pattern: UPSTREAM_KEY.source }), Upstream, {
  additionalProperties: false,
  minProperties: 1,
  keyProblem: 'must be keyed by a registry host such as docker.io or registry.example.com:5443',
  problem: 'must be a mapping listing at least one upstream',
})).Decode((doc) => new Map(Object.entries(doc).map(([name, u]) => [name, {
  /** The key clients route by: a registry host such as `docker.io` or `registry.example.com:5443`. */
  name,
  ...u,
  /** Docker Hub: one-component names mean `library/<name>`. */
  dockerHub: name === 'docker.io' || u.url.hostname === 'registry-1.docker.io',
}]))).Encode((m) => Object.fromEntries([...m].map(([name, { name: _, dockerHub: __, ...u }]) => [name, u])))

/** An upstream as the schema decodes it: secrets and the CA still named, not read. */
type UpstreamDocument = StaticDecode<typeof Upstreams> extends Map<string, infer U> ? U : never

/** One upstream registry, its secrets and CA read. */
export type UpstreamConfig = Readonly<Omit<UpstreamDocument, 'passwordFile' | 'passwordEnv' | 'ca'> & {
  /** A PEM bundle to trust for this upstream, on top of the system's. */
  readonly ca?: string
}>

/** Reads a file named in the configuration (a password, a CA bundle). */
export type SecretReader = (path: string) => string

/** A file the configuration names, read through `readSecret`; one that cannot be read is a ConfigError at `key`. */
export function readSecretFile(readSecret: SecretReader, path: string, key: string): string {
  try {
    return readSecret(path)
  } catch (err) {
    throw new ConfigError(key, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
}

/** Fills in what the schema only names: passwordFile, passwordEnv and ca are read now. */
export function resolveUpstream(u: UpstreamDocument, env: NodeJS.ProcessEnv, readSecret: SecretReader): UpstreamConfig {
  const key = `upstreams.${u.name}`
  const { passwordFile, passwordEnv, ca: caFile, ...rest } = u
  let password = u.password
  if (passwordFile !== undefined) password = readSecretFile(readSecret, passwordFile, `${key}.passwordFile`).replace(/\r?\n$/, '')
  if (passwordEnv !== undefined) {
    password = env[passwordEnv]
    if (password === undefined || password === '') throw new ConfigError(`${key}.passwordEnv`, `environment variable ${passwordEnv} is not set`)
  }
  let ca: string | undefined
  if (caFile !== undefined) {
    ca = readSecretFile(readSecret, caFile, `${key}.ca`)
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`${key}.ca`, 'is not a PEM certificate bundle')
  }
  return { ...rest, ...(password !== undefined ? { password } : {}), ...(ca !== undefined ? { ca } : {}) }
}
