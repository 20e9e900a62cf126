import { createHash, type Hash } from 'node:crypto'
import { RegistryError } from './errors.js'

/** Digest algorithms we can verify, with the hex length of each. */
const ALGORITHMS = { sha256: 64, sha512: 128 } as const
export type DigestAlgorithm = keyof typeof ALGORITHMS

export interface Digest {
  readonly algorithm: DigestAlgorithm
  readonly hex: string
  /** `algorithm:hex`, the canonical form. */
  readonly value: string
}

const DIGEST_SHAPE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/

/** Parses `algorithm:hex`; returns undefined for anything we cannot verify. */
export function parseDigest(text: string): Digest | undefined {
  const m = DIGEST_SHAPE.exec(text)
  if (m === null) return undefined
  const algorithm = m[1] as string
  const hex = m[2] as string
  if (!Object.hasOwn(ALGORITHMS, algorithm)) return undefined
  const alg = algorithm as DigestAlgorithm
  if (hex.length !== ALGORITHMS[alg] || !/^[a-f0-9]+$/.test(hex)) return undefined
  return { algorithm: alg, hex, value: text }
}

/** Like parseDigest, but a bad digest is the client's 400 DIGEST_INVALID. */
export function requireDigest(text: string): Digest {
  const d = parseDigest(text)
  if (d === undefined) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: text } })
  return d
}

export function isDigestReference(reference: string): boolean {
  return reference.includes(':')
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm)
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`
}
