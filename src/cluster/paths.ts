// The internal endpoint replicas ask each other on, beside /v2/ on the same listener.
export const PEER_PATH_PREFIX = '/_stevedore/peer'
export const PEER_HEALTH_PATH = `${PEER_PATH_PREFIX}/health`
export const PEER_BLOBS_PATH = `${PEER_PATH_PREFIX}/blobs/`

/** Set on the owner's 403 for a signature it refuses, so the asker tells a wrong secret from an upstream's DENIED. */
export const PEER_REFUSED_HEADER = 'x-stevedore-peer-refused'

export interface PeerBlobTarget {
  readonly upstream: string
  readonly repository: string
  readonly digest: string
}

/** The signed path of a blob on its owner: everything the owner needs is in it, so the HMAC covers all of it. */
export function peerBlobPath(target: PeerBlobTarget): string {
  const query = new URLSearchParams({ upstream: target.upstream, repository: target.repository })
  return `${PEER_BLOBS_PATH}${target.digest}?${query.toString()}`
}
