// The send buffers' pool: a budget for what exists at once, and a bound on
// what it keeps free once a burst is over.
import t from 'tap'
import { BufferPool } from '../../src/io/buffer-pool.js'

t.test('the budget bounds buffers lent and free; maxFree bounds what is kept after a burst', async (t) => {
  const pool = new BufferPool(1024, 4 * 1024)
  const lent = [pool.take(), pool.take(), pool.take(), pool.take()]
  t.ok(lent.every((b) => b?.byteLength === 1024), 'four of 1 KiB within 4 KiB')
  t.equal(pool.take(), undefined, 'the budget is lent out')
  for (const b of lent) pool.give(b as Buffer)
  t.equal(pool.freeBytes, 4 * 1024, 'all kept for reuse')
  t.equal(pool.take(), lent[3], 'and reused')

  const small = new BufferPool(1024, Number.MAX_SAFE_INTEGER, 2)
  const burst = Array.from({ length: 100 }, () => small.take() as Buffer)
  t.equal(small.lentBytes, 100 * 1024)
  for (const b of burst) small.give(b)
  // Before the fix: all 100 were kept for the life of the process.
  t.equal(small.freeBytes, 2 * 1024, 'two kept, the rest to the GC')
  t.equal(small.lentBytes, 0)
})
