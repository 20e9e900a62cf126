/**
 * containerd `certs.d/<registry host>/hosts.toml` files: what Stevedore writes,
 * and how it recognises its own.
 */

/** The first line of every file Stevedore writes. */
export const MARK_LINE = '# Managed by stevedore hosts: do not edit; delete this line to keep your own changes.'
const MARK_PREFIX = '# Managed by stevedore hosts'

export const HOSTS_FILE = 'hosts.toml'

/** True when the file's first line is Stevedore's mark. */
export function isMarked(text: string): boolean {
  const firstLine = text.replace(/^\uFEFF/, '').split(/\r?\n/, 1)[0] ?? ''
  return firstLine.startsWith(MARK_PREFIX)
}

/**
 * The folder containerd looks up for a registry host. containerd (1.5 and
 * later, 2.x too) tries `<host>_<port>_` first, then `<host>:<port>`, then
 * `_default`. Stevedore writes the plain `host:port` form (the one containerd's
 * documentation shows, checked here with containerd 1.6); `alternateHostDirName`
 * gives the form containerd tries first, so that a foreign file there (which
 * would win over ours) is detected.
 */
export function hostDirName(registry: string): string {
  return registry
}

/** `myreg.example:5000` → `myreg.example_5000_`; undefined for a host without a port. */
export function alternateHostDirName(registry: string): string | undefined {
  const i = registry.lastIndexOf(':')
  if (i <= 0) return undefined
  return `${registry.slice(0, i)}_${registry.slice(i + 1)}_`
}

/** A TOML basic string. URLs and registry hosts need no more than JSON's escapes, which TOML shares. */
function tomlString(s: string): string {
  return JSON.stringify(s)
}

export class MirrorUrlError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'MirrorUrlError'
  }
}

/** Validates `--mirror`: an http:// or https:// origin, no path, query or credentials. */
export function parseMirrorUrl(text: string): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new MirrorUrlError(`--mirror: not a URL (got ${JSON.stringify(text)}); use e.g. http://10.96.0.50:5000`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new MirrorUrlError(`--mirror: must start with http:// or https:// (got ${JSON.stringify(text)})`)
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new MirrorUrlError(`--mirror: must be a bare origin such as http://10.96.0.50:5000, without path, query or credentials (got ${JSON.stringify(text)})`)
  }
  return url
}

export interface HostsFileSpec {
  /** The registry host the folder is named after (`docker.io`, `127.0.0.1:5001`). */
  readonly registry: string
  /** The upstream's real URL: containerd's fallback when the mirror fails. */
  readonly server: URL
  readonly mirror: URL
  /** containerd 2.1+ honours it; 1.x ignores it. */
  readonly dialTimeout: string
  /** The Authorization header containerd sends the mirror (client authentication). */
  readonly authorization?: string
  /** The CA file containerd trusts the mirror's certificate through, as a path on the node. */
  readonly ca?: string
}

/** The bytes of one hosts.toml. Deterministic: the same input gives the same file. */
export function renderHostsToml(spec: HostsFileSpec): string {
  const host = `host.${tomlString(spec.mirror.origin)}`
  return [
    MARK_LINE,
    `# ${spec.registry}: pull through the Stevedore mirror; when it fails, containerd goes to the registry itself.`,
    `server = ${tomlString(spec.server.origin)}`,
    '',
    `[${host}]`,
    '  capabilities = ["pull", "resolve"]',
    `  dial_timeout = ${tomlString(spec.dialTimeout)}`,
    ...(spec.ca !== undefined ? [`  ca = ${tomlString(spec.ca)}`] : []),
    // containerd sends these headers to this host only, never to the fallback server.
    ...(spec.authorization !== undefined ? ['', `  [${host}.header]`, `    authorization = ${tomlString(spec.authorization)}`] : []),
    '',
  ].join('\n')
}

/** The CA file Stevedore writes beside a hosts.toml. PEM readers skip the mark line before the first certificate. */
export const CA_FILE = 'stevedore-ca.crt'

export function renderCaFile(pem: string): string {
  return `${MARK_LINE}\n${pem.endsWith('\n') ? pem : `${pem}\n`}`
}
