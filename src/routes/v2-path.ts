import { isDigestReference, requireDigest } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { requireTag } from '../oci/names.js'

/** A request path under /v2/, taken apart. */
export type V2Path =
  | { readonly kind: 'base' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: string }
  | { readonly kind: 'tags'; readonly name: string }
  | { readonly kind: 'referrers'; readonly name: string; readonly digest: string }
  | { readonly kind: 'upload'; readonly name: string }

const ITEM = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/
const TAGS = /^\/v2\/(.+)\/tags\/list$/
const UPLOADS = /^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/

/**
 * Parses the path part of a /v2 URL. Unknown shapes are 404 NAME_UNKNOWN; a
 * reference must be a tag or a digest we can verify, a blob or referrers
 * subject a digest (400 TAG_INVALID or DIGEST_INVALID). The name is checked
 * by the router, once it knows which part of it names a registry.
 */
export function parseV2Path(path: string): V2Path {
  if (path === '/v2/' || path === '/v2') return { kind: 'base' }
  const upload = UPLOADS.exec(path)
  if (upload !== null) return { kind: 'upload', name: upload[1] as string }
  const tags = TAGS.exec(path)
  if (tags !== null) return { kind: 'tags', name: tags[1] as string }
  const m = ITEM.exec(path)
  if (m === null) throw new RegistryError('NAME_UNKNOWN', 'no such endpoint', { status: 404, detail: { path } })
  const name = m[1] as string
  let last: string
  try {
    last = decodeURIComponent(m[3] as string)
  } catch {
    throw new RegistryError('NAME_INVALID', 'malformed path', { detail: { path } })
  }
  switch (m[2]) {
    case 'manifests':
      return { kind: 'manifest', name, reference: isDigestReference(last) ? requireDigest(last).value : requireTag(last) }
    case 'blobs':
      return { kind: 'blob', name, digest: requireDigest(last).value }
    default:
      return { kind: 'referrers', name, digest: requireDigest(last).value }
  }
}
