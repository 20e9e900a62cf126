// Size advice from what the mirror saw, on the premise that smaller images
// pull faster: a layer that is most of its image, images that share nothing,
// and what one shared base would spare a node.
import type { ImageInsight, LayerRef } from '../types.js'

/** An image one layer of which is more than half of its size. */
export interface DominantLayer {
  readonly image: string
  /** The image's compressed size (config and layers). */
  readonly size: number
  readonly layer: LayerRef
  /** layer.size / size, 0..1. */
  readonly share: number
  /** Images of the report that list the layer, this one included: a shared layer is pulled once per node. */
  readonly sharedBy: number
}

/** An image that has no layer in common with any other image of the report. */
export interface LoneImage {
  readonly image: string
  readonly size: number
  readonly layerCount: number
  /** Its first (base) layer. */
  readonly bottomLayer: LayerRef
}

/**
 * An estimate: if the lone images were built on one base, a node pulling all
 * of them would pull that base once. Their bottom layers stand for their
 * bases: estimatedSavedBytes = bottomLayersBytes - largestBottomLayer.
 */
export interface SharedBaseEstimate {
  readonly images: readonly string[]
  /** The sum of their bottom layers' sizes. */
  readonly bottomLayersBytes: number
  /** The largest of those bottom layers: the one base a node would still pull. */
  readonly largestBottomLayer: number
  readonly estimatedSavedBytes: number
}

export interface SizeAdvice {
  /** Share above which a single layer is "most of the image". */
  readonly dominantShare: number
  /** Largest layer first. */
  readonly dominantLayers: readonly DominantLayer[]
  /** Largest image first. */
  readonly loneImages: readonly LoneImage[]
  /** Null with fewer than two lone images. */
  readonly sharedBase: SharedBaseEstimate | null
}

export const DOMINANT_SHARE = 0.5

function largestLayer(i: ImageInsight): LayerRef | undefined {
  return i.layers.reduce<LayerRef | undefined>((a, l) => (a === undefined || l.size > a.size ? l : a), i.largestLayer)
}

/** The advice for a set of images (the merged report's); images whose layers are unknown are left out. */
export function sizeAdvice(images: readonly ImageInsight[]): SizeAdvice {
  const known = images.filter((i) => i.layers.length > 0 && i.size > 0)
  const holders = new Map<string, Set<string>>()
  for (const i of known) {
    for (const l of i.layers) {
      const set = holders.get(l.digest) ?? new Set<string>()
      set.add(i.image)
      holders.set(l.digest, set)
    }
  }

  const dominantLayers = known.flatMap((i): DominantLayer[] => {
    const layer = largestLayer(i)
    if (layer === undefined || layer.size / i.size <= DOMINANT_SHARE) return []
    return [{ image: i.image, size: i.size, layer: { digest: layer.digest, size: layer.size }, share: layer.size / i.size, sharedBy: holders.get(layer.digest)?.size ?? 1 }]
  }).sort((a, b) => b.layer.size - a.layer.size || a.image.localeCompare(b.image))

  const loneImages = known
    .filter((i) => i.layers.every((l) => holders.get(l.digest)?.size === 1))
    .map((i): LoneImage => {
      const bottom = i.layers[0] as LayerRef
      return { image: i.image, size: i.size, layerCount: i.layers.length, bottomLayer: { digest: bottom.digest, size: bottom.size } }
    })
    .sort((a, b) => b.size - a.size || a.image.localeCompare(b.image))

  let sharedBase: SharedBaseEstimate | null = null
  if (loneImages.length >= 2) {
    const bottoms = loneImages.map((i) => i.bottomLayer.size)
    const bottomLayersBytes = bottoms.reduce((a, b) => a + b, 0)
    const largestBottomLayer = Math.max(...bottoms)
    sharedBase = { images: loneImages.map((i) => i.image), bottomLayersBytes, largestBottomLayer, estimatedSavedBytes: bottomLayersBytes - largestBottomLayer }
  }
  return { dominantShare: DOMINANT_SHARE, dominantLayers, loneImages, sharedBase }
}
