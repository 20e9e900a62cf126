import type { FastifyInstance } from 'fastify'
import { RegistryError } from '../oci/errors.js'
import type { ClientAuth } from './client-auth.js'

// Probes and scrapes stay open: kubelet and Prometheus carry no credentials,
// and the NetworkPolicy decides who reaches them.
const OPEN_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

const CHALLENGE = { 'www-authenticate': 'Basic realm="stevedore"' }

/**
 * Every request but the open probes must carry credentials the htpasswd
 * file accepts. Paths under `selfAuthenticated` (the peer endpoint) check
 * their own signatures: replicas hold no client password.
 */
export function requireClientAuth(app: FastifyInstance, auth: ClientAuth, selfAuthenticated?: string): void {
  app.addHook('onRequest', async (request) => {
    const path = (request.raw.url ?? '/').split('?', 1)[0] ?? '/'
    if (OPEN_PATHS.has(path)) return
    if (selfAuthenticated !== undefined && path.startsWith(`${selfAuthenticated}/`)) return
    const outcome = await auth.check(request.headers.authorization, request.ip)
    if (outcome.kind === 'ok') return
    if (outcome.kind === 'limited') {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed authentication attempts from this address', { headers: { 'retry-after': String(outcome.retryAfterS) } })
    }
    throw new RegistryError('UNAUTHORIZED', 'authentication required', { headers: CHALLENGE })
  })
}
