import t from 'tap'
import { RecentChunks } from '../../src/cache/recent-chunks.js'

const bytes = (from: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) % 251))

t.test('serves the newest chunks by blob offset, without copying', async (t) => {
  const recent = new RecentChunks(10)
  const a = bytes(0, 4)
  const b = bytes(4, 4)
  recent.append(a, 4)
  recent.append(b, 8)
  t.same(recent.slice(0, 100), a, 'a slice ends at its chunk')
  t.same(recent.slice(2, 100), bytes(2, 2))
  t.same(recent.slice(5, 2), bytes(5, 2), 'at most max bytes')
  t.equal(recent.slice(8, 1), undefined, 'nothing at or past the end')
  t.equal(recent.slice(3, 0), undefined, 'nothing for max 0')
  const view = recent.slice(4, 4) as Buffer
  t.equal(view.buffer, b.buffer, 'the chunk itself, not a copy')
})

t.test('drops the oldest chunks beyond the limit', async (t) => {
  const recent = new RecentChunks(10)
  for (let end = 4; end <= 20; end += 4) recent.append(bytes(end - 4, 4), end)
  t.equal(recent.slice(7, 4), undefined, 'old bytes are gone: read the file')
  t.same(recent.slice(8, 4), bytes(8, 4), 'whole chunks are kept, covering at least the last 10 bytes')
  t.same(recent.slice(12, 4), bytes(12, 4))
  t.same(recent.slice(19, 4), bytes(19, 1))
})

t.test('a chunk that does not follow on restarts the window; clear empties it', async (t) => {
  const recent = new RecentChunks(100)
  recent.append(bytes(0, 4), 4)
  recent.append(bytes(10, 4), 14)
  t.equal(recent.slice(0, 4), undefined)
  t.same(recent.slice(10, 10), bytes(10, 4))
  recent.clear()
  t.equal(recent.slice(10, 10), undefined)
  recent.append(Buffer.alloc(0), 14)
  t.equal(recent.slice(13, 1), undefined, 'empty chunks are ignored')
})
