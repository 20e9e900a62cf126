import type { PullRecord } from './types.js'

/** The most recent pulls, at most `capacity`: the oldest is dropped first. */
export class PullRing {
  private readonly items: PullRecord[] = []
  private next = 0

  constructor(private readonly capacity: number) {}

  push(p: PullRecord): void {
    if (this.items.length < this.capacity) this.items.push(p)
    else this.items[this.next] = p
    this.next = (this.next + 1) % this.capacity
  }

  newestFirst(): PullRecord[] {
    const oldestFirst = this.items.length < this.capacity ? this.items : [...this.items.slice(this.next), ...this.items.slice(0, this.next)]
    return [...oldestFirst].reverse()
  }

  /** Oldest first. */
  restore(pulls: readonly PullRecord[]): void {
    for (const p of pulls.slice(-this.capacity)) this.push(p)
  }
}
