import type { Hash } from 'node:crypto'
import { newHash, type DigestAlgorithm } from '../oci/digest.js'
import { DigestMismatchError, type BlobStore, type BlobWriter } from '../storage/blob-store.js'

/**
 * A writer that keeps nothing: it hashes what passes and checks the digest
 * at commit, so a fill through it still cuts its clients on a mismatch. For
 * a replica that serves a blob its owner writes to the shared bucket.
 */
export class VerifyOnlyWriter implements BlobWriter {
  written = 0
  private readonly hash: Hash

  constructor(algorithm: DigestAlgorithm) {
    this.hash = newHash(algorithm)
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk)
    this.written += chunk.byteLength
  }

  async writev(chunks: readonly Uint8Array[]): Promise<void> {
    for (const chunk of chunks) await this.write(chunk)
  }

  async commit(digest: string, size: number, onVerified?: () => void): Promise<void> {
    const algorithm = digest.slice(0, digest.indexOf(':'))
    const actual = `${algorithm}:${this.hash.digest('hex')}`
    if (actual !== digest || this.written !== size) throw new DigestMismatchError(digest, actual, size, this.written)
    onVerified?.()
  }

  async cancel(): Promise<void> {
    // Nothing was kept.
  }
}

/** Writers for a fill that verify and keep nothing. */
export const verifyOnly: Pick<BlobStore, 'createWriter'> = {
  createWriter: async (algorithm: DigestAlgorithm = 'sha256') => new VerifyOnlyWriter(algorithm),
}
