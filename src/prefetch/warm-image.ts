import { BusyError, type Slots } from '../limits/slots.js'
import type { ImageReference } from '../oci/reference.js'
import type { BlobTarget, Warming } from '../cache/blobs.js'
import type { ManifestTarget } from '../cache/manifests.js'
import type { UpstreamClient } from '../upstream/client.js'
import { parseManifest, pickPlatform, platformOfConfig, type Descriptor } from '../oci/image-manifest.js'

/** What warming an image needs of the mirror: routing, manifests and blob fills, nothing more. */
export interface WarmDeps {
  /** The upstream and repository a pull of this image goes to; throws (DENIED) for a registry not mirrored. */
  route(ref: ImageReference): { readonly client: UpstreamClient; readonly repository: string }
  manifest(target: ManifestTarget): Promise<{ readonly digest: string; readonly mediaType: string; readonly bytes: Buffer }>
  warmBlob(target: BlobTarget): Promise<Warming>
  /** A small stored blob's bytes (an image config), undefined when it cannot be read. */
  readSmallBlob(digest: string): Promise<Buffer | undefined>
  /** Blobs fetched at once by all prefetches. */
  readonly blobSlots: Slots
  readonly sleep?: (ms: number) => Promise<void>
}

export type ImageState = 'queued' | 'running' | 'done' | 'failed' | 'refused'

export interface LayerFailure {
  readonly digest: string
  readonly reason: string
}

/** One image of a job, as `GET /api/v1/prefetch/{id}` shows it. */
export interface ImageStatus {
  /** As the job named it. */
  readonly image: string
  /** Normalised (`docker.io/library/nginx:latest`). */
  readonly reference: string
  readonly state: ImageState
  /** What the reference resolved to: an index or a manifest. */
  readonly digest?: string
  /** The platforms fetched (of those asked for). */
  readonly platforms: readonly string[]
  /** Blobs of the image (each platform's config and layers, once per digest). */
  readonly layers: { readonly total: number; readonly cached: number; readonly fetched: number; readonly failed: number }
  readonly bytes: { readonly total: number; readonly cached: number; readonly fetched: number }
  readonly failures: readonly LayerFailure[]
  /** Why the image failed or was refused. */
  readonly error?: string
}

// A fill queue that is full is live pulls' doing: back off and try again, a while.
const BUSY_RETRIES = 8
const BUSY_BACKOFF_MS = 1000
const MAX_CONFIG_BYTES = 1024 * 1024

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref())

const reasonOf = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** One image's prefetch: resolve, expand to platforms, then every config and layer at once (bounded by blobSlots). */
export class ImageWarm {
  state: ImageState = 'queued'
  private digest: string | undefined
  private platforms: string[] = []
  private blobs: Descriptor[] = []
  private cached = 0
  private cachedBytes = 0
  private fetched = 0
  private fetchedBytes = 0
  private readonly failures: LayerFailure[] = []
  private readonly inFlight = new Set<Warming>()
  private error: string | undefined
  private cancelled: string | undefined

  constructor(readonly image: string, readonly ref: ImageReference | undefined, private readonly wanted: readonly string[]) {
    if (ref === undefined) {
      this.state = 'refused'
      this.error = 'not an image reference'
    }
  }

  /**
   * Shutdown: a queued image ends now, failed; a running one starts no
   * further blob (those under way are the mirror's fills, drained or cut by
   * shutdown) and fails once they have ended.
   */
  cancel(reason: string): void {
    this.cancelled = reason
    if (this.state === 'queued') {
      this.state = 'failed'
      this.error = reason
    }
  }

  get finished(): boolean {
    return this.state === 'done' || this.state === 'failed' || this.state === 'refused'
  }

  /** Warms the image; never rejects: what went wrong is in the status. */
  async run(deps: WarmDeps): Promise<void> {
    const ref = this.ref
    if (ref === undefined || this.finished) return
    let route: ReturnType<WarmDeps['route']>
    try {
      route = deps.route(ref)
    } catch (err) {
      this.state = 'refused'
      this.error = reasonOf(err)
      return
    }
    this.state = 'running'
    try {
      await this.resolve(deps, route, ref)
      await Promise.all(this.blobs.map((b) => this.warmOne(deps, route, b)))
      if (this.platforms.length === 0) await this.platformFromConfig(deps)
      this.state = this.failures.length > 0 ? 'failed' : 'done'
      if (this.failures.length > 0) this.error = `${this.failures.length} of ${this.blobs.length} blobs failed`
    } catch (err) {
      this.state = 'failed'
      this.error = reasonOf(err)
    }
  }

  status(): ImageStatus {
    let live = 0
    for (const w of this.inFlight) live += w.bytes()
    return {
      image: this.image,
      reference: this.ref?.text ?? this.image,
      state: this.state,
      ...(this.digest !== undefined ? { digest: this.digest } : {}),
      platforms: this.platforms,
      layers: { total: this.blobs.length, cached: this.cached, fetched: this.fetched, failed: this.failures.length },
      bytes: { total: this.blobs.reduce((n, b) => n + b.size, 0), cached: this.cachedBytes, fetched: this.fetchedBytes + live },
      failures: this.failures,
      ...(this.error !== undefined ? { error: this.error } : {}),
    }
  }

  /** The manifest, and for an index each wanted platform's: their configs and layers, once per digest. */
  private async resolve(deps: WarmDeps, route: ReturnType<WarmDeps['route']>, ref: ImageReference): Promise<void> {
    const top = await deps.manifest({ ...route, reference: ref.pullReference })
    this.digest = top.digest
    const parsed = parseManifest(top.mediaType, top.bytes)
    const images: Array<{ config: Descriptor; layers: readonly Descriptor[] }> = []
    if (parsed.kind === 'image') {
      images.push(parsed)
    } else {
      const picked = this.wanted.map((p) => pickPlatform(parsed.entries, p)).filter((e) => e !== undefined)
      const unique = [...new Map(picked.map((e) => [e.digest, e])).values()]
      if (unique.length === 0) {
        const has = [...new Set(parsed.entries.map((e) => e.platform))].join(', ') || 'none'
        throw new Error(`no manifest for ${this.wanted.join(', ')} (the index has: ${has})`)
      }
      for (const entry of unique) {
        const manifest = await deps.manifest({ ...route, reference: entry.digest })
        const child = parseManifest(manifest.mediaType, manifest.bytes)
        if (child.kind !== 'image') throw new Error(`the index entry for ${entry.platform} is not an image manifest`)
        images.push(child)
        this.platforms.push(entry.platform)
      }
    }
    const blobs = new Map<string, Descriptor>()
    for (const image of images) for (const d of [image.config, ...image.layers]) if (!blobs.has(d.digest)) blobs.set(d.digest, d)
    this.blobs = [...blobs.values()]
  }

  private async warmOne(deps: WarmDeps, route: ReturnType<WarmDeps['route']>, blob: Descriptor): Promise<void> {
    const sleep = deps.sleep ?? defaultSleep
    const release = await deps.blobSlots.acquire('background')
    try {
      for (let attempt = 0; ; attempt++) {
        if (this.cancelled !== undefined) throw new Error(this.cancelled)
        let warming: Warming
        try {
          warming = await deps.warmBlob({ ...route, digest: blob.digest })
        } catch (err) {
          if (err instanceof BusyError && attempt < BUSY_RETRIES) {
            await sleep(BUSY_BACKOFF_MS * 2 ** Math.min(attempt, 3))
            continue
          }
          throw err
        }
        const size = warming.size ?? blob.size
        if (warming.cache === 'hit') {
          this.cached++
          this.cachedBytes += size
          return
        }
        this.inFlight.add(warming)
        try {
          await warming.done
        } finally {
          this.inFlight.delete(warming)
        }
        this.fetched++
        this.fetchedBytes += size
        return
      }
    } catch (err) {
      this.failures.push({ digest: blob.digest, reason: reasonOf(err) })
    } finally {
      release()
    }
  }

  /** A single-platform image names its platform only in its config. */
  private async platformFromConfig(deps: WarmDeps): Promise<void> {
    const config = this.blobs[0]
    if (config === undefined || config.size > MAX_CONFIG_BYTES || this.failures.some((f) => f.digest === config.digest)) return
    const bytes = await deps.readSmallBlob(config.digest).catch(() => undefined)
    const platform = bytes !== undefined ? platformOfConfig(bytes) : undefined
    if (platform !== undefined) this.platforms.push(platform)
  }
}
