import { randomUUID } from 'node:crypto'
import { BusyError } from '../limits/slots.js'
import { RegistryError } from '../oci/errors.js'
import { parseImageReference } from '../oci/reference.js'
import { ImageWarm, type ImageStatus, type WarmDeps } from './warm-image.js'

export type JobState = 'queued' | 'running' | 'done' | 'failed'

/** Prefetches asked for by a client are `normal`; re-warming what already runs in a cluster is `low`. */
export type JobPriority = 'normal' | 'low'

export interface JobRequest {
  readonly images: readonly string[]
  /** Default: prefetch.platforms. */
  readonly platforms?: readonly string[]
  readonly priority?: JobPriority
}

/** A job as `GET /api/v1/prefetch/{id}` shows it. */
export interface JobStatus {
  readonly id: string
  readonly state: JobState
  readonly createdAt: string
  readonly finishedAt?: string
  readonly platforms: readonly string[]
  readonly images: readonly ImageStatus[]
}

export interface JobsOptions {
  readonly maxJobs: number
  readonly maxImagesPerJob: number
  readonly imageConcurrency: number
  readonly platforms: readonly string[]
  /** Told when an image of a job has ended, however. */
  readonly onImage?: (status: ImageStatus, seconds: number) => void
}

export class Job {
  readonly id = randomUUID()
  readonly createdAt = new Date()
  finishedAt: Date | undefined
  /** Resolves with the final status once every image has ended; never rejects. */
  readonly done: Promise<JobStatus>
  private resolveDone!: (status: JobStatus) => void

  constructor(readonly images: readonly ImageWarm[], readonly platforms: readonly string[], readonly priority: JobPriority) {
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve
    })
  }

  get state(): JobState {
    if (this.images.every((i) => i.finished)) return this.images.some((i) => i.state !== 'done') ? 'failed' : 'done'
    return this.images.some((i) => i.state !== 'queued') ? 'running' : 'queued'
  }

  status(): JobStatus {
    return {
      id: this.id,
      state: this.state,
      createdAt: this.createdAt.toISOString(),
      ...(this.finishedAt !== undefined ? { finishedAt: this.finishedAt.toISOString() } : {}),
      platforms: this.platforms,
      images: this.images.map((i) => i.status()),
    }
  }

  /** Called after each image ends. */
  settle(): void {
    if (this.finishedAt !== undefined || !this.images.every((i) => i.finished)) return
    this.finishedAt = new Date()
    this.resolveDone(this.status())
  }
}

/**
 * Prefetch jobs, in memory only: a restart forgets them (the blobs they
 * fetched stay cached). Bounded in number (the oldest finished go first)
 * and in images per job; images run a few at a time over all jobs,
 * client-asked ones before low-priority re-warming.
 */
export class PrefetchJobs {
  private readonly jobs = new Map<string, Job>()
  private readonly queues: Record<JobPriority, Array<{ job: Job; image: ImageWarm }>> = { normal: [], low: [] }
  private running = 0
  private stopped = false

  constructor(private readonly deps: WarmDeps, private readonly options: JobsOptions) {}

  /** Starts a job; throws 400 for too many images, 503 when every kept job is still running. */
  submit(request: JobRequest): Job {
    if (this.stopped) throw new RegistryError('UNAVAILABLE', 'shutting down')
    const { maxImagesPerJob, maxJobs } = this.options
    if (request.images.length > maxImagesPerJob) {
      throw new RegistryError('UNSUPPORTED', `a prefetch job takes at most ${maxImagesPerJob} images (prefetch.maxImagesPerJob)`, { status: 400, detail: { images: request.images.length } })
    }
    // Re-warming what already runs may hold at most half the jobs: clients' prefetches always find room.
    if (request.priority === 'low' && [...this.jobs.values()].filter((j) => j.priority === 'low' && j.finishedAt === undefined).length >= Math.max(1, Math.floor(maxJobs / 2))) {
      throw new BusyError('UNAVAILABLE', 'too many low-priority prefetch jobs running; try again later', { headers: { 'retry-after': '10' }, detail: { limit: 'prefetch.maxJobs', capacity: maxJobs } })
    }
    if (this.jobs.size >= maxJobs) {
      const oldestFinished = [...this.jobs.values()].find((j) => j.finishedAt !== undefined)
      if (oldestFinished === undefined) {
        throw new BusyError('UNAVAILABLE', `too many prefetch jobs running (prefetch.maxJobs ${maxJobs}); try again later`, { headers: { 'retry-after': '10' }, detail: { limit: 'prefetch.maxJobs', capacity: maxJobs } })
      }
      this.jobs.delete(oldestFinished.id)
    }
    const platforms = request.platforms !== undefined && request.platforms.length > 0 ? [...new Set(request.platforms)] : this.options.platforms
    const images = request.images.map((text) => new ImageWarm(text, parseImageReference(text), platforms))
    const job = new Job(images, platforms, request.priority ?? 'normal')
    this.jobs.set(job.id, job)
    const queue = this.queues[job.priority]
    for (const image of images) {
      if (!image.finished) queue.push({ job, image })
      else this.options.onImage?.(image.status(), 0)
    }
    job.settle()
    this.pump()
    return job
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id)
  }

  /** Shutdown: queued images fail at once (their jobs settle), running ones start no further blob. */
  stop(): void {
    this.stopped = true
    for (const queue of Object.values(this.queues)) queue.length = 0
    for (const job of this.jobs.values()) {
      for (const image of job.images) image.cancel('the mirror is shutting down')
      job.settle()
    }
  }

  private pump(): void {
    while (!this.stopped && this.running < this.options.imageConcurrency) {
      const next = this.queues.normal.shift() ?? this.queues.low.shift()
      if (next === undefined) return
      this.running++
      const started = process.hrtime.bigint()
      void next.image.run(this.deps).then(() => {
        this.running--
        const status = next.image.status()
        this.options.onImage?.(status, Number(process.hrtime.bigint() - started) / 1e9)
        next.job.settle()
        this.pump()
      })
    }
  }
}
