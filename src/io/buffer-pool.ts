/**
 * Reusable buffers of one size, shared by every response. Measured: a fresh
 * 1 MiB buffer per read cost a cached-blob stream about a third of its CPU
 * in allocation and GC; recycled buffers cost nothing. `maxBytes` bounds what
 * the pool lets exist at once (free or lent): past it, take() says no and the
 * caller makes do with less.
 */
export class BufferPool {
  private readonly free: Buffer[] = []
  private lent = 0

  /** @param maxFree how many free buffers are kept for reuse; past it, a returned one goes to the GC. */
  constructor(readonly size: number, private readonly maxBytes: number, private readonly maxFree = Number.MAX_SAFE_INTEGER) {}

  /** A buffer of `size` bytes, or undefined when the budget is lent out. */
  take(): Buffer | undefined {
    const buffer = this.free.pop()
    if (buffer !== undefined) {
      this.lent++
      return buffer
    }
    if ((this.lent + 1) * this.size > this.maxBytes) return undefined
    this.lent++
    // Not from Node's shared slab: a pooled buffer must not keep a slab alive.
    return Buffer.allocUnsafeSlow(this.size)
  }

  /** Returns a buffer nothing refers to any more. */
  give(buffer: Buffer): void {
    this.lent--
    if (this.free.length < this.maxFree && (this.free.length + this.lent) * this.size < this.maxBytes) this.free.push(buffer)
  }

  /** Forgets a lent buffer that may still be in use (a failed socket write): the GC takes it, the budget frees. */
  drop(): void {
    this.lent--
  }

  /** Bytes lent out now (for tests and metrics). */
  get lentBytes(): number {
    return this.lent * this.size
  }

  /** Bytes held free for reuse. */
  get freeBytes(): number {
    return this.free.length * this.size
  }
}
