import { RegistryError } from './errors.js'

// From the distribution spec: path components separated by '/', each made of
// lowercase alphanumerics with '.', '_', '__' or runs of '-' between them.
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
// The spec caps a repository name (with registry host) at 255 characters.
const MAX_NAME = 255

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME && NAME.test(name)
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag)
}

export function requireName(name: string): string {
  if (!isValidName(name)) throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name } })
  return name
}

export function requireTag(tag: string): string {
  if (!isValidTag(tag)) throw new RegistryError('TAG_INVALID', 'invalid tag', { detail: { tag }, status: 400 })
  return tag
}

// Docker's reference grammar for a registry: DNS labels or a bracketed IPv6 address, and an optional port.
const LABEL = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
const REGISTRY_HOST = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]{1,5})?$`)

/** True for `host[:port]` as image references spell a registry: `docker.io`, `reg:5000`, `[::1]:5000`. */
export function isValidRegistryHost(host: string): boolean {
  return host.length <= MAX_NAME && REGISTRY_HOST.test(host)
}

/**
 * True when a path component names a registry host, by Docker's own rule: it
 * contains '.' or ':', or is 'localhost'.
 */
export function looksLikeRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost'
}
