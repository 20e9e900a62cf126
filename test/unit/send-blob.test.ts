// The sender against real sockets on loopback: a client that keeps up, one
// that reads slowly, and one that stops reading. The blob comes from memory
// through the BlobSource interface (a FAKE source; files and fills are
// covered by the e2e tests).
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import type { BlobSource } from '../../src/cache/blob-source.js'
import { SendBuffers, WriteTimeoutError, endBlob, writeBlob } from '../../src/routes/send-blob.js'

const MiB = 1024 * 1024
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

class BufferSource implements BlobSource {
  closed = false
  constructor(private readonly bytes: Buffer) {}
  readable(pos: number): number | undefined {
    return pos < this.bytes.byteLength ? this.bytes.byteLength : undefined
  }
  inMemory(): undefined {
    return undefined
  }
  async read(buffer: Buffer, length: number, pos: number): Promise<number> {
    return this.bytes.copy(buffer, 0, pos, pos + length)
  }
  async close(): Promise<void> {
    this.closed = true
  }
}

interface Served {
  server: Server
  port: number
  result: Promise<Error | undefined>
}

async function serve(bytes: Buffer, buffers: SendBuffers, writeTimeoutMs: number): Promise<Served> {
  let settle!: (e: Error | undefined) => void
  const result = new Promise<Error | undefined>((resolve) => {
    settle = resolve
  })
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(bytes.byteLength) })
    writeBlob(new BufferSource(bytes), 0, res, { buffers, writeTimeoutMs }).then(
      () => {
        res.end()
        settle(undefined)
      },
      (err: unknown) => {
        res.destroy()
        settle(err as Error)
      },
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: (server.address() as AddressInfo).port, result }
}

/** A raw client: sends a GET, then reads as told; resolves the body (without headers) on close. */
function client(port: number): { socket: Socket; body: Promise<Buffer> } {
  const socket = connect(port, '127.0.0.1')
  socket.write('GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  const body = new Promise<Buffer>((resolve) => {
    socket.once('close', () => {
      const all = Buffer.concat(chunks)
      const split = all.indexOf('\r\n\r\n')
      resolve(split < 0 ? Buffer.alloc(0) : all.subarray(split + 4))
    })
  })
  return { socket, body }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('a client that keeps up gets 1 MiB buffers from the pool, every byte, and the pool gets them back', async (t) => {
  const bytes = randomBytes(40 * MiB)
  const buffers = new SendBuffers(16 * MiB)
  const s = await serve(bytes, buffers, 5000)
  t.teardown(() => s.server.close())
  let peakBig = 0
  const sampler = setInterval(() => {
    peakBig = Math.max(peakBig, buffers.big.lentBytes)
  }, 1)
  const c = client(s.port)
  const body = await c.body
  clearInterval(sampler)
  t.equal(await s.result, undefined, 'the sender finished cleanly')
  t.equal(sha(body), sha(bytes), 'every byte, in order')
  t.ok(peakBig >= MiB, `1 MiB buffers were used once it kept up (peak ${peakBig / MiB} MiB lent)`)
  t.ok(peakBig <= 2 * MiB, 'at most two per response')
  t.equal(buffers.big.lentBytes, 0, 'all given back')
  t.ok(buffers.big.freeBytes > 0, 'and kept for the next response')
})

t.test('a client that stops reading holds no 1 MiB buffer, and is dropped after writeTimeout', async (t) => {
  const bytes = randomBytes(64 * MiB)
  const buffers = new SendBuffers(16 * MiB)
  const s = await serve(bytes, buffers, 700)
  t.teardown(() => s.server.close())
  const c = client(s.port)
  // Read the first 12 MiB at full speed (past the promotion), then stop reading altogether.
  let got = 0
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      got += chunk.byteLength
      if (got >= 12 * MiB) {
        c.socket.pause()
        c.socket.removeListener('data', onData)
        resolve()
      }
    }
    c.socket.on('data', onData)
  })
  await sleep(400)
  t.equal(buffers.big.lentBytes <= MiB ? 'ok' : buffers.big.lentBytes, 'ok', 'at most the one write the kernel holds on to: the read-ahead went back')
  const err = await s.result
  t.ok(err instanceof WriteTimeoutError, `dropped: ${String(err)}`)
  c.socket.resume() // to see the end of the cut connection
  const body = await c.body
  t.ok(body.byteLength < bytes.byteLength, 'the client did not get a clean end')
  t.ok(buffers.small.lentBytes === 0, 'small buffers back')
})

t.test('a slow client that keeps reading is served to the end, with small buffers only', async (t) => {
  const bytes = randomBytes(7 * MiB)
  const buffers = new SendBuffers(16 * MiB)
  const s = await serve(bytes, buffers, 1500)
  t.teardown(() => s.server.close())
  const c = client(s.port)
  c.socket.pause()
  let peakBig = 0
  let peakSmall = 0
  const sampler = setInterval(() => {
    peakBig = Math.max(peakBig, buffers.big.lentBytes)
    peakSmall = Math.max(peakSmall, buffers.small.lentBytes)
  }, 5)
  // About 2 MB/s: 64 KiB every 30 ms.
  const reader = setInterval(() => {
    c.socket.read(64 * 1024)
  }, 30)
  c.socket.on('readable', () => undefined)
  const body = await c.body
  clearInterval(reader)
  clearInterval(sampler)
  t.equal(await s.result, undefined, 'served to the end, not dropped')
  t.equal(sha(body), sha(bytes))
  t.equal(peakBig, 0, 'never a 1 MiB buffer: it never proved it keeps up')
  t.ok(peakSmall <= 2 * 64 * 1024, `at most two small buffers (${peakSmall / 1024} KiB)`)
})

t.test('the end of a response is bounded too: a last write that never leaves is a write timeout', async (t) => {
  // FAKE response whose end() never finishes: a chunked terminator stuck behind a client that stopped reading.
  const stuck = Object.assign(new EventEmitter(), { socket: null, end: () => undefined })
  const started = Date.now()
  await t.rejects(endBlob(stuck as never, { buffers: new SendBuffers(MiB), writeTimeoutMs: 200 }), WriteTimeoutError)
  t.ok(Date.now() - started >= 190, 'after the write timeout')
  const finishing = Object.assign(new EventEmitter(), { socket: null, end(this: InstanceType<typeof EventEmitter>) {
    setTimeout(() => this.emit('finish'), 20)
  } })
  await t.resolves(endBlob(finishing as never, { buffers: new SendBuffers(MiB), writeTimeoutMs: 200 }), 'a response that finishes resolves')
})
