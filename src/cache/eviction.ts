import { hostname } from 'node:os'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { DigestAlgorithm } from '../oci/digest.js'
import type { Metrics } from '../observability/metrics.js'
import type { BlobInfo, BlobStore, BlobWriter, ByteRange } from '../storage/blob-store.js'

/** A pass starts once stored bytes exceed this share of maxSize... */
export const HIGH_WATERMARK = 0.95
/** ...and evicts until they are at or below this share, so passes are rare and batched. */
export const LOW_WATERMARK = 0.85
/** Bytes counted for a manifest document whose size was never seen (listing gives keys, not sizes). */
export const MANIFEST_SIZE_ESTIMATE = 4096
/** How often access times are written to the store when they changed. */
export const DEFAULT_FLUSH_INTERVAL_MS = 30_000
/** How often the store is listed again, to count what other replicas stored and forget what they removed. */
export const DEFAULT_RESCAN_INTERVAL_MS = 15 * 60_000
/** Access-time documents of instances silent this long are removed by an evicting instance. */
const STALE_ACCESS_DOCUMENT_MS = 7 * 24 * 3_600_000
const ACCESS_PREFIX = 'access'
const MANIFEST_PREFIX = 'manifests/'
const LOGGED_IDS = 5
const ACCESS_VERSION = 1

interface Entry {
  size: number
  /** Last access, ms since the epoch; 0 = never seen used (oldest). */
  atime: number
}

/** What one eviction pass removed. */
export interface EvictionResult {
  /** Blobs and manifest documents removed by this pass. */
  readonly evicted: number
  readonly bytes: number
  /** What was removed: digests of blobs, document keys of manifests. */
  readonly ids: readonly string[]
}

/** The quota, the eviction switch, and where logs, metrics and access times go. */
export interface EvictorOptions {
  /** Quota in bytes over blobs and manifest documents. */
  readonly maxSize: number
  /** False: track and persist access times, never delete (a replica that leaves eviction to another). */
  readonly evict: boolean
  readonly log: Logger
  readonly metrics?: Pick<Metrics, 'evictions' | 'evictedBytes' | 'cacheSize'>
  /** Names this process's access-time document, `access/<instance>.json`; default the host name. */
  readonly instance?: string
  readonly flushIntervalMs?: number
  readonly rescanIntervalMs?: number
}

interface AccessDocument {
  readonly version: number
  readonly instance: string
  readonly writtenAt: number
  /** [id, atime, size] */
  readonly entries: ReadonlyArray<readonly [string, number, number]>
}

const isManifestKey = (key: string): boolean => key.startsWith(MANIFEST_PREFIX)

function parseAccessDocument(bytes: Buffer): AccessDocument | undefined {
  let doc: unknown
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof doc !== 'object' || doc === null) return undefined
  const d = doc as Partial<AccessDocument>
  if (d.version !== ACCESS_VERSION || typeof d.writtenAt !== 'number' || !Array.isArray(d.entries)) return undefined
  const entries = d.entries.filter((e): e is [string, number, number] =>
    Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number' && typeof e[2] === 'number')
  return { version: d.version, instance: typeof d.instance === 'string' ? d.instance : '', writtenAt: d.writtenAt, entries }
}

/**
 * Keeps the store under storage.maxSize by removing least-recently-used
 * blobs and manifest documents. Sizes come from listing the store at start
 * (and again now and then); access times from BlobService (onAccess, pins)
 * and manifest document reads, persisted to `access/<instance>.json` so the
 * order survives a restart. Entries live in a plain Map rather than a bounded
 * LRU: every stored blob must be counted, and a bounded cache would drop
 * (and so undercount) the coldest ones. A pass sorts by access time; passes
 * are rare thanks to the watermarks.
 */
export class Evictor {
  readonly high: number
  readonly low: number
  readonly instance: string
  private readonly entries = new Map<string, Entry>()
  private readonly pins = new Map<string, number>()
  private total = 0
  private clock = 0
  private scanned = false
  private dirty = false
  private queued = false
  private stopped = false
  private exclusive: Promise<unknown> | undefined
  private readonly timers: NodeJS.Timeout[] = []
  private lastMerge = 0
  private lastStuckWarning = 0

  constructor(private readonly store: BlobStore, private readonly options: EvictorOptions) {
    this.high = Math.floor(options.maxSize * HIGH_WATERMARK)
    this.low = Math.floor(options.maxSize * LOW_WATERMARK)
    this.instance = (options.instance ?? hostname()).replace(/[^A-Za-z0-9._-]+/g, '-') || 'stevedore'
  }

  /** Bytes of blobs and manifest documents known to be stored. */
  get size(): number {
    return this.total
  }

  /** Digests and manifest keys known to be stored. */
  get tracked(): number {
    return this.entries.size
  }

  /** Starts the timers and learns what the store holds; resolves once the first listing is done. */
  async start(): Promise<void> {
    const flushMs = this.options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS
    const rescanMs = this.options.rescanIntervalMs ?? DEFAULT_RESCAN_INTERVAL_MS
    this.timers.push(setInterval(() => void this.flush(), flushMs).unref())
    this.timers.push(setInterval(() => {
      this.scan().catch((err: unknown) => this.options.log.warn({ err }, 'eviction: listing the store failed'))
    }, rescanMs).unref())
    await this.scan()
  }

  /** Stops the timers, waits for a running pass, then writes access times. Never throws. */
  async stop(): Promise<void> {
    this.stopped = true
    for (const timer of this.timers) clearInterval(timer)
    this.timers.length = 0
    await this.exclusive?.catch(() => undefined)
    await this.flush()
  }

  /** A stored blob (digest) or manifest document (key) was used. */
  onAccess(id: string, size: number): void {
    this.touch(id, size)
  }

  /** A blob or manifest document was just stored. */
  onStored(id: string, size: number): void {
    this.touch(id, size)
  }

  /** A blob or document is gone from the store (removed by something else). */
  forget(id: string): void {
    const entry = this.entries.get(id)
    if (entry === undefined) return
    this.entries.delete(id)
    this.total -= entry.size
    this.dirty = true
    this.updateGauge()
  }

  /** Keeps a digest from eviction until the returned function is called (once is enough). */
  pin(id: string): () => void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.pins.get(id) ?? 1) - 1
      if (n <= 0) this.pins.delete(id)
      else this.pins.set(id, n)
    }
  }

  /** Runs one eviction pass now (after any running one); a pass does nothing below the high watermark. */
  async runOnce(): Promise<EvictionResult> {
    return this.serialize(() => this.pass())
  }

  /** Writes this instance's access times if they changed since the last write. Never throws. */
  async flush(): Promise<void> {
    if (!this.dirty) return
    this.dirty = false
    const entries: Array<[string, number, number]> = []
    for (const [id, e] of this.entries) if (e.atime > 0) entries.push([id, e.atime, e.size])
    const doc: AccessDocument = { version: ACCESS_VERSION, instance: this.instance, writtenAt: Date.now(), entries }
    try {
      await this.store.putDocument(this.accessKey(), Buffer.from(JSON.stringify(doc)))
    } catch (err) {
      this.dirty = true
      this.options.log.warn({ err }, 'eviction: could not write access times')
    }
  }

  /** The store as ManifestStore should see it: manifest document reads and writes count as accesses. */
  track(store: BlobStore): BlobStore {
    return new ManifestTrackingStore(store, this)
  }

  private accessKey(): string {
    return `${ACCESS_PREFIX}/${this.instance}.json`
  }

  private touch(id: string, size: number): void {
    this.clock = Math.max(Date.now(), this.clock + 1)
    const entry = this.entries.get(id)
    if (entry === undefined) {
      this.entries.set(id, { size, atime: this.clock })
      this.total += size
    } else {
      this.total += size - entry.size
      entry.size = size
      entry.atime = this.clock
    }
    this.dirty = true
    this.updateGauge()
    if (this.total > this.high) this.schedule()
  }

  private updateGauge(): void {
    this.options.metrics?.cacheSize.set(this.total)
  }

  private schedule(): void {
    if (!this.options.evict || !this.scanned || this.queued || this.stopped) return
    this.queued = true
    setImmediate(() => {
      this.queued = false
      this.runOnce().catch((err: unknown) => this.options.log.error({ err }, 'eviction pass failed'))
    })
  }

  /** Scans and passes never overlap: both replace or walk the whole index. */
  private async serialize<T>(fn: () => Promise<T>): Promise<T> {
    while (this.exclusive !== undefined) await this.exclusive.catch(() => undefined)
    const run = fn()
    this.exclusive = run
    try {
      return await run
    } finally {
      if (this.exclusive === run) this.exclusive = undefined
    }
  }

  /** Access times from every instance's document: the latest per id. */
  private async loadAccessTimes(includeOwn: boolean): Promise<Map<string, { atime: number; size: number }>> {
    const times = new Map<string, { atime: number; size: number }>()
    const own = this.accessKey()
    for await (const key of this.store.listDocuments(ACCESS_PREFIX)) {
      if (!key.endsWith('.json') || (!includeOwn && key === own)) continue
      const bytes = await this.store.getDocument(key)
      const doc = bytes === undefined ? undefined : parseAccessDocument(bytes)
      if (doc === undefined) {
        this.options.log.warn({ key }, 'eviction: ignoring an unreadable access-time document')
        continue
      }
      if (key !== own && this.options.evict && Date.now() - doc.writtenAt > STALE_ACCESS_DOCUMENT_MS) {
        await this.store.deleteDocument(key)
        continue
      }
      for (const [id, atime, size] of doc.entries) {
        const seen = times.get(id)
        if (seen === undefined || seen.atime < atime) times.set(id, { atime, size })
      }
    }
    return times
  }

  /** Lists the store again: sizes of everything stored, access times from the documents (also on a timer). */
  async rescan(): Promise<void> {
    await this.scan()
  }

  private async scan(): Promise<void> {
    await this.serialize(async () => {
      const startedAt = this.clock = Math.max(Date.now(), this.clock + 1)
      const times = await this.loadAccessTimes(true)
      const found = new Map<string, Entry>()
      let blobs = 0
      for await (const blob of this.store.list()) {
        found.set(blob.digest, { size: blob.size, atime: times.get(blob.digest)?.atime ?? 0 })
        blobs++
      }
      for await (const key of this.store.listDocuments(MANIFEST_PREFIX)) {
        const known = this.entries.get(key)?.size ?? times.get(key)?.size ?? MANIFEST_SIZE_ESTIMATE
        found.set(key, { size: known, atime: times.get(key)?.atime ?? 0 })
      }
      // What happened while we listed: newer accesses win; entries stored meanwhile stay.
      for (const [id, e] of this.entries) {
        const f = found.get(id)
        if (f !== undefined) f.atime = Math.max(f.atime, e.atime)
        else if (e.atime >= startedAt || this.pins.has(id)) found.set(id, { ...e })
      }
      this.entries.clear()
      this.total = 0
      for (const [id, e] of found) {
        this.entries.set(id, e)
        this.total += e.size
        if (e.atime > this.clock) this.clock = e.atime
      }
      const first = !this.scanned
      this.scanned = true
      this.updateGauge()
      this.options.log[first ? 'info' : 'debug']({
        blobs,
        manifests: found.size - blobs,
        bytes: this.total,
        maxSize: this.options.maxSize,
        evict: this.options.evict,
      }, 'eviction index loaded')
    })
    if (this.total > this.high) this.schedule()
  }

  /** Other instances' access times count too: a blob hot on another replica is not cold here. */
  private async mergeOthers(): Promise<void> {
    const interval = this.options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS
    if (Date.now() - this.lastMerge < interval) return
    this.lastMerge = Date.now()
    try {
      for (const [id, t] of await this.loadAccessTimes(false)) {
        const e = this.entries.get(id)
        if (e !== undefined && e.atime < t.atime) e.atime = t.atime
      }
    } catch (err) {
      this.options.log.warn({ err }, 'eviction: could not read other instances\' access times')
    }
  }

  private async pass(): Promise<EvictionResult> {
    const none: EvictionResult = { evicted: 0, bytes: 0, ids: [] }
    if (!this.options.evict || !this.scanned || this.total <= this.high) return none
    await this.mergeOthers()
    const before = this.total
    const candidates = [...this.entries].map(([id, e]) => ({ id, entry: e, atime: e.atime })).sort((a, b) => a.atime - b.atime)
    const ids: string[] = []
    let bytes = 0
    for (const c of candidates) {
      if (this.total <= this.low) break
      // Pinned (being read or filled), or used since the pass began: leave it.
      if (this.pins.has(c.id) || this.entries.get(c.id) !== c.entry || c.entry.atime !== c.atime) continue
      let removed: boolean
      try {
        if (isManifestKey(c.id)) {
          await this.store.deleteDocument(c.id)
          removed = true
        } else {
          removed = await this.store.delete(c.id)
        }
      } catch (err) {
        this.options.log.warn({ id: c.id, err }, 'eviction: could not remove')
        continue
      }
      if (this.entries.get(c.id) === c.entry) {
        this.entries.delete(c.id)
        this.total -= c.entry.size
      }
      if (removed) {
        ids.push(c.id)
        bytes += c.entry.size
      }
    }
    this.dirty = true
    this.updateGauge()
    if (ids.length > 0) {
      this.options.metrics?.evictions.inc(ids.length)
      this.options.metrics?.evictedBytes.inc(bytes)
      this.options.log.info({
        evicted: ids.length,
        bytes,
        sizeBefore: before,
        sizeAfter: this.total,
        maxSize: this.options.maxSize,
        ids: ids.slice(0, LOGGED_IDS),
      }, 'eviction pass')
    }
    if (this.total > this.high && Date.now() - this.lastStuckWarning > 60_000) {
      this.lastStuckWarning = Date.now()
      this.options.log.warn({ bytes: this.total, maxSize: this.options.maxSize, pinned: this.pins.size }, 'over quota and nothing more can be evicted now (the rest is in use)')
    }
    return { evicted: ids.length, bytes, ids }
  }
}

/** Passes everything to the store; manifest document reads and writes are reported to the evictor. */
class ManifestTrackingStore implements BlobStore {
  readonly kind: string
  readonly redirectUrl?: (digest: string) => Promise<string | undefined>

  constructor(private readonly inner: BlobStore, private readonly evictor: Evictor) {
    this.kind = inner.kind
    const redirect = inner.redirectUrl?.bind(inner)
    if (redirect !== undefined) this.redirectUrl = redirect
  }

  init(): Promise<void> {
    return this.inner.init()
  }

  stat(digest: string): Promise<BlobInfo | undefined> {
    return this.inner.stat(digest)
  }

  read(digest: string, range?: ByteRange): Promise<Readable> {
    return this.inner.read(digest, range)
  }

  createWriter(algorithm?: DigestAlgorithm, expectedDigest?: string): Promise<BlobWriter> {
    return this.inner.createWriter(algorithm, expectedDigest)
  }

  delete(digest: string): Promise<boolean> {
    return this.inner.delete(digest)
  }

  list(): AsyncIterable<BlobInfo> {
    return this.inner.list()
  }

  async getDocument(key: string): Promise<Buffer | undefined> {
    const bytes = await this.inner.getDocument(key)
    if (bytes !== undefined && isManifestKey(key)) this.evictor.onAccess(key, bytes.byteLength)
    return bytes
  }

  async putDocument(key: string, bytes: Uint8Array): Promise<void> {
    await this.inner.putDocument(key, bytes)
    if (isManifestKey(key)) this.evictor.onStored(key, bytes.byteLength)
  }

  async deleteDocument(key: string): Promise<void> {
    await this.inner.deleteDocument(key)
    if (isManifestKey(key)) this.evictor.forget(key)
  }

  listDocuments(prefix: string): AsyncIterable<string> {
    return this.inner.listDocuments(prefix)
  }

  writable(): Promise<boolean> {
    return this.inner.writable()
  }
}
