// Turns new image references into prefetch jobs, and their outcome into a log
// line and metrics per image.
import type { Logger } from 'pino'
import type { Metrics } from '../observability/metrics.js'
import { parseImageReference } from '../oci/reference.js'
import type { JobPriority, JobRequest, JobStatus } from '../prefetch/jobs.js'

export interface PrewarmsDeps {
  prefetch(request: JobRequest): Promise<JobStatus>
  mirrors(image: string): boolean
  /** prefetch.maxImagesPerJob: no job is submitted with more images. */
  readonly maxImagesPerJob: number
  /** The platforms to fetch for; empty: the job leaves them to prefetch.platforms. */
  platforms(): readonly string[]
  readonly metrics: Metrics
  readonly log: Logger
}

// Existing workloads' images go in jobs of at most this many (or of prefetch.maxImagesPerJob, when smaller).
export const EXISTING_BATCH = 200
// Images being pre-warmed at once are remembered (so a burst of changes naming
// one image submits it once) up to this many; beyond it they are not deduplicated.
const MAX_IN_FLIGHT = 10_000

/** Pre-warms: one job per change, deduplicated against the ones running. */
export class Prewarms {
  private readonly inFlight = new Set<string>()
  private stopped = false
  /** Settles when every job submitted so far has ended (tests). */
  private readonly pending = new Set<Promise<void>>()

  constructor(private readonly deps: PrewarmsDeps) {}

  /** A workload now names `images`, which it did not before; the change was seen at `seenAt` (performance.now()). */
  changed(workload: string, images: readonly string[], seenAt: number): void {
    const wanted = this.select(workload, images)
    const size = this.deps.maxImagesPerJob
    for (let i = 0; i < wanted.length; i += size) this.submit(wanted.slice(i, i + size), 'normal', { workload, seenAt })
  }

  /** The images of the workloads that were there at the first sync, in low-priority jobs of at most EXISTING_BATCH. */
  existing(images: readonly string[]): void {
    const wanted = this.select('existing workloads', images)
    const size = Math.min(EXISTING_BATCH, this.deps.maxImagesPerJob)
    for (let i = 0; i < wanted.length; i += size) this.submit(wanted.slice(i, i + size), 'low', { workload: 'existing workloads', seenAt: undefined })
  }

  /** No job is submitted after this; those running are the prefetch service's to finish. */
  stop(): void {
    this.stopped = true
  }

  /** Resolves when the jobs submitted so far have ended. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending])
  }

  private select(workload: string, images: readonly string[]): string[] {
    const { metrics, log } = this.deps
    const wanted: string[] = []
    const keys = new Set<string>()
    for (const image of images) {
      if (!this.deps.mirrors(image)) {
        metrics.prewarms.inc({ result: 'ignored' })
        log.debug({ image, workload }, 'pre-warm: not a mirrored registry; ignored')
        continue
      }
      const key = keyOf(image)
      if (this.inFlight.has(key) || keys.has(key)) {
        log.debug({ image, workload }, 'pre-warm: already being pre-warmed')
        continue
      }
      keys.add(key)
      wanted.push(image)
    }
    return wanted
  }

  private submit(images: string[], priority: JobPriority, origin: { workload: string; seenAt: number | undefined }): void {
    if (this.stopped) return
    const { metrics, log } = this.deps
    const keys = images.map(keyOf)
    for (const k of keys) if (this.inFlight.size < MAX_IN_FLIGHT) this.inFlight.add(k)
    const platforms = this.deps.platforms()
    const request: JobRequest = { images, priority, ...(platforms.length > 0 ? { platforms } : {}) }
    const started = performance.now()
    // Through a promise, so that a prefetch that throws at once is handled like one that rejects.
    const job = Promise.resolve().then(() => this.deps.prefetch(request)).then((status) => {
      for (const image of status.images) {
        const warm = image.state === 'done'
        metrics.prewarms.inc({ result: warm ? 'warm' : 'failed' })
        const seconds = (performance.now() - (origin.seenAt ?? started)) / 1000
        // The histogram is about changes: the images already running at start-up were not waited for.
        if (warm && origin.seenAt !== undefined) metrics.prewarmSeconds.observe(seconds)
        const line = {
          image: image.image,
          workload: origin.workload,
          result: warm ? 'warm' : 'failed',
          seconds: Math.round(seconds * 1000) / 1000,
          job: status.id,
          priority,
          platforms: image.platforms,
          layers: image.layers,
          ...(image.error !== undefined ? { error: image.error } : {}),
        }
        if (warm) log.info(line, 'pre-warmed')
        else log.warn(line, 'pre-warm failed')
      }
    }, (err: unknown) => {
      // The prefetch waited for room and storage (submitPatiently) and gave up, or the mirror is stopping.
      metrics.prewarms.inc({ result: 'failed' }, images.length)
      log.warn({ err, workload: origin.workload, images: images.slice(0, 20), count: images.length }, 'pre-warm: the prefetch job was refused')
    }).finally(() => {
      for (const k of keys) this.inFlight.delete(k)
      this.pending.delete(job)
    })
    this.pending.add(job)
  }
}

/** One key for the spellings of one image (`nginx`, `docker.io/library/nginx:latest`). */
const keyOf = (image: string): string => parseImageReference(image)?.text ?? image
