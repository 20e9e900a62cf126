import type { FileHandle } from 'node:fs/promises'

/**
 * The bytes of one blob for one response, pulled by the sender
 * (routes/send-blob.ts). A stored file is all there at once; a fill in
 * progress grows, and its readers wait on it.
 */
export interface BlobSource {
  /**
   * The exclusive end of what can be sent from `pos` now, waiting until at
   * least one byte is there; undefined once `pos` is the end. Rejects (or
   * throws) when the rest will never come, e.g. a failed fill: the response
   * must then be cut, never ended cleanly.
   */
  readable(pos: number): number | undefined | Promise<number | undefined>
  /** Bytes at `pos`, at most `max`, that are already in memory (no copy), or undefined to read them. */
  inMemory(pos: number, max: number): Buffer | undefined
  /** Reads up to `length` bytes at `pos` into `buffer`; resolves with how many (0 only past the data). */
  read(buffer: Buffer, length: number, pos: number): Promise<number>
  /** Releases what the source holds; called once, however the response ended. */
  close(): Promise<void>
}

/** Bytes [start, endExclusive) of a stored blob's open file. */
export class FileSource implements BlobSource {
  constructor(
    private readonly handle: FileHandle,
    private readonly endExclusive: number,
    private readonly onClose: () => Promise<void>,
  ) {}

  readable(pos: number): number | undefined {
    return pos < this.endExclusive ? this.endExclusive : undefined
  }

  inMemory(): undefined {
    return undefined
  }

  async read(buffer: Buffer, length: number, pos: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, 0, length, pos)
    return bytesRead
  }

  close(): Promise<void> {
    return this.onClose()
  }
}
