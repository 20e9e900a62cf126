import { LRUCache } from 'lru-cache'
import { digestOf, parseDigest } from '../oci/digest.js'
import type { BlobStore } from '../storage/blob-store.js'

/** A manifest exactly as the upstream sent it. */
export interface StoredManifest {
  readonly digest: string
  readonly mediaType: string
  readonly bytes: Buffer
}

/** What a tag pointed at when we last asked the upstream. */
export interface TagRecord {
  readonly digest: string
  readonly mediaType: string
  readonly size: number
  /** When the upstream last confirmed this answer (ms since epoch): drives TTL and stale age. */
  readonly fetchedAt: number
}

/**
 * Manifests by digest and tag records, in memory (bounded by bytes) in front
 * of the backing store, which stays the source of truth. A manifest document
 * is one JSON line of metadata, a newline, then the upstream's exact bytes;
 * it is re-hashed on every load from the store.
 */
export class ManifestStore {
  private readonly manifests: LRUCache<string, StoredManifest>
  private readonly tags: LRUCache<string, TagRecord>

  /**
   * onMemoryHit hears of manifests answered from memory, which the store never
   * sees, so that eviction does not take a hot manifest for a cold one.
   */
  constructor(private readonly store: BlobStore, memoryBytes: number, private readonly onMemoryHit?: (key: string, bytes: number) => void) {
    this.manifests = new LRUCache<string, StoredManifest>({
      maxSize: Math.max(memoryBytes, 1),
      sizeCalculation: (m) => m.bytes.byteLength + 200,
    })
    this.tags = new LRUCache<string, TagRecord>({ max: 100_000 })
  }

  async getManifest(digest: string): Promise<StoredManifest | undefined> {
    const mem = this.manifests.get(digest)
    if (mem !== undefined) {
      this.onMemoryHit?.(manifestKey(digest), documentHead(mem).byteLength + mem.bytes.byteLength)
      return mem
    }
    const doc = await this.store.getDocument(manifestKey(digest))
    if (doc === undefined) return undefined
    const nl = doc.indexOf(0x0a)
    if (nl < 0) return undefined
    let mediaType: unknown
    try {
      mediaType = (JSON.parse(doc.subarray(0, nl).toString('utf8')) as { mediaType?: unknown }).mediaType
    } catch {
      return undefined
    }
    const bytes = doc.subarray(nl + 1)
    const algorithm = parseDigest(digest)?.algorithm
    // A damaged document is a miss, never a wrong answer.
    if (typeof mediaType !== 'string' || algorithm === undefined || digestOf(bytes, algorithm) !== digest) return undefined
    const manifest = { digest, mediaType, bytes }
    this.manifests.set(digest, manifest)
    return manifest
  }

  async putManifest(manifest: StoredManifest): Promise<void> {
    await this.store.putDocument(manifestKey(manifest.digest), documentOf(manifest))
    this.manifests.set(manifest.digest, manifest)
  }

  async getTag(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    const key = tagKey(upstream, repository, tag)
    const mem = this.tags.get(key)
    if (mem !== undefined) return mem
    const doc = await this.store.getDocument(key)
    if (doc === undefined) return undefined
    try {
      const rec = JSON.parse(doc.toString('utf8')) as Partial<TagRecord>
      if (typeof rec.digest !== 'string' || typeof rec.mediaType !== 'string' || typeof rec.size !== 'number' || typeof rec.fetchedAt !== 'number') return undefined
      const record: TagRecord = { digest: rec.digest, mediaType: rec.mediaType, size: rec.size, fetchedAt: rec.fetchedAt }
      this.tags.set(key, record)
      return record
    } catch {
      return undefined
    }
  }

  async putTag(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    const key = tagKey(upstream, repository, tag)
    this.tags.set(key, record)
    await this.store.putDocument(key, Buffer.from(JSON.stringify(record)))
  }

  async deleteTag(upstream: string, repository: string, tag: string): Promise<void> {
    const key = tagKey(upstream, repository, tag)
    this.tags.delete(key)
    await this.store.deleteDocument(key)
  }

  /** Bytes of manifests held in memory now. */
  get memoryBytes(): number {
    return this.manifests.calculatedSize
  }
}

function documentHead(manifest: StoredManifest): Buffer {
  return Buffer.from(`${JSON.stringify({ mediaType: manifest.mediaType })}\n`)
}

function documentOf(manifest: StoredManifest): Buffer {
  return Buffer.concat([documentHead(manifest), manifest.bytes])
}

function manifestKey(digest: string): string {
  const d = parseDigest(digest)
  if (d === undefined) throw new Error(`invalid digest ${digest}`)
  return `manifests/${d.algorithm}/${d.hex}`
}

// Tag names never start with '@' and repository components never contain it,
// so `a` with tag `b` and `a/b` with any tag cannot collide.
function tagKey(upstream: string, repository: string, tag: string): string {
  return `tags/${upstream}/${repository}/@${tag}`
}
