import { Worker } from 'node:worker_threads'
import { RegistryError } from '../oci/errors.js'
import type { CompareAnswer, CompareRequest } from './bcrypt-worker.js'

const WORKER = new URL('./bcrypt-worker.js', import.meta.url)

/**
 * bcrypt comparisons on one worker thread, in order. Pending comparisons are
 * bounded: past the bound a request is refused with 503 rather than queued
 * without end (verified headers are cached, so only new ones get here).
 */
export class BcryptWorker {
  private worker: Worker | undefined
  private nextId = 0
  private readonly pending = new Map<number, { resolve: (match: boolean) => void; reject: (err: Error) => void }>()

  constructor(private readonly maxPending = 256) {}

  compare(password: string, hash: string): Promise<boolean> {
    if (this.pending.size >= this.maxPending) {
      return Promise.reject(new RegistryError('UNAVAILABLE', 'too many authentications in progress', { status: 503, headers: { 'retry-after': '1' } }))
    }
    const worker = this.started()
    const id = this.nextId++
    return new Promise<boolean>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      worker.postMessage({ id, password, hash } satisfies CompareRequest)
    })
  }

  async close(): Promise<void> {
    const worker = this.worker
    this.worker = undefined
    this.rejectAll(new Error('closing'))
    await worker?.terminate()
  }

  private rejectAll(cause: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(new RegistryError('UNAVAILABLE', 'authentication is unavailable', { status: 503, cause }))
    this.pending.clear()
  }

  private started(): Worker {
    if (this.worker !== undefined) return this.worker
    const worker = new Worker(WORKER)
    // An idle worker must not keep a stopping process alive.
    worker.unref()
    worker.on('message', (answer: CompareAnswer) => {
      const waiter = this.pending.get(answer.id)
      this.pending.delete(answer.id)
      waiter?.resolve(answer.match)
    })
    // Everything pending was sent to this worker; a later one starts with nothing pending.
    const fail = (err: Error): void => {
      if (this.worker !== worker) return
      this.worker = undefined
      this.rejectAll(err)
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`bcrypt worker exited with ${code}`)))
    this.worker = worker
    return worker
  }
}
