import { sleep } from '../../lib/abortable-sleep.js'
import type { JobStatus } from '../jobs.js'
import type { ImageStatus } from '../warm-image.js'
import { MirrorError, type PrefetchClient } from './client.js'
import type { Progress } from './progress.js'
import { failureLine, formatSummary } from './summary.js'

export interface RunOptions {
  readonly client: PrefetchClient
  readonly images: readonly string[]
  readonly platforms?: readonly string[]
  readonly progress: Progress
  /** --json: the final job statuses instead of the table. */
  readonly json: boolean
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  readonly pollMs: number
  /** Images per job until the mirror says it takes fewer. */
  readonly jobSize: number
  /** Aborted on SIGINT/SIGTERM (the client's too): the jobs go on in the mirror, the command stops watching. */
  readonly signal: AbortSignal
}

const PREFIX = 'stevedore prefetch: '
const ended = (job: JobStatus): boolean => job.state === 'done' || job.state === 'failed'

/**
 * How long each image took, as polling sees it: from the first poll that
 * found it running (or, when it went from queued to ended between two polls,
 * the last that found it queued) to the first that found it ended.
 */
class Timings {
  private readonly waiting: Array<number | undefined> = []
  private readonly started: Array<number | undefined> = []
  private readonly seconds: Array<number | undefined> = []

  observe(images: readonly ImageStatus[], now: number): void {
    images.forEach((s, i) => {
      if (this.seconds[i] !== undefined || s.state === 'refused') return
      if (s.state === 'queued') this.waiting[i] = now
      else if (s.state === 'running') this.started[i] ??= now
      else this.seconds[i] = (now - (this.started[i] ?? this.waiting[i] ?? now)) / 1000
    })
  }

  all(): ReadonlyArray<number | undefined> {
    return this.seconds
  }
}

/** Submits the images (in jobs the mirror takes), follows them to the end; returns the exit status. */
export async function runPrefetch(o: RunOptions): Promise<number> {
  const jobs: JobStatus[] = []
  const timings = new Timings()
  const images = (): ImageStatus[] => jobs.flatMap((j) => j.images)
  const accepted = (): string => (jobs.length === 0 ? '' : `; accepted job${jobs.length === 1 ? '' : 's'} ${jobs.map((j) => j.id).join(', ')} go${jobs.length === 1 ? 'es' : ''} on in the mirror`)
  let size = o.jobSize
  try {
    for (let next = 0; next < o.images.length;) {
      const chunk = o.images.slice(next, next + size)
      const sent = Date.now()
      let job: JobStatus
      try {
        job = await o.client.submit(chunk, o.platforms)
      } catch (err) {
        // The mirror names its limit: the rest goes in jobs of that size.
        if (err instanceof MirrorError && err.kind === 'too-many-images' && err.limit !== undefined && err.limit >= 1 && err.limit < chunk.length) {
          size = err.limit
          o.progress.note(`the mirror takes at most ${size} images per job (prefetch.maxImagesPerJob): sending them in jobs of ${size}`)
          continue
        }
        throw err
      }
      jobs.push(job)
      next += chunk.length
      timings.observe(images(), sent)
      o.progress.update(images())
    }
    while (!jobs.every(ended)) {
      await sleep(o.pollMs, o.signal)
      if (o.signal.aborted) {
        o.progress.stop()
        o.stderr(`${PREFIX}interrupted${accepted()}\n`)
        return 130
      }
      for (const [i, job] of jobs.entries()) if (!ended(job)) jobs[i] = await o.client.status(job)
      timings.observe(images(), Date.now())
      o.progress.update(images())
    }
  } catch (err) {
    o.progress.stop()
    if (!(err instanceof MirrorError)) throw err
    if (err.kind === 'interrupted' || o.signal.aborted) {
      o.stderr(`${PREFIX}interrupted${accepted()}\n`)
      return 130
    }
    o.stderr(`${PREFIX}${err.message}${accepted()}\n`)
    if (err.kind === 'too-many-images' && err.limit === undefined) o.stderr(`${PREFIX}split the images over several runs, or raise prefetch.maxImagesPerJob\n`)
    return 1
  }
  o.progress.stop()
  if (o.json) for (const job of jobs) o.stdout(`${JSON.stringify(job)}\n`)
  else o.stdout(formatSummary(images(), timings.all()))
  const cold = images().filter((s) => s.state !== 'done')
  for (const s of cold) o.stderr(`${PREFIX}${failureLine(s)}\n`)
  return cold.length > 0 ? 1 : 0
}
