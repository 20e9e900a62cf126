import { Slots } from '../limits/slots.js'
import { MAX_TIMER_MS } from '../config/fields.js'
import type { Mirror } from '../mirror.js'
import { readSmallBlob } from '../storage/small-blob.js'
import type { UpstreamClient } from '../upstream/client.js'
import { PrefetchJobs } from './jobs.js'
import type { WarmDeps } from './warm-image.js'

const MAX_CONFIG_BYTES = 1024 * 1024

/** The prefetch jobs of a mirror, using its routing, manifests and fills: the same paths a pull takes. */
export function createPrefetchJobs(mirror: Mirror): PrefetchJobs {
  const { config, metrics } = mirror
  const { limits, prefetch } = config
  const blobSlots = new Slots({
    what: 'prefetched blobs',
    key: 'prefetch.blobs',
    capacity: prefetch.blobConcurrency ?? limits.fills - limits.fillsReservedForPulls,
    // Bounded by the jobs' own bounds (jobs × images × blobs); a wait here is a queue, not a failure.
    queue: Number.MAX_SAFE_INTEGER,
    timeoutMs: MAX_TIMER_MS,
  })
  const deps: WarmDeps = {
    route: (ref) => {
      const route = mirror.router.route(ref.repository, ref.registry)
      return { client: mirror.clients.get(route.upstream.name) as UpstreamClient, repository: route.repository }
    },
    manifest: async (target) => (await mirror.manifests.get(target)).manifest,
    warmBlob: (target) => mirror.blobs.warm(target, 'background'),
    readSmallBlob: (digest) => readSmallBlob(mirror.store, digest, MAX_CONFIG_BYTES),
    blobSlots,
  }
  return new PrefetchJobs(deps, {
    maxJobs: prefetch.maxJobs,
    maxImagesPerJob: prefetch.maxImagesPerJob,
    imageConcurrency: prefetch.imageConcurrency,
    platforms: prefetch.platforms,
    onImage: (status, seconds) => {
      metrics.prefetchImages.inc({ state: status.state })
      metrics.prefetchBlobs.inc({ result: 'cached' }, status.layers.cached)
      metrics.prefetchBlobs.inc({ result: 'fetched' }, status.layers.fetched)
      metrics.prefetchBlobs.inc({ result: 'failed' }, status.layers.failed)
      mirror.log.info({ image: status.reference, digest: status.digest, state: status.state, platforms: status.platforms, layers: status.layers, bytes: status.bytes, error: status.error, seconds: Math.round(seconds * 1000) / 1000 }, 'prefetch: image ended')
    },
  })
}
