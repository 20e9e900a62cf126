import type { Readable } from 'node:stream'
import { RegistryError } from '../oci/errors.js'
import { downloadBlob, type UpstreamBlob } from '../upstream/blob-download.js'
import { chunkBatches } from '../upstream/chunk-batches.js'
import type { UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'

// As downloadBlob's: how much may wait for the fill before the sender is paused.
const BATCH = 4 * 1024 * 1024

export interface UpstreamTarget {
  readonly client: UpstreamClient
  readonly repository: string
  readonly digest: string
}

/**
 * The blob from byte `offset` on, straight from the upstream: a Range
 * request; an upstream that ignores it sends the whole blob, and the bytes
 * before `offset` are skipped here.
 */
export async function downloadFrom(target: UpstreamTarget, offset: number, signal: AbortSignal): Promise<AsyncIterable<readonly Buffer[]> & { destroy(): void }> {
  if (offset === 0) {
    const blob = await downloadBlob(target.client, target.repository, target.digest, signal)
    return Object.assign(blob.batches, { destroy: () => blob.destroy() })
  }
  const { client, repository, digest } = target
  const res = await client.request({ method: 'GET', path: `/v2/${repository}/blobs/${digest}`, repository, signal, resume: true, headers: { range: `bytes=${offset}-` } })
  if (res.status !== 200 && res.status !== 206) {
    await res.body.dump().catch(() => undefined)
    throw errorForUpstreamStatus(client.name, res.status, res.headers, new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream', { detail: { digest } }))
  }
  const body = res.body
  const destroy = (): void => {
    if (!body.destroyed) body.destroy()
  }
  if (res.status === 206) {
    const start = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''))?.[1]
    if (Number(start) !== offset) {
      destroy()
      throw new RegistryError('UPSTREAM_ERROR', `upstream ${client.name} answered a range from the wrong byte`, { detail: { asked: offset, got: start ?? null } })
    }
    return Object.assign(chunkBatches(body, BATCH), { destroy })
  }
  return Object.assign(skipBytes(body, offset), { destroy })
}

async function* skipBytes(body: Readable, skip: number): AsyncGenerator<Buffer[]> {
  let left = skip
  for await (const batch of chunkBatches(body, BATCH)) {
    if (left === 0) {
      yield batch
      continue
    }
    const kept: Buffer[] = []
    for (const chunk of batch) {
      if (left >= chunk.byteLength) left -= chunk.byteLength
      else {
        kept.push(left === 0 ? chunk : chunk.subarray(left))
        left = 0
      }
    }
    if (kept.length > 0) yield kept
  }
}

/**
 * A blob read from `first` (the owner), continued from the upstream at the
 * byte reached should `first` fail mid-way. The fill above sees one stream
 * and verifies all of it, whichever way each byte came.
 */
export function withUpstreamResume(first: UpstreamBlob, target: UpstreamTarget, signal: AbortSignal, onResume: (offset: number, err: unknown) => void): UpstreamBlob {
  let current: { destroy(): void } = first
  async function* batches(): AsyncGenerator<readonly Buffer[]> {
    let received = 0
    try {
      for await (const batch of first.batches) {
        for (const chunk of batch) received += chunk.byteLength
        yield batch
      }
      return
    } catch (err) {
      first.destroy()
      if (signal.aborted) throw err
      onResume(received, err)
    }
    const rest = await downloadFrom(target, received, signal)
    current = rest
    yield* rest
  }
  return {
    size: first.size,
    batches: batches(),
    destroy: () => current.destroy(),
  }
}
