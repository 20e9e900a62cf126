// Requests between replicas are signed with a shared secret: an HMAC over
// the method, the path with its query and the time. The peer endpoint serves
// blobs without client credentials, so without this anyone reaching a pod IP
// could read the cache past `auth`.
//
// The signature binds no body (peer requests are GET and HEAD) and allows
// replay within the window: a captured request fetches the same blob again,
// which its captor could already read. What it prevents is forging a request
// for anything else.
import { createHmac, timingSafeEqual } from 'node:crypto'

/** Unix seconds, decimal, when the request was signed. */
export const PEER_TIME_HEADER = 'x-stevedore-peer-time'
/** Hex HMAC-SHA256 over `${METHOD}\n${pathWithQuery}\n${time}`. */
export const PEER_SIGNATURE_HEADER = 'x-stevedore-peer-signature'

/** How far a signature's time may be from the verifier's clock, either way. */
export const PEER_SIGNATURE_WINDOW_MS = 60_000

const TIME = /^\d{1,15}$/
const SIGNATURE = /^[0-9a-fA-F]{64}$/

function signatureOf(secret: Buffer, method: string, path: string, time: string): Buffer {
  return createHmac('sha256', secret).update(`${method.toUpperCase()}\n${path}\n${time}`).digest()
}

/** The headers that sign a request for `path` (with its query, exactly as sent) at `nowMs`. */
export function signPeerRequest(secret: Buffer, method: string, path: string, nowMs: number = Date.now()): Record<string, string> {
  const time = String(Math.floor(nowMs / 1000))
  return { [PEER_TIME_HEADER]: time, [PEER_SIGNATURE_HEADER]: signatureOf(secret, method, path, time).toString('hex') }
}

export type PeerAuthResult = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'expired' | 'bad_signature' }

/**
 * Whether a request carries a valid signature. `path` is the request target
 * as received (the raw URL, query included); `headers` as node gives them,
 * with lower-case names. A header sent twice is malformed, never either value.
 */
export function verifyPeerRequest(
  secret: Buffer,
  method: string,
  path: string,
  headers: Record<string, string | string[] | undefined>,
  nowMs: number = Date.now(),
  windowMs: number = PEER_SIGNATURE_WINDOW_MS,
): PeerAuthResult {
  const time = headers[PEER_TIME_HEADER]
  const signature = headers[PEER_SIGNATURE_HEADER]
  if (time === undefined || signature === undefined) return { ok: false, reason: 'missing' }
  if (typeof time !== 'string' || typeof signature !== 'string' || !TIME.test(time) || !SIGNATURE.test(signature)) {
    return { ok: false, reason: 'malformed' }
  }
  if (Math.abs(nowMs - Number(time) * 1000) > windowMs) return { ok: false, reason: 'expired' }
  // Both 32 bytes: the patterns above fixed the length, as timingSafeEqual requires.
  const expected = signatureOf(secret, method, path, time)
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) return { ok: false, reason: 'bad_signature' }
  return { ok: true }
}
