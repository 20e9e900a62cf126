// A teardown scope for the bench: the test harness (test/harness/*.ts) takes a
// tap `Test` only to call `t.teardown(fn)`; outside tap, a Scope stands in for
// it. Teardowns run in reverse order, once, and never throw.
import type { Test } from 'tap'

export type Teardown = () => unknown

export class Scope {
  #fns: Teardown[] = []
  #closed = false

  teardown(fn: Teardown): void {
    if (this.#closed) throw new Error('scope closed')
    this.#fns.push(fn)
  }

  async close(): Promise<void> {
    this.#closed = true
    for (let fn = this.#fns.pop(); fn !== undefined; fn = this.#fns.pop()) {
      try {
        await fn()
      } catch (err) {
        process.stderr.write(`bench: teardown: ${String(err)}\n`)
      }
    }
  }

  /** The harness's view of this scope: it only ever calls `teardown`. */
  asTest(): Test {
    return this as unknown as Test
  }
}
