// Requests grouped into pulls. A pull is one client (address + user agent)
// asking for a manifest (or an index, then a manifest of it) and then for the
// blobs that manifest lists, on the same repository. It ends when every blob
// of the manifest has been sent, or when the client has been quiet for
// `idleMs` with none of its blobs still sending (a node skips the layers it
// has, so "every blob" may never come). A session that moved no blob is a
// resolve: containerd checking a tag it already has.
import { LRUCache } from 'lru-cache'
import { parseManifest, type ParsedManifest } from '../oci/image-manifest.js'
import type { BlobStarted, ServedRequest } from '../routes/served.js'
import type { LayerRef } from './types.js'

/** One blob of a pull, as it was sent. */
export interface SentBlob {
  readonly digest: string
  readonly bytes: number
  /** From the upstream or a fill in progress. */
  readonly cold: boolean
  readonly firstByteAt: number | undefined
  readonly endedAt: number
  readonly failed: boolean
  /** Answered with a redirect to the store: the download itself was not seen. */
  readonly redirect: boolean
}

/** A pull or a resolve, ended: what the aggregates are built from. */
export interface EndedSession {
  readonly upstream: string
  readonly repository: string
  readonly tag: string | undefined
  readonly digest: string
  readonly index: string | undefined
  /** From the index entry; undefined when the manifest was asked for directly. */
  readonly platform: string | undefined
  readonly address: string
  readonly userAgent: string | undefined
  readonly startedAt: number
  readonly config: LayerRef | undefined
  /** Undefined when only an index was resolved. */
  readonly layers: readonly LayerRef[] | undefined
  /** Empty for a resolve. */
  readonly blobs: readonly SentBlob[]
}

interface OpenIndex {
  readonly digest: string
  tag: string | undefined
  readonly repository: string
  readonly upstream: string
  readonly entries: ReadonlyMap<string, string>
  startedAt: number
  lastAt: number
  /** A manifest of it was asked for: a pull (or resolve) of that manifest, not of the index. */
  used: boolean
}

interface Session {
  readonly upstream: string
  readonly repository: string
  tag: string | undefined
  readonly digest: string
  readonly index: string | undefined
  readonly platform: string | undefined
  startedAt: number
  lastAt: number
  readonly config: LayerRef
  readonly layers: readonly LayerRef[]
  /** Blobs of the manifest not sent yet. */
  readonly pending: Map<string, number>
  /** Every blob of the manifest, with its size. */
  readonly sizes: ReadonlyMap<string, number>
  readonly sent: Map<string, SentBlob>
  readonly inflight: Set<number>
}

interface Client {
  readonly address: string
  readonly userAgent: string | undefined
  indexes: OpenIndex[]
  sessions: Session[]
  /** When it last asked for anything (the sessions' clock). */
  lastAt: number
}

export interface SessionOptions {
  readonly idleMs: number
  readonly maxClients: number
  readonly onEnd: (session: EndedSession) => void
  readonly now?: () => number
}

// Per client: enough for a node pulling a pod's images at once, bounded against a client that asks for anything.
const MAX_PER_CLIENT = 32

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'])

/** Groups a stream of served requests into pulls. Memory: maxClients clients × MAX_PER_CLIENT sessions. */
export class PullSessions {
  private readonly clients = new Map<string, Client>()
  private readonly bySeq = new Map<number, Session>()
  // Hot manifests are asked for by every node: parse each once.
  private readonly parsed = new LRUCache<string, ParsedManifest | false>({ max: 512 })
  // The blob sizes of each parsed image manifest, shared by its sessions.
  private readonly blobSizes = new LRUCache<string, ReadonlyMap<string, number>>({ max: 512 })
  private readonly now: () => number

  constructor(private readonly options: SessionOptions) {
    this.now = options.now ?? Date.now
  }

  /** Open sessions, for tests and the summary. */
  get open(): number {
    let n = 0
    for (const c of this.clients.values()) n += c.sessions.length
    return n
  }

  served(r: ServedRequest): void {
    if (r.kind === 'manifest') this.manifest(r)
    else this.blobEnded(r)
  }

  blobStarted(b: BlobStarted): void {
    const key = clientKey(b.client.address, b.client.userAgent)
    const client = this.clients.get(key)
    const session = client === undefined ? undefined : findSession(client, b.upstream, b.repository, b.digest)
    if (session === undefined || client === undefined) return
    this.touch(key, client)
    session.inflight.add(b.seq)
    session.lastAt = Math.max(session.lastAt, b.at)
    this.bySeq.set(b.seq, session)
  }

  /** Ends the sessions quiet for idleMs; call every second or so. */
  sweep(): void {
    const now = this.now()
    // Clients are in the order they were last active: past the first one active within idleMs, none
    // is quiet, so a sweep costs what it ends, not what is open. (A client that never goes quiet has its
    // sessions ended by MAX_PER_CLIENT or when it does.)
    for (const [key, client] of this.clients) {
      if (now - client.lastAt < this.options.idleMs) break
      if (client.sessions.length > 0) {
        for (const s of [...client.sessions]) {
          if (s.inflight.size === 0 && now - s.lastAt >= this.options.idleMs) this.end(client, s)
        }
      }
      if (client.indexes.length > 0) {
        client.indexes = client.indexes.filter((i) => {
          if (now - i.lastAt < this.options.idleMs) return true
          if (!i.used) this.endIndex(client, i)
          return false
        })
      }
      if (client.sessions.length === 0 && client.indexes.length === 0) this.clients.delete(key)
    }
  }

  /** Ends every session now (shutdown: what was sent so far is the pull). */
  endAll(): void {
    for (const [key, client] of this.clients) {
      for (const s of [...client.sessions]) this.end(client, s)
      for (const i of client.indexes) if (!i.used) this.endIndex(client, i)
      this.clients.delete(key)
    }
  }

  private manifest(r: ServedRequest): void {
    if (r.manifest === undefined || r.digest === undefined || r.status >= 400) return
    const parsed = this.parse(r.digest, r.manifest.mediaType, r.manifest.bytes)
    if (parsed === undefined) return
    const client = this.client(r.client.address, r.client.userAgent)
    if (parsed.kind === 'index') {
      // HEAD by tag, then GET by digest: one resolution. Once a manifest of it was taken, asking again starts another.
      const open = client.indexes.find((i) => i.digest === r.digest && i.repository === r.repository && i.upstream === r.upstream && !i.used)
      if (open !== undefined) {
        open.tag ??= r.tag
        open.startedAt = Math.min(open.startedAt, r.startedAt)
        open.lastAt = r.endedAt
        return
      }
      const entries = new Map(parsed.entries.map((e) => [e.digest, e.platform]))
      client.indexes.push({ digest: r.digest, tag: r.tag, repository: r.repository, upstream: r.upstream, entries, startedAt: r.startedAt, lastAt: r.endedAt, used: false })
      if (client.indexes.length > MAX_PER_CLIENT) {
        const dropped = client.indexes.shift() as OpenIndex
        if (!dropped.used) this.endIndex(client, dropped)
      }
      return
    }
    const same = client.sessions.find((s) => s.digest === r.digest && s.repository === r.repository && s.upstream === r.upstream)
    if (same !== undefined && same.sent.size === 0 && same.inflight.size === 0) {
      // HEAD by tag, then GET by digest: one pull.
      same.tag ??= r.tag
      same.startedAt = Math.min(same.startedAt, r.startedAt)
      same.lastAt = r.endedAt
      return
    }
    if (same !== undefined) this.end(client, same)
    // The latest resolution of an index that lists it: an earlier one belongs to an earlier pull.
    const from = [...client.indexes].reverse().find((i) => i.repository === r.repository && i.upstream === r.upstream && i.entries.has(r.digest as string))
    if (from !== undefined) {
      from.used = true
      from.lastAt = r.endedAt
    }
    let sizes = this.blobSizes.get(r.digest)
    if (sizes === undefined) {
      sizes = new Map([parsed.config, ...parsed.layers].map((b) => [b.digest, b.size]))
      this.blobSizes.set(r.digest, sizes)
    }
    client.sessions.push({
      upstream: r.upstream,
      repository: r.repository,
      tag: r.tag ?? from?.tag,
      digest: r.digest,
      index: from?.digest,
      platform: from?.entries.get(r.digest),
      startedAt: Math.min(r.startedAt, from?.startedAt ?? r.startedAt),
      lastAt: r.endedAt,
      config: parsed.config,
      layers: parsed.layers,
      pending: new Map(sizes),
      sizes,
      sent: new Map(),
      inflight: new Set(),
    })
    if (client.sessions.length > MAX_PER_CLIENT) this.end(client, client.sessions[0] as Session)
  }

  private blobEnded(r: ServedRequest): void {
    if (r.digest === undefined) return
    const key = clientKey(r.client.address, r.client.userAgent)
    const client = this.clients.get(key)
    const session = this.bySeq.get(r.seq) ?? (client === undefined ? undefined : findSession(client, r.upstream, r.repository, r.digest))
    this.bySeq.delete(r.seq)
    if (session === undefined || client === undefined) return
    this.touch(key, client)
    session.inflight.delete(r.seq)
    session.lastAt = Math.max(session.lastAt, r.endedAt)
    if (r.method !== 'GET') return
    const failed = r.status >= 400 || !r.complete
    const previous = session.sent.get(r.digest)
    const cold = r.cache === 'miss' || r.cache === 'joined'
    // Sent whole, a blob is its manifest size, however many ranged requests it took (and a
    // redirect sends nothing through us); a cut one counts nothing it may have sent.
    const size = session.sizes.get(r.digest) ?? 0
    const bytes = failed ? (previous?.bytes ?? 0) : size > 0 ? size : r.bytes
    session.sent.set(r.digest, {
      digest: r.digest,
      bytes,
      cold: (previous?.cold ?? false) || cold,
      firstByteAt: previous?.firstByteAt ?? r.firstByteAt,
      endedAt: r.endedAt,
      // A retry that succeeds (containerd resumes with a range) mends the blob.
      failed: failed && previous?.failed !== false,
      redirect: (previous?.redirect ?? false) || r.redirect,
    })
    if (!failed) session.pending.delete(r.digest)
    if (session.pending.size === 0 && session.inflight.size === 0) this.end(client, session)
  }

  private end(client: Client, s: Session): void {
    client.sessions = client.sessions.filter((x) => x !== s)
    for (const seq of s.inflight) this.bySeq.delete(seq)
    this.options.onEnd({
      upstream: s.upstream,
      repository: s.repository,
      tag: s.tag,
      digest: s.digest,
      index: s.index,
      platform: s.platform,
      address: client.address,
      userAgent: client.userAgent,
      startedAt: s.startedAt,
      config: s.config,
      layers: s.layers,
      blobs: [...s.sent.values()],
    })
  }

  /** An index nobody took a manifest of: a resolve of the tag. */
  private endIndex(client: Client, i: OpenIndex): void {
    i.used = true
    this.options.onEnd({
      upstream: i.upstream,
      repository: i.repository,
      tag: i.tag,
      digest: i.digest,
      index: undefined,
      platform: undefined,
      address: client.address,
      userAgent: client.userAgent,
      startedAt: i.startedAt,
      config: undefined,
      layers: undefined,
      blobs: [],
    })
  }

  private client(address: string, userAgent: string | undefined): Client {
    const key = clientKey(address, userAgent)
    let client = this.clients.get(key)
    if (client !== undefined) {
      this.touch(key, client)
      return client
    }
    if (this.clients.size >= this.options.maxClients) {
      // The least recently active client with nothing sending; failing that (a flood of pulls all in flight), the least recently active.
      let victim: [string, Client] | undefined
      let looked = 0
      for (const entry of this.clients) {
        if (entry[1].sessions.every((s) => s.inflight.size === 0)) {
          victim = entry
          break
        }
        if (++looked >= 64) break
      }
      const [oldestKey, oldest] = victim ?? (this.clients.entries().next().value as [string, Client])
      for (const s of [...oldest.sessions]) this.end(oldest, s)
      for (const i of oldest.indexes) if (!i.used) this.endIndex(oldest, i)
      this.clients.delete(oldestKey)
    }
    client = { address, userAgent, indexes: [], sessions: [], lastAt: this.now() }
    this.clients.set(key, client)
    return client
  }

  /** Most recently active last: the first is the one to end when full, and the sweep's order. */
  private touch(key: string, client: Client): void {
    client.lastAt = this.now()
    this.clients.delete(key)
    this.clients.set(key, client)
  }

  private parse(digest: string, mediaType: string, bytes: Buffer): ParsedManifest | undefined {
    let parsed = this.parsed.get(digest)
    if (parsed === undefined) {
      try {
        parsed = parseManifest(mediaType, bytes)
      } catch {
        // A manifest we cannot read (an artifact, a schema 1) is no image pull.
        parsed = false
      }
      this.parsed.set(digest, parsed)
    }
    if (parsed === false) return undefined
    if (parsed.kind === 'index' && !INDEX_TYPES.has(mediaType) && parsed.entries.length === 0) return undefined
    return parsed
  }
}

const clientKey = (address: string, userAgent: string | undefined): string => `${address} ${userAgent ?? ''}`

/** The open session a blob of this repository belongs to: one still waiting for it, else one that has it (a resumed range). */
function findSession(client: Client, upstream: string, repository: string, digest: string): Session | undefined {
  const candidates = client.sessions.filter((s) => s.upstream === upstream && s.repository === repository)
  return candidates.find((s) => s.pending.has(digest)) ?? candidates.find((s) => s.sent.has(digest))
}
