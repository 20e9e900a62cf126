import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { digestOf, parseDigest } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types.js'
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js'
import { errorForUpstreamStatus, isUpstreamOutage } from '../upstream/errors.js'
import type { CacheResult } from './blobs.js'
import type { ManifestStore, StoredManifest, TagRecord } from './manifest-store.js'
import { SingleFlight } from '../lib/single-flight.js'
import { referencedDigests, type Confirmation, type ContentScopes } from './scopes.js'

export interface ManifestTarget {
  readonly client: UpstreamClient
  readonly repository: string
  /** A tag or a digest. */
  readonly reference: string
}

export interface ManifestAnswer {
  readonly manifest: StoredManifest
  readonly cache: CacheResult
}

export interface ManifestPolicy {
  readonly tagTtlMs: number
  readonly maxStaleMs: number
  readonly notFoundTtlMs: number
}

export interface ManifestServiceOptions {
  readonly policy: ManifestPolicy
  readonly log: Logger
  readonly now?: () => number
  /** Counts cache results by kind (metrics). */
  readonly onResult?: (result: CacheResult | 'notfound') => void
  /** Whether manifest GETs to this upstream must wait (rate limit); HEADs are never paused. */
  readonly getsPaused?: (upstream: string) => boolean
  /** Which registries hold which manifests: a cached one is served only through those. */
  readonly scopes: ContentScopes
}

/** What a HEAD for a tag told us. */
interface Resolution {
  readonly digest: string
  readonly mediaType: string
  readonly size: number
  /** Set when resolving needed a GET: the manifest itself. */
  readonly manifest?: StoredManifest
}

/**
 * Manifests by digest (immutable: cached forever) and by tag (resolved with an
 * upstream HEAD, kept for a TTL, then served stale while one background HEAD
 * revalidates, up to a maximum stale age; served stale past that only when
 * the upstream is down or rate-limiting). Concurrent misses share one request.
 */
export class ManifestService {
  private readonly resolving = new SingleFlight<string, Promise<StoredManifest>>()
  private readonly fetching = new SingleFlight<string, Promise<StoredManifest>>()
  private readonly notFound: LRUCache<string, true>
  private readonly now: () => number

  constructor(private readonly store: ManifestStore, private readonly options: ManifestServiceOptions) {
    this.now = options.now ?? Date.now
    this.notFound = new LRUCache<string, true>({ max: 10_000, ttl: Math.max(options.policy.notFoundTtlMs, 1), ttlAutopurge: false })
  }

  async get(target: ManifestTarget): Promise<ManifestAnswer> {
    const digest = parseDigest(target.reference)
    if (digest !== undefined) return this.byDigest(target, digest.value)
    return this.byTag(target)
  }

  private async byDigest(target: ManifestTarget, digest: string): Promise<ManifestAnswer> {
    const cached = await this.store.getManifest(digest)
    if (cached !== undefined) {
      await this.inScope(target, digest)
      return { manifest: cached, cache: 'hit' }
    }
    const pending = this.fetching.get(digest)
    if (pending !== undefined) {
      const manifest = await pending
      await this.inScope(target, digest)
      return { manifest, cache: 'joined' }
    }
    return { manifest: await this.fetchByDigest(target, digest), cache: 'miss' }
  }

  /** Resolves once the target's registry is known to hold the manifest (one HEAD when nobody knows). */
  private inScope(target: ManifestTarget, digest: string): Promise<void> {
    const notFound = (): RegistryError => manifestUnknown({ ...target, reference: digest })
    return this.options.scopes.ensure(target.client.origin, digest, async (): Promise<Confirmation> => {
      const res = await target.client.request({
        method: 'HEAD',
        path: `/v2/${target.repository}/manifests/${digest}`,
        repository: target.repository,
        headers: { accept: MANIFEST_ACCEPT },
      })
      await res.body.dump()
      if (res.status === 200) return 'present'
      if (res.status === 404) return 'absent'
      if (res.status === 401 || res.status === 403) return 'denied'
      throw errorForUpstreamStatus(target.client.name, res.status, res.headers, notFound())
    }, notFound)
  }

  /** This registry holds the manifest (recorded before answering), and so everything it refers to (in the background). */
  private async recordHeld(target: ManifestTarget, manifest: StoredManifest): Promise<void> {
    const registry = target.client.origin
    void this.options.scopes.record(registry, referencedDigests(manifest.bytes))
    await this.options.scopes.record(registry, [manifest.digest])
  }

  private fetchByDigest(target: ManifestTarget, digest: string): Promise<StoredManifest> {
    return this.fetching.run(digest, async () => {
      const res = await this.request(target, 'GET', digest)
      const manifest = await readManifest(target.client.name, res, digest)
      await this.store.putManifest(manifest)
      await this.recordHeld(target, manifest)
      return manifest
    }).value
  }

  private async byTag(target: ManifestTarget): Promise<ManifestAnswer> {
    const upstream = target.client.name
    const key = `${upstream}/${target.repository}:${target.reference}`
    const { tagTtlMs, maxStaleMs } = this.options.policy
    const record = await this.store.getTag(upstream, target.repository, target.reference)
    const cached = record !== undefined ? await this.store.getManifest(record.digest) : undefined
    if (record !== undefined && cached !== undefined) {
      const age = this.now() - record.fetchedAt
      if (age < tagTtlMs) return { manifest: cached, cache: 'hit' }
      if (age < maxStaleMs) {
        // Stale-while-revalidate: answer now, refresh once in the background.
        if (this.resolving.get(key) === undefined) {
          this.resolveTag(target, key, record).catch((err: unknown) => {
            // A rate limit is expected to stop revalidation: the stale answer stands, quietly.
            const level = err instanceof RegistryError && err.code === 'TOOMANYREQUESTS' ? 'debug' : 'warn'
            this.options.log[level]({ upstream, repository: target.repository, tag: target.reference, err }, 'background tag revalidation failed')
          })
        }
        return { manifest: cached, cache: 'stale' }
      }
    }
    if (record === undefined && this.notFound.has(key)) throw manifestUnknown(target)
    const joined = this.resolving.get(key) !== undefined
    try {
      const manifest = await this.resolveTag(target, key, record)
      const cache: CacheResult = joined ? 'joined' : record?.digest === manifest.digest && cached !== undefined ? 'revalidated' : 'miss'
      return { manifest, cache }
    } catch (err) {
      if (cached !== undefined && isUpstreamOutage(err)) {
        this.options.log.warn({ upstream, repository: target.repository, tag: target.reference, digest: cached.digest, reason: (err as Error).message }, 'serving stale tag: upstream unavailable')
        return { manifest: cached, cache: 'stale' }
      }
      throw err
    }
  }

  /**
   * Asks the upstream what a tag points at (one HEAD per tag at a time), makes
   * sure that manifest is stored, and only then records the tag: a tag record
   * never points at a manifest we do not have.
   */
  private resolveTag(target: ManifestTarget, key: string, previous: TagRecord | undefined): Promise<StoredManifest> {
    return this.resolving.run(key, async (): Promise<StoredManifest> => {
      const upstream = target.client.name
      let resolution: Resolution
      try {
        resolution = await this.headTag(target)
      } catch (err) {
        if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') {
          this.notFound.set(key, true)
          if (previous !== undefined) await this.store.deleteTag(upstream, target.repository, target.reference)
        }
        throw err
      }
      this.notFound.delete(key)
      const manifest = resolution.manifest ?? (await this.store.getManifest(resolution.digest)) ?? (await this.fetchByDigest(target, resolution.digest))
      // The tag points there on this registry: it holds that manifest.
      await this.recordHeld(target, manifest)
      await this.store.putTag(upstream, target.repository, target.reference, {
        digest: manifest.digest,
        mediaType: manifest.mediaType,
        size: manifest.bytes.byteLength,
        fetchedAt: this.now(),
      })
      return manifest
    }).value
  }

  private async headTag(target: ManifestTarget): Promise<Resolution> {
    const head = await this.request(target, 'HEAD', target.reference)
    await head.body.dump()
    const digest = header(head, 'docker-content-digest')
    const mediaType = header(head, 'content-type')
    const size = Number(header(head, 'content-length'))
    if (digest !== undefined && parseDigest(digest) !== undefined && mediaType !== undefined && Number.isSafeInteger(size)) {
      return { digest, mediaType, size }
    }
    // Some registries leave the digest off HEAD answers: fetch the tag and hash it ourselves.
    if (this.options.getsPaused?.(target.client.name) === true) {
      throw new RegistryError('TOOMANYREQUESTS', `upstream ${target.client.name} is rate-limiting`)
    }
    const res = await this.request(target, 'GET', target.reference)
    const manifest = await readManifest(target.client.name, res, digest)
    await this.store.putManifest(manifest)
    return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.byteLength, manifest }
  }

  private async request(target: ManifestTarget, method: 'GET' | 'HEAD', reference: string): Promise<UpstreamResponse> {
    if (method === 'GET' && this.options.getsPaused?.(target.client.name) === true) {
      throw new RegistryError('TOOMANYREQUESTS', `upstream ${target.client.name} is rate-limiting; manifest GETs are paused`)
    }
    const res = await target.client.request({
      method,
      path: `/v2/${target.repository}/manifests/${reference}`,
      repository: target.repository,
      headers: { accept: MANIFEST_ACCEPT },
    })
    if (res.status !== 200) {
      await res.body.dump()
      throw errorForUpstreamStatus(target.client.name, res.status, res.headers, manifestUnknown(target))
    }
    return res
  }
}

function header(res: UpstreamResponse, name: string): string | undefined {
  const v = res.headers[name]
  return typeof v === 'string' ? v : undefined
}

function manifestUnknown(target: ManifestTarget): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { detail: { name: target.repository, reference: target.reference } })
}

/**
 * Reads a manifest body (capped), and checks it hashes to the digest it was
 * asked by, or to the one the upstream announced. Never re-serializes.
 */
async function readManifest(upstream: string, res: UpstreamResponse, expected: string | undefined): Promise<StoredManifest> {
  const declared = Number(header(res, 'content-length'))
  if (Number.isFinite(declared) && declared > MAX_MANIFEST_BYTES) {
    res.body.destroy()
    throw new RegistryError('UPSTREAM_ERROR', `manifest from ${upstream} is larger than ${MAX_MANIFEST_BYTES} bytes`)
  }
  const chunks: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      total += chunk.byteLength
      if (total > MAX_MANIFEST_BYTES) throw new RegistryError('UPSTREAM_ERROR', `manifest from ${upstream} is larger than ${MAX_MANIFEST_BYTES} bytes`)
      chunks.push(chunk)
    }
  } catch (err) {
    res.body.destroy()
    if (err instanceof RegistryError) throw err
    throw new RegistryError('UPSTREAM_ERROR', `manifest transfer from ${upstream} failed`, { cause: err })
  }
  const bytes = Buffer.concat(chunks, total)
  const mediaType = (header(res, 'content-type') ?? '').split(';')[0]?.trim() || mediaTypeFromBody(bytes)
  const algorithm = expected !== undefined ? (parseDigest(expected)?.algorithm ?? 'sha256') : 'sha256'
  const digest = digestOf(bytes, algorithm)
  if (expected !== undefined && digest !== expected) {
    throw new RegistryError('UPSTREAM_ERROR', `manifest from ${upstream} does not match its digest`, { detail: { expected, actual: digest } })
  }
  return { digest, mediaType, bytes }
}

function mediaTypeFromBody(bytes: Buffer): string {
  try {
    const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType
    if (typeof mt === 'string') return mt
  } catch {
    // fall through
  }
  return 'application/vnd.oci.image.manifest.v1+json'
}
