import type { Logger } from 'pino'
import type { PrewarmConfig } from '../config/schema.js'
import type { KubeletPull } from '../insights/types.js'
import type { Metrics } from '../observability/metrics.js'
import type { JobRequest, JobStatus } from '../prefetch/jobs.js'

/** What pre-warming needs of the mirror: a way to prefetch, and whether a registry is mirrored. */
export interface PrewarmDeps {
  readonly config: PrewarmConfig['kubernetes']
  /** Starts a prefetch job; resolves with its final status. */
  prefetch(request: JobRequest): Promise<JobStatus>
  /** True when a pull of this image reference would go through the mirror (its registry is an upstream, its repository allowed). */
  mirrors(image: string): boolean
  /** prefetch.maxImagesPerJob: no job is submitted with more images. */
  readonly maxImagesPerJob: number
  readonly metrics: Metrics
  readonly log: Logger
  /** Each pull a kubelet reports in a Pulled event, once (kubelets 1.26 and later: the ones that time the pull apart from the queueing). */
  readonly onKubeletPull?: (pull: KubeletPull) => void
}

/** A running pre-warmer. */
export interface Prewarmer {
  /** Images of workloads annotated `stevedore.io/prepull: "true"`, now. */
  prepullImages(): readonly string[]
  /** The name of the Node with this InternalIP address, undefined when none is known. */
  nodeOf(address: string): string | undefined
  /** Stops watching; resolves once every watch has ended. */
  stop(): Promise<void>
}
