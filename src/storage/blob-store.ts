import type { FileHandle } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import type { DigestAlgorithm } from '../oci/digest.js'

/** A stored blob: its digest and size in bytes. */
export interface BlobInfo {
  readonly digest: string
  readonly size: number
}

/** An inclusive byte range, already checked against the blob's size. */
export interface ByteRange {
  readonly start: number
  readonly end: number
}

/** Thrown by BlobWriter.commit when the bytes written do not match the digest or size. */
export class DigestMismatchError extends Error {
  constructor(readonly expected: string, readonly actual: string, readonly expectedSize: number, readonly actualSize: number) {
    super(`content mismatch: expected ${expected} (${expectedSize} bytes), got ${actual} (${actualSize} bytes)`)
    this.name = 'DigestMismatchError'
  }
}

/** Thrown by BlobStore.read for a blob that is not (or no longer) stored. */
export class BlobNotFoundError extends Error {
  constructor(readonly digest: string) {
    super(`blob ${digest} not found`)
    this.name = 'BlobNotFoundError'
  }
}

/**
 * One blob being written. Nothing is visible under any digest until commit
 * succeeds; cancel (or a failed commit) leaves nothing behind, temp data
 * included. Call exactly one of commit or cancel; cancel after commit is a no-op.
 */
export interface BlobWriter {
  /** Appends bytes; resolves once they are accepted, which is the backpressure. */
  write(chunk: Uint8Array): Promise<void>
  /** Appends several chunks in order, in one write where the backend can; as write otherwise. */
  writev(chunks: readonly Uint8Array[]): Promise<void>
  /** Bytes accepted so far. */
  readonly written: number
  /**
   * Verifies what was written hashes to digest and is size bytes long, then
   * publishes it durably. Throws DigestMismatchError otherwise. onVerified runs
   * once the bytes are known good, before the (slower) publish.
   */
  commit(digest: string, size: number, onVerified?: () => void): Promise<void>
  /** Discards everything written. */
  cancel(): Promise<void>
  /**
   * A local file that holds exactly the bytes written so far, readable while
   * writing (filesystem backend), so readers of a fill in progress share the
   * one disk write. Undefined when the bytes go elsewhere (S3).
   */
  readonly localPath?: string
}

/**
 * The storage contract every backend (filesystem, S3) implements. Blobs are
 * content-addressed by `algorithm:hex`; documents are small named byte
 * strings (manifest metadata, tags, access times) under `/`-separated keys.
 */
export interface BlobStore {
  /** Short name for logs and metrics: "filesystem" or "s3". */
  readonly kind: string
  /** Prepares the store: checks or writes the layout marker, removes what a crash left half-written. */
  init(): Promise<void>
  /** Size of a stored blob, or undefined when it is not stored. */
  stat(digest: string): Promise<BlobInfo | undefined>
  /** A stream of the blob's bytes, or of the range; throws BlobNotFoundError. A blob removed mid-stream errors the stream, never ends it early. */
  read(digest: string, range?: ByteRange): Promise<Readable>
  /**
   * Starts writing a new blob, hashed with the algorithm its digest will use.
   * expectedDigest is the digest commit will be called with: S3 requires it
   * (its upload goes straight to that digest's key, invisible until commit),
   * the filesystem ignores it; commit still verifies the bytes against it.
   */
  createWriter(algorithm?: DigestAlgorithm, expectedDigest?: string): Promise<BlobWriter>
  /** Removes a blob; false when it was not there. */
  delete(digest: string): Promise<boolean>
  /** Every stored blob, in no particular order. */
  list(): AsyncIterable<BlobInfo>
  /**
   * Local backends only: an open handle on the stored blob, so the HTTP layer
   * can send it without a stream per chunk. Undefined when not stored. The
   * caller closes it; the bytes stay readable even if the blob is deleted meanwhile.
   */
  open?(digest: string): Promise<{ handle: FileHandle; size: number } | undefined>
  /** A URL clients may fetch the blob from directly (a presigned GET), or undefined to stream it through us. */
  redirectUrl?(digest: string): Promise<string | undefined>
  /** A document's bytes, or undefined. */
  getDocument(key: string): Promise<Buffer | undefined>
  /** Writes a document atomically: readers see the old or the new bytes, never a mix. */
  putDocument(key: string, bytes: Uint8Array): Promise<void>
  /** Removes a document; a missing one is not an error. */
  deleteDocument(key: string): Promise<void>
  /** Keys of documents under a prefix. */
  listDocuments(prefix: string): AsyncIterable<string>
  /** True when the store accepts writes now (for /readyz). */
  writable(): Promise<boolean>
}

/** Layout version written by init; a later layout change migrates or refuses on it. */
export const LAYOUT_VERSION = 1
