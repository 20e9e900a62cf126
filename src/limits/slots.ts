import { RegistryError } from '../oci/errors.js'

/** Live work serves a client now; background work (prefetch) can wait. */
export type SlotClass = 'live' | 'background'

export interface SlotsOptions {
  /** What is limited, for errors and logs: "blob fills", "blob responses". */
  readonly what: string
  /** The config key that sets the capacity, named in the 503 so operators know what to raise. */
  readonly key: string
  readonly capacity: number
  /** Slots background work may never take, so live work always finds room. */
  readonly reservedForLive?: number
  /** Waiters beyond this are refused at once. */
  readonly queue: number
  /** Longest wait for a slot. */
  readonly timeoutMs: number
  /** Retry-After sent with the 503, seconds. */
  readonly retryAfterSeconds?: number
}

/** No slot could be had: 503 UNAVAILABLE with Retry-After. */
export class BusyError extends RegistryError {
  override name = 'BusyError'
}

/** Gives the slot back; calling it more than once is harmless. */
export type Release = () => void

interface Waiter {
  readonly cls: SlotClass
  readonly grant: (release: Release) => void
  readonly refuse: (err: Error) => void
}

/**
 * A counting semaphore with a bounded, timed queue: past the queue bound or
 * the wait, the caller gets 503 UNAVAILABLE with Retry-After, never
 * unbounded growth. Background work may use all but the reserved slots.
 */
export class Slots {
  private live = 0
  private background = 0
  private readonly waiters: Waiter[] = []

  constructor(private readonly options: SlotsOptions) {}

  get inUse(): number {
    return this.live + this.background
  }

  get waiting(): number {
    return this.waiters.length
  }

  /** Resolves with a release once a slot is free; rejects with a 503 when the queue is full, the wait times out, or signal aborts. */
  acquire(cls: SlotClass = 'live', signal?: AbortSignal): Promise<Release> {
    // Live work only queues behind live work: waiting background jobs never hold it up.
    const ahead = cls === 'live' ? this.waiters.some((w) => w.cls === 'live') : this.waiters.length > 0
    if (!ahead && this.fits(cls)) return Promise.resolve(this.take(cls))
    if (this.waiters.length >= this.options.queue) return Promise.reject(this.busy('queue full'))
    return new Promise<Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const settle = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
      }
      const waiter: Waiter = {
        cls,
        grant: (release) => {
          settle()
          resolve(release)
        },
        refuse: (err) => {
          settle()
          reject(err)
        },
      }
      const onAbort = (): void => waiter.refuse(signal?.reason instanceof Error ? signal.reason : new Error('aborted'))
      if (signal?.aborted === true) {
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
        return
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      timer = setTimeout(() => waiter.refuse(this.busy('waited too long')), this.options.timeoutMs)
      this.waiters.push(waiter)
    })
  }

  private fits(cls: SlotClass): boolean {
    const { capacity } = this.options
    if (this.inUse >= capacity) return false
    return cls === 'live' || this.background < capacity - (this.options.reservedForLive ?? 0)
  }

  private take(cls: SlotClass): Release {
    if (cls === 'live') this.live++
    else this.background++
    let released = false
    return () => {
      if (released) return
      released = true
      if (cls === 'live') this.live--
      else this.background--
      this.wake()
    }
  }

  /** Hands freed slots to waiters: live ones first, then background ones that fit, each in arrival order. */
  private wake(): void {
    for (;;) {
      const next = this.waiters.find((w) => w.cls === 'live' && this.fits('live')) ?? this.waiters.find((w) => w.cls === 'background' && this.fits('background'))
      if (next === undefined) return
      next.grant(this.take(next.cls))
    }
  }

  private busy(why: string): RegistryError {
    const { what, key, capacity } = this.options
    return new BusyError('UNAVAILABLE', `too many ${what} at once (${why}); try again shortly`, {
      headers: { 'retry-after': String(this.options.retryAfterSeconds ?? 2) },
      detail: { limit: key, capacity },
    })
  }
}
