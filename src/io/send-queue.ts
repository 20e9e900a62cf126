import { readFile } from 'node:fs/promises'
import type { Socket } from 'node:net'
import { endianness } from 'node:os'
import ipaddr from 'ipaddr.js'

/**
 * How many bytes a TCP connection has queued that its peer has not yet
 * acknowledged, read from the kernel's table of connections (Linux:
 * /proc/net/tcp and tcp6, the same place `ss` reads).
 *
 * Node learns that a client reads only when the kernel takes more bytes, and
 * the kernel wakes a writer only once a third of its send buffer (a few MB)
 * has drained: at 2 KB/s, minutes. The queue moving is the client reading,
 * long before that. Elsewhere than Linux every answer is undefined.
 */
export class SendQueueProbe {
  private snapshot: { readonly at: number; readonly table: Promise<Map<string, number>> } | undefined

  /**
   * @param maxAgeMs how long one read of the table answers for, so that hundreds
   * of stalled responses share it; well below the interval between two looks
   * at one socket, or both looks may see the same read.
   */
  constructor(
    private readonly maxAgeMs: number,
    private readonly files: readonly string[] = ['/proc/net/tcp', '/proc/net/tcp6'],
  ) {}

  /** The socket's unacknowledged send queue in bytes; undefined when it cannot be told. Never rejects. */
  async queued(socket: Socket | null | undefined): Promise<number | undefined> {
    if (socket === null || socket === undefined || socket.destroyed) return undefined
    const key = connectionKey(socket.localAddress, socket.localPort, socket.remoteAddress, socket.remotePort)
    if (key === undefined) return undefined
    return (await this.table()).get(key)
  }

  private table(): Promise<Map<string, number>> {
    const now = Date.now()
    if (this.snapshot === undefined || now - this.snapshot.at > this.maxAgeMs) this.snapshot = { at: now, table: readTables(this.files) }
    return this.snapshot.table
  }
}

async function readTables(files: readonly string[]): Promise<Map<string, number>> {
  const table = new Map<string, number>()
  for (const file of files) {
    let text: string
    try {
      text = await readFile(file, 'latin1')
    } catch {
      continue
    }
    parseTcpTable(text, table)
  }
  return table
}

/**
 * Adds each connection of a /proc/net/tcp{,6} text to table: key from
 * connectionKey, value its tx_queue. Lines it cannot read are skipped.
 */
export function parseTcpTable(text: string, table: Map<string, number>): void {
  for (const line of text.split('\n')) {
    // "  12: 0100007F:1F90 0100007F:D2F4 01 00000000:00000000 ..."
    const fields = line.trim().split(/\s+/)
    const [local, remote, , queues] = fields.slice(1, 5)
    if (local === undefined || remote === undefined || queues === undefined) continue
    const localAddress = procAddress(local.slice(0, local.lastIndexOf(':')))
    const localPort = hexPort(local)
    const remoteAddress = procAddress(remote.slice(0, remote.lastIndexOf(':')))
    const remotePort = hexPort(remote)
    const tx = /^([0-9A-Fa-f]{8}):/.exec(queues)?.[1]
    if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined || tx === undefined) continue
    table.set(`${localAddress} ${localPort} ${remoteAddress} ${remotePort}`, parseInt(tx, 16))
  }
}

/** One connection as both the kernel's table and a node socket can name it: both ends' addresses and ports. */
export function connectionKey(localAddress: string | undefined, localPort: number | undefined, remoteAddress: string | undefined, remotePort: number | undefined): string | undefined {
  if (localAddress === undefined || localPort === undefined || remotePort === undefined || remoteAddress === undefined) return undefined
  const local = nodeAddress(localAddress)
  const remote = nodeAddress(remoteAddress)
  return local === undefined || remote === undefined ? undefined : `${local} ${localPort} ${remote} ${remotePort}`
}

function hexPort(endpoint: string): number | undefined {
  const hex = endpoint.slice(endpoint.lastIndexOf(':') + 1)
  return /^[0-9A-Fa-f]{4}$/.test(hex) ? parseInt(hex, 16) : undefined
}

const HOST_LITTLE_ENDIAN = endianness() === 'LE'

/**
 * The kernel prints an address as 32-bit words in host byte order: IPv4 as
 * one word, IPv6 as four. Made canonical: dotted IPv4 (also for IPv4-mapped
 * IPv6), else eight hex groups.
 */
function procAddress(hex: string): string | undefined {
  if (!/^(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32})$/.test(hex)) return undefined
  const bytes: number[] = []
  for (let word = 0; word < hex.length; word += 8) {
    const wordBytes = [0, 1, 2, 3].map((b) => parseInt(hex.slice(word + 2 * b, word + 2 * b + 2), 16))
    bytes.push(...(HOST_LITTLE_ENDIAN ? wordBytes.reverse() : wordBytes))
  }
  return canonical(bytes)
}

/** A node address ("127.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0") in procAddress's form. */
function nodeAddress(text: string): string | undefined {
  const address = text.replace(/%.*$/, '')
  return ipaddr.isValid(address) ? canonical(ipaddr.parse(address).toByteArray()) : undefined
}

function canonical(bytes: readonly number[]): string {
  const mapped = bytes.length === 16 && bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff
  if (bytes.length === 4 || mapped) return bytes.slice(-4).join('.')
  const groups: string[] = []
  for (let i = 0; i < bytes.length; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16))
  return groups.join(':')
}
