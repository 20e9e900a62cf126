import { PassThrough, Readable } from 'node:stream'
import t from 'tap'
import { chunkBatches } from '../../src/upstream/chunk-batches.js'

t.test('hands over the pushed chunks themselves, in batches, to the end', async (t) => {
  const chunks = [Buffer.from('ab'), Buffer.from('cd'), Buffer.from('ef')]
  const stream = new PassThrough()
  for (const c of chunks) stream.write(c)
  stream.end()
  const seen: Buffer[] = []
  let batches = 0
  for await (const batch of chunkBatches(stream, 1024)) {
    batches++
    seen.push(...batch)
  }
  t.equal(Buffer.concat(seen).toString(), 'abcdef')
  t.ok(seen.every((c, i) => c.buffer === chunks[i]?.buffer), 'no copies: the same Buffers')
  t.ok(batches >= 1 && batches <= 3)
})

t.test('pauses the stream while highWaterMark bytes wait', async (t) => {
  const stream = new PassThrough({ highWaterMark: 4 })
  const iterator = chunkBatches(stream, 8)[Symbol.asyncIterator]()
  const first = iterator.next()
  stream.write(Buffer.alloc(8))
  const batch = await first
  t.equal(batch.done, false)
  stream.write(Buffer.alloc(8))
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(stream.isPaused(), 'paused: 8 bytes are waiting to be taken')
  const second = await iterator.next()
  t.equal((second.value as Buffer[]).reduce((n, c) => n + c.byteLength, 0), 8)
  t.notOk(stream.isPaused(), 'resumed once taken')
  stream.end()
  t.equal((await iterator.next()).done, true)
})

t.test('an error or a close before the end is thrown, after the bytes that came before', async (t) => {
  const failing = new PassThrough()
  failing.write(Buffer.from('x'))
  setImmediate(() => failing.destroy(new Error('upstream reset')))
  const got: string[] = []
  await t.rejects((async () => {
    for await (const batch of chunkBatches(failing, 1024)) got.push(...batch.map(String))
  })(), { message: 'upstream reset' })
  t.same(got, ['x'])
  const closed = new Readable({ read() {} })
  setImmediate(() => closed.destroy())
  await t.rejects((async () => {
    for await (const batch of chunkBatches(closed, 1024)) t.fail(`no data expected, got ${batch.length}`)
  })(), { message: 'stream closed before its end' })
})
