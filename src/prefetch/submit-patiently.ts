import { sleep } from '../lib/abortable-sleep.js'
import { BusyError } from '../limits/slots.js'
import type { JobRequest, JobStatus, PrefetchJobs } from './jobs.js'

// Pre-warming has no client to tell "try again": it waits, a while (10 s × 60 = 10 minutes).
const RETRY_MS = 10_000
const ATTEMPTS = 60

/**
 * Submits a job for a caller with nobody to answer (pre-warming): waits for
 * the store to be reachable and for room among the jobs, then resolves with
 * the final status. Rejects when the mirror stops, or room never came.
 */
export async function submitPatiently(jobs: PrefetchJobs, request: JobRequest, ready: () => boolean, retryMs = RETRY_MS): Promise<JobStatus> {
  for (let attempt = 1; ; attempt++) {
    if (ready()) {
      try {
        return await jobs.submit(request).done
      } catch (err) {
        if (!(err instanceof BusyError) || attempt >= ATTEMPTS) throw err
      }
    } else if (attempt >= ATTEMPTS) {
      throw new Error('cache storage did not become reachable')
    }
    await sleep(retryMs)
  }
}
