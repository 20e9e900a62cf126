// Warming the cache before pulls ask: prefetch jobs, pre-warming from the
// Kubernetes API, and the list nodes pre-pull. All off or empty by default.
import { Type, type StaticDecode } from '@sinclair/typebox'
import { parseImageReference } from '../oci/reference.js'
import { Invalid } from './errors.js'
import { Bool, Int, List, Pattern, Text } from './fields.js'

/** `os/architecture[/variant]` as OCI image indexes name platforms: `linux/amd64`, `linux/arm/v7`. */
export const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/
const Platform = Pattern(PLATFORM, 'must be a platform such as "linux/amd64" or "linux/arm/v7"')
const NAMESPACE = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/
const Namespaces = List(Pattern(NAMESPACE, 'must be a Kubernetes namespace name'), 'must be a non-empty list of namespaces')

export const Prefetch = Type.Transform(Type.Object({
  platforms: Type.Array(Platform, { minItems: 1, default: ['linux/amd64', 'linux/arm64'], problem: 'must be a non-empty list of platforms' }),
  // Jobs live in memory only: the finished ones beyond this are forgotten, oldest first.
  maxJobs: Int(1, 10_000, { default: 100 }),
  maxImagesPerJob: Int(1, 10_000, { default: 256 }),
  // Images worked on at once, over all jobs; their blobs then share `blobs`.
  images: Int(1, 1_000, { default: 8 }),
  // Blobs fetched at once by prefetches; unset: what the fill limit leaves background work.
  blobs: Type.Optional(Int(1, 10_000)),
}, { additionalProperties: false, default: {} })).Decode((p) => ({
  /** Platforms an index is expanded to when a job names none. */
  platforms: p.platforms,
  maxJobs: p.maxJobs,
  maxImagesPerJob: p.maxImagesPerJob,
  /** Images resolved and fetched at once, over all jobs. */
  imageConcurrency: p.images,
  /** Blobs fetched at once by prefetches; undefined: limits.fills - limits.fillsReservedForPulls. */
  ...(p.blobs !== undefined ? { blobConcurrency: p.blobs as number | undefined } : {}),
})).Encode((p) => ({ platforms: p.platforms, maxJobs: p.maxJobs, maxImagesPerJob: p.maxImagesPerJob, images: p.imageConcurrency, ...(p.blobConcurrency !== undefined ? { blobs: p.blobConcurrency } : {}) }))

const Kubernetes = Type.Object({
  enabled: Bool(false),
  /** Credentials from this file; in-cluster (the pod's service account) when unset. */
  kubeconfig: Type.Optional(Text()),
  /** After the first sync, prefetch the images of the workloads already there. */
  existing: Bool(true),
  namespaces: Type.Optional(Namespaces),
  excludeNamespaces: Type.Optional(Namespaces),
}, { additionalProperties: false, default: {} })

export const Prewarm = Type.Object({
  kubernetes: Kubernetes,
}, { additionalProperties: false, default: {} })

export const Prepull = Type.Transform(Type.Object({
  /** Images every node pre-pulls (`stevedore prepull`), besides annotated workloads'. */
  images: Type.Array(Text(), { default: [], problem: 'must be a list of image references' }),
}, { additionalProperties: false, default: {} })).Decode((p) => {
  const bad = p.images.find((i) => parseImageReference(i) === undefined)
  if (bad !== undefined) throw new Invalid('images', `${JSON.stringify(bad)} is not an image reference`)
  return p
}).Encode((p) => p)

export type PrefetchConfig = Readonly<StaticDecode<typeof Prefetch>>
export type PrewarmConfig = Readonly<StaticDecode<typeof Prewarm>>
export type PrepullConfig = Readonly<StaticDecode<typeof Prepull>>
