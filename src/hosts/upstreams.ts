import { readConfigDocument } from '../config/load.js'
import { ConfigError, validateConfig } from '../config/schema.js'

export interface UpstreamTarget {
  /** Registry host, as clients name it: `docker.io`, `127.0.0.1:5001`. */
  readonly name: string
  /** Where the registry really is: `https://registry-1.docker.io`. */
  readonly url: URL
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * The configured upstreams, read from the same file (`--config`, else
 * STEVEDORE_CONFIG, else the embedded default) and checked by the same rules
 * as `stevedore serve`. Only `upstreams.*.url` is read: the node agent that runs
 * `stevedore hosts` has no business with the mirror's secrets (passwordEnv,
 * passwordFile), storage settings or cluster section (no POD_IP, no peer
 * secret on a node), so their absence is no error here.
 */
export async function loadUpstreamTargets(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<UpstreamTarget[]> {
  return upstreamTargetsOf(readConfigDocument(file, env), env)
}

/** The upstreams of a parsed config document, by the rules of loadUpstreamTargets. */
export function upstreamTargetsOf(raw: unknown, env: NodeJS.ProcessEnv = process.env): UpstreamTarget[] {
  if (!isObject(raw)) throw new ConfigError('(root)', 'the config file must be a YAML mapping')
  const upstreams = raw['upstreams']
  // Keep only what routing needs, so that validation cannot trip over secrets or a cluster section this process does not have.
  const reduced = isObject(upstreams)
    ? Object.fromEntries(Object.entries(upstreams).map(([name, doc]) => [name, isObject(doc) ? { url: doc['url'] } : doc]))
    : upstreams
  const config = validateConfig({ upstreams: reduced }, { env })
  return [...config.upstreams.values()].map((u) => ({ name: u.name, url: u.url }))
}
