// Per-image aggregates: how often an image is pulled, how long its pulls
// take, and what it is made of. Bounded: past maxImages the least recently
// pulled image is forgotten.
import { DurationSamples, roundSeconds } from './samples.js'
import type { ImageInsight, KubeletPull, LayerInsight, LayerRef, PullRecord } from './types.js'

export interface ImageIdentity {
  readonly image: string
  readonly upstream: string
  readonly repository: string
  readonly tag?: string | undefined
}

/** What is kept of an image; also its persisted form. */
export interface ImageState extends ImageIdentity {
  digest: string
  platforms: string[]
  pulls: number
  resolves: number
  cold: number
  warm: number
  partial: number
  failed: number
  coldSeconds: DurationSamples
  warmSeconds: DurationSamples
  /** Config and layers of `digest`. */
  configSize: number
  layers: LayerRef[]
  lastPulled: number
  pullSeconds: number
  kubelet: { pulls: number; pull: DurationSamples; waiting: DurationSamples } | undefined
}

/** An image's name: `<upstream>/<repository>:<tag>`, or `@<digest>` without a tag. */
export const imageName = (upstream: string, repository: string, tag: string | undefined, digest: string): string =>
  `${upstream}/${repository}${tag !== undefined ? `:${tag}` : `@${digest}`}`

export class ImageTable {
  // Insertion order is recency: the first entry is the least recently pulled.
  private readonly images = new Map<string, ImageState>()
  // Who has which layer, rebuilt only after the layers known changed: the API and the status page ask often.
  private owners: Map<string, Set<string>> | undefined

  constructor(private readonly maxImages: number) {}

  get size(): number {
    return this.images.size
  }

  pulled(p: PullRecord, layers: readonly LayerRef[], configSize: number, at: number): void {
    const s = this.touch(p, p.digest, at)
    s.pulls++
    s[p.cache]++
    if (p.result === 'failed') s.failed++
    if (p.redirected !== true) {
      ;(p.cache === 'warm' ? s.warmSeconds : s.coldSeconds).add(p.seconds)
      s.pullSeconds += p.seconds
    }
    s.lastPulled = at
    this.describe(s, p.digest, layers, configSize)
    if (p.platform !== undefined && !s.platforms.includes(p.platform)) s.platforms.push(p.platform)
  }

  resolved(id: ImageIdentity, digest: string, layers: readonly LayerRef[] | undefined, configSize: number, at: number): void {
    const s = this.touch(id, digest, at)
    s.resolves++
    // What a resolve saw describes the image only until a pull does.
    if (layers !== undefined && s.pulls === 0) this.describe(s, digest, layers, configSize)
  }

  kubeletPulled(id: ImageIdentity, pull: KubeletPull): void {
    const s = this.touch(id, '', pull.at.getTime())
    s.kubelet ??= { pulls: 0, pull: new DurationSamples(), waiting: new DurationSamples() }
    s.kubelet.pulls++
    s.kubelet.pull.add(pull.pullSeconds)
    s.kubelet.waiting.add(pull.includingWaitingSeconds)
  }

  /** By pullSeconds, highest first. */
  top(limit: number): ImageInsight[] {
    const owners = this.layerOwners()
    return [...this.images.values()]
      .sort((a, b) => b.pullSeconds - a.pullSeconds || b.lastPulled - a.lastPulled)
      .slice(0, limit)
      .map((s) => insightOf(s, owners))
  }

  /** Largest first, with every image (known here) that has the layer. */
  largestLayers(limit: number): LayerInsight[] {
    const owners = this.layerOwners()
    const sizes = new Map<string, number>()
    for (const s of this.images.values()) for (const l of s.layers) sizes.set(l.digest, l.size)
    return [...sizes.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([digest, size]) => ({ digest, size, images: [...(owners.get(digest) ?? [])] }))
  }

  states(): IterableIterator<ImageState> {
    return this.images.values()
  }

  restore(states: readonly ImageState[]): void {
    for (const s of [...states].sort((a, b) => a.lastPulled - b.lastPulled)) this.insert(s)
  }

  private touch(id: ImageIdentity, digest: string, at: number): ImageState {
    let s = this.images.get(id.image)
    if (s !== undefined) {
      this.images.delete(id.image)
      this.images.set(id.image, s)
      return s
    }
    s = {
      image: id.image, upstream: id.upstream, repository: id.repository, ...(id.tag !== undefined ? { tag: id.tag } : {}),
      digest, platforms: [], pulls: 0, resolves: 0, cold: 0, warm: 0, partial: 0, failed: 0,
      coldSeconds: new DurationSamples(), warmSeconds: new DurationSamples(),
      configSize: 0, layers: [], lastPulled: at, pullSeconds: 0, kubelet: undefined,
    }
    this.insert(s)
    return s
  }

  private insert(s: ImageState): void {
    this.images.delete(s.image)
    this.images.set(s.image, s)
    while (this.images.size > this.maxImages) this.images.delete(this.victim(s.image))
    this.owners = undefined
  }

  /** What to forget: the least recently seen image never pulled through here (a tag scanner's, a kubelet-only one), else the least recently pulled. */
  private victim(inserted: string): string {
    let looked = 0
    for (const s of this.images.values()) {
      if (s.pulls === 0 && s.image !== inserted) return s.image
      if (++looked >= 256) break
    }
    return this.images.keys().next().value as string
  }

  private describe(s: ImageState, digest: string, layers: readonly LayerRef[], configSize: number): void {
    if (s.digest !== digest || s.layers.length !== layers.length) this.owners = undefined
    s.digest = digest
    s.layers = [...layers]
    s.configSize = configSize
  }

  private layerOwners(): Map<string, Set<string>> {
    if (this.owners !== undefined) return this.owners
    const owners = new Map<string, Set<string>>()
    for (const s of this.images.values()) {
      for (const l of s.layers) {
        let set = owners.get(l.digest)
        if (set === undefined) owners.set(l.digest, (set = new Set()))
        set.add(s.image)
      }
    }
    this.owners = owners
    return owners
  }
}

function insightOf(s: ImageState, owners: ReadonlyMap<string, ReadonlySet<string>>): ImageInsight {
  const largest = s.layers.reduce<LayerRef | undefined>((m, l) => (m === undefined || l.size > m.size ? l : m), undefined)
  const unique = s.layers.filter((l) => (owners.get(l.digest)?.size ?? 0) <= 1).reduce((n, l) => n + l.size, 0)
  return {
    image: s.image,
    upstream: s.upstream,
    repository: s.repository,
    ...(s.tag !== undefined ? { tag: s.tag } : {}),
    digest: s.digest,
    platforms: [...s.platforms],
    pulls: s.pulls,
    resolves: s.resolves,
    cold: s.cold,
    warm: s.warm,
    partial: s.partial,
    failed: s.failed,
    coldSeconds: s.coldSeconds.stats(),
    warmSeconds: s.warmSeconds.stats(),
    size: s.configSize + s.layers.reduce((n, l) => n + l.size, 0),
    layerCount: s.layers.length,
    ...(largest !== undefined ? { largestLayer: largest } : {}),
    uniqueBytes: unique,
    layers: s.layers,
    lastPulled: new Date(s.lastPulled).toISOString(),
    pullSeconds: roundSeconds(s.pullSeconds),
    ...(s.kubelet !== undefined ? { kubelet: { pulls: s.kubelet.pulls, pullSeconds: s.kubelet.pull.stats(), includingWaitingSeconds: s.kubelet.waiting.stats() } } : {}),
  }
}
