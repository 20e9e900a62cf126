import { parseDigest } from './digest.js'
import { isValidName, isValidRegistryHost, isValidTag, looksLikeRegistryHost } from './names.js'

/** An image reference, normalised as Docker does: `nginx` is `docker.io/library/nginx:latest`. */
export interface ImageReference {
  /** The registry host as clients name it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
  readonly registry: string
  /** The repository on that registry: `library/nginx`. */
  readonly repository: string
  readonly tag?: string
  readonly digest?: string
  /** The canonical text: `docker.io/library/nginx:1.27`, `ghcr.io/org/app@sha256:…` (a digest wins over a tag for pulling, the tag is kept for reading). */
  readonly text: string
  /** What to ask the registry for: the digest when there is one, else the tag. */
  readonly pullReference: string
}

// The names Docker treats as Docker Hub.
const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'])

/** Parses and normalises an image reference; undefined when it is not one. */
export function parseImageReference(input: string): ImageReference | undefined {
  const text = input.trim()
  if (text === '' || text.length > 4096) return undefined
  let rest = text
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    if (parseDigest(digest) === undefined) return undefined
    rest = rest.slice(0, at)
  }
  let tag: string | undefined
  // A colon after the last slash is a tag; one before it is a port.
  const colon = rest.lastIndexOf(':')
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1)
    if (!isValidTag(tag)) return undefined
    rest = rest.slice(0, colon)
  }
  const slash = rest.indexOf('/')
  let registry = 'docker.io'
  let path = rest
  if (slash >= 0 && looksLikeRegistryHost(rest.slice(0, slash))) {
    registry = rest.slice(0, slash)
    path = rest.slice(slash + 1)
    if (!isValidRegistryHost(registry)) return undefined
    registry = registry.toLowerCase()
  }
  if (DOCKER_HUB.has(registry)) {
    registry = 'docker.io'
    if (!path.includes('/')) path = `library/${path}`
  }
  if (!isValidName(path)) return undefined
  if (tag === undefined && digest === undefined) tag = 'latest'
  const name = `${registry}/${path}`
  return {
    registry,
    repository: path,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
    text: `${name}${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`,
    pullReference: digest ?? (tag as string),
  }
}
