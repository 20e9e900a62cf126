// The kernel's connection table as the write timeout reads it: lines in the
// format /proc/net/tcp and tcp6 print (copied from a Linux machine, little
// endian), matched to the names a node socket gives; then the probe against a
// real connection on loopback whose reader has stopped.
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { endianness } from 'node:os'
import t from 'tap'
import { SendQueueProbe, connectionKey, parseTcpTable } from '../../src/io/send-queue.js'

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 67 1 00000000300d24e8 100 0 0 10 0
   1: 0100007F:B58D 0100007F:AA32 01 003B9A00:00000000 01:00000014 00000000     0        0 4711 2 0000000021f795a0 20 4 30 10 -1
   2: 0A00000A:1388 6401A8C0:D2F4 01 00000400:00000000 00:00000000 00000000     0        0 4712 1 0000000021f795a1 20 4 30 10 -1
`
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 00010000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1
   1: 000080FE00000000FF0000020100FE5E:1F90 000080FE00000000030000000200FE5E:C351 01 0000000A:00000000 00:00000000 00000000     0        0 98 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C352 01 junk 00:00000000
`

t.test('the table: tx_queue by both ends\' addresses and ports; IPv4, IPv4-mapped and IPv6 alike', async (t) => {
  if (endianness() !== 'LE') {
    t.pass('these lines were printed by a little-endian kernel')
    return
  }
  const table = new Map<string, number>()
  parseTcpTable(TCP, table)
  parseTcpTable(TCP6, table)
  t.equal(table.get(connectionKey('127.0.0.1', 0xb58d, '127.0.0.1', 0xaa32) as string), 0x3b9a00, 'IPv4 loopback')
  t.equal(table.get(connectionKey('10.0.0.10', 0x1388, '192.168.1.100', 0xd2f4) as string), 0x400, 'IPv4 peer, bytes in host order')
  t.equal(table.get(connectionKey('::ffff:127.0.0.1', 8080, '::ffff:127.0.0.1', 50000) as string), 0x10000, 'an IPv4-mapped peer as node names it')
  t.equal(table.get(connectionKey('127.0.0.1', 8080, '127.0.0.1', 50000) as string), 0x10000, 'the same connection named as plain IPv4')
  t.equal(table.get(connectionKey('fe80::200:ff:5efe:1', 8080, 'fe80::3:5efe:2%eth0', 50001) as string), 10, 'IPv6 with a zone')
  t.equal(table.get(connectionKey('fe80::200:ff:5efe:1', 8080, 'fe80:0:0:0:0:3:5efe:2', 50001) as string), 10, 'IPv6 written out in full')
  t.equal(table.get(connectionKey('::1', 8080, '::1', 50002) as string), undefined, 'a line with an unreadable queue is skipped')
  t.equal(table.size, 5, 'the header lines are skipped')
  t.equal(table.get(connectionKey('127.0.0.2', 0xb58d, '127.0.0.1', 0xaa32) as string), undefined, 'the same ports on another local address are another connection')
  t.equal(connectionKey('127.0.0.1', 8080, 'not an address', 1), undefined)
  t.equal(connectionKey('127.0.0.1', undefined, '127.0.0.1', 1), undefined)
})

t.test('the probe: a stopped reader\'s queue stays put; it moves once the reader reads', async (t) => {
  if (process.platform !== 'linux') {
    t.equal(await new SendQueueProbe(0).queued(connect({ port: 1, host: '127.0.0.1' }).on('error', () => undefined)), undefined, 'no table elsewhere: no answer')
    return
  }
  const accepted: Socket[] = []
  const server = createServer((s) => accepted.push(s))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  client.pause()
  await once(client, 'connect')
  while (accepted.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  const sender = accepted[0] as Socket
  t.teardown(() => {
    client.destroy()
    sender.destroy()
    server.close()
  })
  // Fill the client's receive buffer and our send buffer.
  const chunk = Buffer.alloc(1024 * 1024)
  while (sender.write(chunk));
  await new Promise((resolve) => setTimeout(resolve, 200))
  const probe = new SendQueueProbe(0)
  const first = await probe.queued(sender)
  t.ok(first !== undefined && first > 0, `bytes queued while the reader is stopped (${first})`)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(await probe.queued(sender), first, 'unchanged while it stays stopped')
  client.resume()
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.not(await probe.queued(sender), first, 'changed once it reads')
  t.equal(await probe.queued(null), undefined, 'no socket: no answer')
})
