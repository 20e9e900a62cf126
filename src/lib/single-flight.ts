/**
 * One piece of work per key at a time: a second caller for a key that is in
 * flight joins it instead of starting another. Used for blob fills, manifest
 * fetches, tag resolutions and token fetches alike.
 */
export class SingleFlight<K, V> {
  private readonly flights = new Map<K, V>()

  /**
   * The value in flight for key, or a new one from `start`. The flight ends
   * when `until(value)` settles (or `end` is called); only then may a new one
   * start for that key.
   */
  join(key: K, start: () => V, until: (value: V) => Promise<unknown>): { readonly value: V; readonly joined: boolean } {
    const running = this.flights.get(key)
    if (running !== undefined) return { value: running, joined: true }
    const value = start()
    this.flights.set(key, value)
    const end = (): void => this.end(key, value)
    until(value).then(end, end)
    return { value, joined: false }
  }

  /** A promise-valued flight: the work's own promise ends it. */
  run<T>(this: SingleFlight<K, Promise<T>>, key: K, work: () => Promise<T>): { readonly value: Promise<T>; readonly joined: boolean } {
    return this.join(key, work, (p) => p)
  }

  /** The flight running for key, if any. */
  get(key: K): V | undefined {
    return this.flights.get(key)
  }

  /** Ends the flight for key now if it is still `value`: later callers start a new one. */
  end(key: K, value: V): void {
    if (this.flights.get(key) === value) this.flights.delete(key)
  }

  get size(): number {
    return this.flights.size
  }

  values(): IterableIterator<V> {
    return this.flights.values()
  }
}
