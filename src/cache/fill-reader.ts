import type { BlobSource } from './blob-source.js'
import type { BlobFill } from './blob-fill.js'

const WAIT = Symbol('wait')

/**
 * A client's view of a fill: bytes [start, endExclusive) as they arrive. The
 * last byte is held back until the whole blob is verified, so a client never
 * sees a clean end of unverified content; a failed fill rejects (the client's
 * connection is cut). Readers that keep up get the fill's own chunks from
 * memory; the others read its file.
 */
export class FillReader implements BlobSource {
  private closed = false

  /**
   * endExclusive undefined means to the end of the blob. The originator is
   * the request that started the fill; it reads from `start` on.
   */
  constructor(private readonly fill: BlobFill, private readonly endExclusive: number | undefined, private readonly originator: boolean, start = 0) {
    fill.retain()
    if (originator) fill.originatorWants(start, endExclusive)
  }

  readable(pos: number): number | undefined | Promise<number | undefined> {
    const now = this.check(pos)
    return now === WAIT ? this.waitFor(pos) : now
  }

  inMemory(pos: number, max: number): Buffer | undefined {
    const fill = this.fill
    if (pos < fill.written) return fill.recentAt(pos, max)
    return fill.passThrough && this.originator ? fill.takeQueued(pos, max) : undefined
  }

  read(buffer: Buffer, length: number, pos: number): Promise<number> {
    return this.fill.readAt(buffer, Math.min(length, this.fill.written - pos), pos)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.originator) this.fill.originatorLeft()
    this.fill.release()
  }

  private async waitFor(pos: number): Promise<number | undefined> {
    for (;;) {
      await new Promise<void>((resolve) => this.fill.onChange(resolve))
      const now = this.check(pos)
      if (now !== WAIT) return now
    }
  }

  private check(pos: number): number | undefined | typeof WAIT {
    const fill = this.fill
    if (fill.state === 'failed') throw fill.error ?? new Error('fill failed')
    if (fill.passThrough && !this.originator) throw new Error('cache storage failed; retry')
    const verified = fill.state === 'verified'
    const available = fill.available
    const total = fill.size
    const end = this.endExclusive ?? total
    // Everything received is readable, except the very last byte of the blob until verified.
    let limit = verified ? available : Math.min(available, total !== undefined ? total - 1 : available - 1)
    if (end !== undefined) limit = Math.min(limit, end)
    if (pos < limit) return limit
    if (verified && (end === undefined || pos >= Math.min(end, available))) return undefined
    return WAIT
  }
}
