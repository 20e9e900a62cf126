/**
 * The newest bytes of a growing blob, as the chunks that arrived, up to a
 * byte limit. Readers that keep up with a fill are served from here: the
 * same Buffer goes to every socket, with no file read and no copy.
 */
export class RecentChunks {
  private chunks: Buffer[] = []
  /** Blob offset of chunks[0]. */
  private start = 0
  private bytes = 0

  constructor(private readonly limit: number) {}

  /** Adds the chunk that ends at blob offset `end`, dropping the oldest beyond the limit. */
  append(chunk: Buffer, end: number): void {
    if (chunk.byteLength === 0) return
    if (this.chunks.length === 0 || this.start + this.bytes !== end - chunk.byteLength) {
      // First chunk, or not contiguous with what is held: start over from this one.
      this.chunks = []
      this.start = end - chunk.byteLength
      this.bytes = 0
    }
    this.chunks.push(chunk)
    this.bytes += chunk.byteLength
    for (let first = this.chunks[0]; first !== undefined && this.bytes - first.byteLength >= this.limit; first = this.chunks[0]) {
      this.chunks.shift()
      this.start += first.byteLength
      this.bytes -= first.byteLength
    }
  }

  /** Bytes from `position`, at most `max`, within one chunk; undefined when not held. */
  slice(position: number, max: number): Buffer | undefined {
    if (position < this.start || position >= this.start + this.bytes || max <= 0) return undefined
    // From the newest end: readers that keep up ask for the last chunks.
    let offset = this.start + this.bytes
    for (let i = this.chunks.length - 1; i >= 0; i--) {
      const chunk = this.chunks[i] as Buffer
      offset -= chunk.byteLength
      if (position >= offset) {
        const from = position - offset
        return chunk.subarray(from, Math.min(chunk.byteLength, from + max))
      }
    }
    return undefined
  }

  clear(): void {
    this.chunks = []
    this.start = 0
    this.bytes = 0
  }
}
