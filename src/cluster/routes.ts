import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../mirror.js'
import { requireDigest } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { requireName } from '../oci/names.js'
import { sendBlobAnswer } from '../routes/registry.js'
import { verifyPeerRequest } from './peer-auth.js'
import { PEER_BLOBS_PATH, PEER_HEALTH_PATH, PEER_REFUSED_HEADER } from './paths.js'

export interface PeerRouteEvents {
  /** A peer's request was refused: no signature, a wrong one, or one too old. */
  onRefused?(reason: string): void
  /** Bytes sent to a peer begin: a blob this replica owns. */
  onServed?(cache: string): void
}

/**
 * The endpoint other replicas forward misses to: a blob this replica owns,
 * filled here from the upstream once (or joined, or read from the store),
 * streamed as it arrives. Signed requests only; everything the answer
 * depends on is in the signed path.
 */
export function registerPeerRoutes(app: FastifyInstance, mirror: Mirror, secret: Buffer, events: PeerRouteEvents = {}): void {
  const authenticate = (request: FastifyRequest, reply: FastifyReply): void => {
    request.stevedore.kind = 'peer'
    const verdict = verifyPeerRequest(secret, request.method, request.raw.url ?? '', request.headers)
    if (verdict.ok) return
    events.onRefused?.(verdict.reason)
    reply.header(PEER_REFUSED_HEADER, verdict.reason)
    throw new RegistryError('DENIED', 'peer request refused: not signed with this cluster\'s secret', { detail: { reason: verdict.reason } })
  }

  app.get(PEER_HEALTH_PATH, async (request, reply) => {
    authenticate(request, reply)
    // A replica that cannot store is no owner: its peers fetch for themselves meanwhile.
    if (!mirror.storeReady) throw new RegistryError('UNAVAILABLE', 'cache storage is not reachable yet')
    return reply.type('application/json').send('{"status":"ok"}')
  })

  app.get(`${PEER_BLOBS_PATH}:digest`, async (request, reply) => {
    authenticate(request, reply)
    const ctx = request.stevedore
    const digest = requireDigest((request.params as { digest: string }).digest).value
    const query = new URLSearchParams((request.raw.url ?? '').split('?')[1] ?? '')
    const upstream = query.get('upstream') ?? ''
    const client = mirror.clients.get(upstream)
    if (client === undefined) throw new RegistryError('NAME_UNKNOWN', 'no such upstream here: are the replicas configured alike?', { detail: { upstream } })
    const repository = requireName(query.get('repository') ?? '')
    ctx.upstream = upstream
    ctx.repository = repository
    ctx.digest = digest
    if (!mirror.storeReady) throw new RegistryError('UNAVAILABLE', 'cache storage is not reachable yet')
    // Bounded like every blob response: a peer holds a socket and buffers as a client does.
    const gone = new AbortController()
    reply.raw.once('close', () => gone.abort(new Error('peer went away')))
    const release = await mirror.responseSlots.acquire('live', gone.signal)
    reply.raw.once('close', release)
    const answer = await mirror.blobs.get({ client, repository, digest }, { direct: true })
    ctx.cache = answer.cache
    events.onServed?.(answer.cache)
    reply.header('docker-content-digest', digest)
    return sendBlobAnswer(mirror, request, reply, answer)
  })
}
