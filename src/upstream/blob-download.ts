import { RegistryError } from '../oci/errors.js'
import { chunkBatches } from './chunk-batches.js'
import type { UpstreamClient } from './client.js'
import { errorForUpstreamStatus } from './errors.js'

// How much of the upstream body may wait for the disk before the upstream is paused.
const UPSTREAM_BATCH = 4 * 1024 * 1024

/** A blob's body from an upstream, as a fill takes it. */
export interface UpstreamBlob {
  /** From Content-Length; undefined when the upstream did not say. */
  readonly size: number | undefined
  /** The body in batches of the chunks as they arrived, paused while a batch is being handled. */
  readonly batches: AsyncIterable<readonly Buffer[]>
  /** Stops the transfer; the batches then end in an error. */
  destroy(): void
}

/**
 * GETs a blob from the upstream. Resolves once it answered 200; rejects with
 * a RegistryError when it answered otherwise (404 BLOB_UNKNOWN, 403 DENIED,
 * 429, 502) or not at all (503). The signal stops the body too. A body
 * cut before its end is resumed from the byte reached by the client's
 * retries, so the batches are the whole blob as one stream.
 */
export async function downloadBlob(client: UpstreamClient, repository: string, digest: string, signal: AbortSignal): Promise<UpstreamBlob> {
  const res = await client.request({ method: 'GET', path: `/v2/${repository}/blobs/${digest}`, repository, signal, resume: true })
  if (res.status !== 200) {
    await res.body.dump().catch(() => undefined)
    throw errorForUpstreamStatus(client.name, res.status, res.headers, new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream', { detail: { digest } }))
  }
  const length = Number(res.headers['content-length'])
  const body = res.body
  return {
    size: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
    batches: chunkBatches(body, UPSTREAM_BATCH),
    destroy: () => {
      if (!body.destroyed) body.destroy()
    },
  }
}
