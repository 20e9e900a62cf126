import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { SingleFlight } from '../lib/single-flight.js'
import { parseDigest } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import type { BlobStore } from '../storage/blob-store.js'

/** What one HEAD to a registry said about a digest. */
export type Confirmation = 'present' | 'absent' | 'denied'

const KNOWN_ENTRIES = 100_000
const ABSENT_TTL_MS = 30_000
const DOC_PREFIX = 'scopes'

interface ScopeDocument {
  readonly registries: readonly string[]
}

/**
 * Which registries are known to hold which content. Cached blobs and
 * manifests are served through an upstream only when its registry is known
 * to hold them: fetched through it, referenced by a manifest fetched through
 * it, or confirmed by one HEAD to it. Otherwise anyone who learned the digest
 * of a private layer, cached through a credentialed upstream, could read it
 * through any other upstream name. Registries are keyed by their URL's
 * origin, so upstreams with the same URL share what they know. Records are
 * documents in the store (`scopes/<alg>/<hex>`), so restarts and replicas
 * keep them; content cached before they existed is confirmed on first use.
 */
export class ContentScopes {
  /** digest → registries known to hold it; an entry means the store's record was merged in. */
  private readonly known = new LRUCache<string, Set<string>>({ max: KNOWN_ENTRIES })
  /** `registry digest` pairs a HEAD said are absent, briefly: probing costs the upstream one HEAD per window. */
  private readonly absent = new LRUCache<string, Confirmation>({ max: 10_000, ttl: ABSENT_TTL_MS })
  /** Records made before the store's was merged in: seen at once by holds(). */
  private readonly recorded = new LRUCache<string, Set<string>>({ max: 10_000 })
  private readonly loading = new SingleFlight<string, Promise<Set<string>>>()
  private readonly confirming = new SingleFlight<string, Promise<Confirmation>>()

  constructor(private readonly store: BlobStore, private readonly log: Logger) {}

  /** Whether the registry is known to hold the digest. */
  async holds(registry: string, digest: string): Promise<boolean> {
    if (this.recorded.get(digest)?.has(registry) === true) return true
    return (await this.load(digest)).has(registry)
  }

  /**
   * Remembers that the registry holds these digests, at once in memory and
   * then in the store. Never rejects: a record that could not be written is
   * confirmed again later.
   */
  async record(registry: string, digests: readonly string[]): Promise<void> {
    await Promise.all(digests.map(async (digest) => {
      if (parseDigest(digest) === undefined) return
      const mem = this.known.get(digest)
      if (mem?.has(registry) === true) return
      mem?.add(registry)
      let recent = this.recorded.get(digest)
      if (recent === undefined) this.recorded.set(digest, (recent = new Set()))
      recent.add(registry)
      this.absent.delete(`${registry} ${digest}`)
      try {
        const set = await this.load(digest)
        set.add(registry)
        const doc: ScopeDocument = { registries: [...set].sort() }
        await this.store.putDocument(docKey(digest), Buffer.from(JSON.stringify(doc)))
      } catch (err) {
        this.log.warn({ err, digest, registry }, 'could not record which registry holds a digest; it will be confirmed again')
      }
    }))
  }

  /**
   * Resolves once the registry is known to hold the digest, asking it with
   * `confirm` (one HEAD, shared by concurrent callers) when nobody knows yet.
   * Rejects with the answer the client should get: `notFound` when the
   * registry says it has no such content, DENIED when it refuses us, 503
   * when it cannot be asked (down, failing, rate-limiting): containerd then
   * tries the registry itself.
   */
  async ensure(registry: string, digest: string, confirm: () => Promise<Confirmation>, notFound: () => RegistryError): Promise<void> {
    let held: boolean
    try {
      held = await this.holds(registry, digest)
    } catch (err) {
      throw new RegistryError('UNAVAILABLE', 'the cache storage cannot say which upstreams hold this content', { detail: { digest }, cause: err })
    }
    if (held) return
    const pair = `${registry} ${digest}`
    let verdict = this.absent.get(pair)
    if (verdict === undefined) {
      try {
        verdict = await this.confirming.run(pair, confirm).value
      } catch (err) {
        throw new RegistryError('UNAVAILABLE', 'this content was cached through another upstream, and this one cannot confirm it holds it now', {
          detail: { digest, reason: err instanceof Error ? err.message : String(err) },
          cause: err,
        })
      }
    }
    if (verdict === 'present') {
      await this.record(registry, [digest])
      return
    }
    this.absent.set(pair, verdict)
    if (verdict === 'denied') throw new RegistryError('DENIED', 'the upstream refuses access to this content', { detail: { digest } })
    throw notFound()
  }

  private load(digest: string): Promise<Set<string>> {
    const mem = this.known.get(digest)
    if (mem !== undefined) return Promise.resolve(mem)
    return this.loading.run(digest, async () => {
      const set = new Set<string>()
      const bytes = await this.store.getDocument(docKey(digest))
      if (bytes !== undefined) {
        try {
          const doc = JSON.parse(bytes.toString('utf8')) as Partial<ScopeDocument>
          if (Array.isArray(doc.registries)) for (const r of doc.registries) if (typeof r === 'string') set.add(r)
        } catch {
          // A damaged record only costs a confirmation.
        }
      }
      // Something recorded while this loaded is kept.
      for (const r of this.known.get(digest) ?? []) set.add(r)
      this.known.set(digest, set)
      return set
    }).value
  }
}

function docKey(digest: string): string {
  const d = parseDigest(digest)
  if (d === undefined) throw new Error(`invalid digest ${digest}`)
  return `${DOC_PREFIX}/${d.algorithm}/${d.hex}`
}

/**
 * The digests a manifest refers to that its registry must hold: config and
 * layers, an index's manifests. Not a `subject` (a referrer may name one its
 * registry never had) nor a layer with `urls` (a foreign layer lives
 * elsewhere): recorded as held, either would let anyone who can push to a
 * public registry read a private blob cached through another upstream,
 * knowing only its digest. Never throws.
 */
export function referencedDigests(bytes: Buffer): string[] {
  let doc: unknown
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    return []
  }
  if (typeof doc !== 'object' || doc === null) return []
  const out: string[] = []
  const take = (d: unknown): void => {
    if (typeof d !== 'object' || d === null) return
    const { digest, urls } = d as { digest?: unknown; urls?: unknown }
    if (typeof digest === 'string' && !(Array.isArray(urls) && urls.length > 0)) out.push(digest)
  }
  const m = doc as Record<string, unknown>
  take(m['config'])
  for (const list of [m['layers'], m['manifests'], m['blobs']]) if (Array.isArray(list)) list.forEach(take)
  return out.filter((d) => parseDigest(d) !== undefined)
}
