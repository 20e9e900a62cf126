// FAKES for unit tests: a BlobStore held in memory (with failures on cue) and
// an upstream blob whose bytes a test pushes by hand. The real store and the
// real upstream are exercised by the conformance suite and the e2e tests.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import type { DigestAlgorithm } from '../../../src/oci/digest.js'
import { BlobNotFoundError, DigestMismatchError, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange } from '../../../src/storage/blob-store.js'
import type { UpstreamBlob } from '../../../src/upstream/blob-download.js'

export class MemoryStore implements BlobStore {
  readonly kind = 'memory'
  readonly blobs = new Map<string, Buffer>()
  readonly documents = new Map<string, Buffer>()
  writersCreated = 0
  writersOpen = 0
  /** Writes fail once this many bytes were accepted (disk full). */
  failWritesAfter: number | undefined
  failCommit = false

  async init(): Promise<void> {}
  async stat(digest: string): Promise<BlobInfo | undefined> {
    const b = this.blobs.get(digest)
    return b === undefined ? undefined : { digest, size: b.byteLength }
  }
  async read(digest: string, range?: ByteRange): Promise<Readable> {
    const b = this.blobs.get(digest)
    if (b === undefined) throw new BlobNotFoundError(digest)
    return Readable.from([range === undefined ? b : b.subarray(range.start, range.end + 1)])
  }
  async createWriter(algorithm: DigestAlgorithm = 'sha256'): Promise<BlobWriter> {
    this.writersCreated++
    this.writersOpen++
    const store = this
    const chunks: Buffer[] = []
    const hash = createHash(algorithm)
    let done = false
    const close = (): void => {
      if (!done) store.writersOpen--
      done = true
    }
    const writer: BlobWriter = {
      written: 0,
      async write(chunk) {
        await writer.writev([chunk])
      },
      async writev(list) {
        if (done) throw new Error('write after end')
        for (const c of list) {
          if (store.failWritesAfter !== undefined && writer.written + c.byteLength > store.failWritesAfter) throw Object.assign(new Error('no space'), { code: 'ENOSPC' })
          chunks.push(Buffer.from(c))
          hash.update(c)
          ;(writer as { written: number }).written += c.byteLength
        }
      },
      async commit(digest, size, onVerified) {
        close()
        const actual = `${algorithm}:${hash.digest('hex')}`
        if (actual !== digest || writer.written !== size) throw new DigestMismatchError(digest, actual, size, writer.written)
        onVerified?.()
        if (store.failCommit) throw Object.assign(new Error('publish failed'), { code: 'EIO' })
        store.blobs.set(digest, Buffer.concat(chunks))
      },
      async cancel() {
        close()
      },
    }
    return writer
  }
  async delete(digest: string): Promise<boolean> {
    return this.blobs.delete(digest)
  }
  async *list(): AsyncIterable<BlobInfo> {
    for (const [digest, b] of this.blobs) yield { digest, size: b.byteLength }
  }
  async getDocument(key: string): Promise<Buffer | undefined> {
    return this.documents.get(key)
  }
  async putDocument(key: string, bytes: Uint8Array): Promise<void> {
    this.documents.set(key, Buffer.from(bytes))
  }
  async deleteDocument(key: string): Promise<void> {
    this.documents.delete(key)
  }
  async *listDocuments(prefix: string): AsyncIterable<string> {
    for (const k of this.documents.keys()) if (k.startsWith(prefix)) yield k
  }
  async writable(): Promise<boolean> {
    return true
  }
}

/** An upstream body a test feeds batch by batch; `end()` or `fail()` finishes it. */
export class PushedBlob implements UpstreamBlob {
  destroyed = false
  private readonly queue: Array<readonly Buffer[]> = []
  private finished: 'end' | Error | undefined
  private wake: (() => void) | undefined

  constructor(readonly size: number | undefined) {}

  push(...chunks: Buffer[]): void {
    this.queue.push(chunks)
    this.signal()
  }
  end(): void {
    this.finished ??= 'end'
    this.signal()
  }
  fail(err: Error): void {
    this.finished ??= err
    this.signal()
  }
  destroy(): void {
    this.destroyed = true
    this.fail(new Error('destroyed'))
  }
  get batches(): AsyncIterable<readonly Buffer[]> {
    const self = this
    return {
      async *[Symbol.asyncIterator]() {
        for (;;) {
          const next = self.queue.shift()
          if (next !== undefined) {
            yield next
            continue
          }
          if (self.finished === 'end') return
          if (self.finished !== undefined) throw self.finished
          await new Promise<void>((resolve) => {
            self.wake = resolve
          })
        }
      },
    }
  }
  private signal(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }
}
