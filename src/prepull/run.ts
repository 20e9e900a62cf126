import { sleep } from '../lib/abortable-sleep.js'
import type { Logger } from 'pino'
import { parseImageReference } from '../oci/reference.js'
import type { CriImage } from './cri-client.js'

/** The node's image store as pre-pulling needs it: CriImageService, or a fake in the unit tests. */
export interface ImageStore {
  /** The image when the store has it, undefined when not; rejects when the runtime cannot answer. */
  imageStatus(image: string, timeoutMs: number, signal: AbortSignal): Promise<CriImage | undefined>
  /** Pulls the image; resolves with the store's image id; an abort of `signal` cancels the pull. */
  pullImage(image: string, timeoutMs: number, signal: AbortSignal): Promise<string>
}

/** Where the list of images comes from (the mirror's GET /api/v1/prepull). */
export type ImageList = (signal: AbortSignal) => Promise<readonly string[]>

export type PrepullLog = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>

export interface PrepullOptions {
  readonly store: ImageStore
  readonly list: ImageList
  readonly log: PrepullLog
  /** PullImage calls at once on this node. */
  readonly concurrency: number
  /** The deadline of one PullImage call. */
  readonly pullTimeoutMs: number
  /** The deadline of one ImageStatus call: a local lookup, answered in milliseconds when the runtime is well. */
  readonly statusTimeoutMs: number
}

/** What became of one image in a round. */
export type ImageOutcome =
  | { readonly kind: 'present'; readonly image: string; readonly id: string }
  | { readonly kind: 'pulled'; readonly image: string; readonly id: string; readonly ms: number }
  | { readonly kind: 'failed'; readonly image: string; readonly reason: string }
  /** The process was asked to stop before this image was done. */
  | { readonly kind: 'abandoned'; readonly image: string }

export type RoundResult =
  | { readonly kind: 'no-list'; readonly reason: string }
  | { readonly kind: 'done'; readonly outcomes: readonly ImageOutcome[] }

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** `fn` over `items`, at most `limit` at a time, results in the order of `items`. */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker))
  return results
}

/**
 * One image: ImageStatus first, so that an image the node has costs one local
 * lookup and no registry traffic at all; PullImage only when it is missing.
 * `quiet`: it was there last round as well, so "already present" is not news.
 */
async function prepullImage(o: PrepullOptions, entry: string, quiet: boolean, signal: AbortSignal): Promise<ImageOutcome> {
  const ref = parseImageReference(entry)
  if (ref === undefined) {
    o.log.error({ image: entry, reason: 'not an image reference' }, 'pull failed')
    return { kind: 'failed', image: entry, reason: 'not an image reference' }
  }
  // The mirror's list is normalised already; ref.text is the same reference
  // spelt as the kubelet asks for it, and containerd resolves it through its
  // own hosts.toml, so through the mirror.
  const image = ref.text
  if (signal.aborted) return { kind: 'abandoned', image }
  try {
    const status = await o.store.imageStatus(image, o.statusTimeoutMs, signal)
    if (status !== undefined) {
      o.log[quiet ? 'debug' : 'info']({ image, id: status.id }, 'already present')
      return { kind: 'present', image, id: status.id }
    }
  } catch (err) {
    if (signal.aborted) return { kind: 'abandoned', image }
    const reason = message(err)
    o.log.error({ image, reason }, 'pull failed')
    return { kind: 'failed', image, reason }
  }
  const started = Date.now()
  o.log.debug({ image }, 'pulling')
  try {
    const id = await o.store.pullImage(image, o.pullTimeoutMs, signal)
    const ms = Date.now() - started
    o.log.info({ image, id, ms }, 'pulled')
    return { kind: 'pulled', image, id, ms }
  } catch (err) {
    if (signal.aborted) {
      o.log.warn({ image, ms: Date.now() - started }, 'pull abandoned: stopping')
      return { kind: 'abandoned', image }
    }
    const reason = message(err)
    o.log.error({ image, reason, ms: Date.now() - started }, 'pull failed')
    return { kind: 'failed', image, reason }
  }
}

/**
 * Fetches the list and brings every image on it into the store, at most
 * `concurrency` pulls at once. `seen`: images present after the previous
 * round, logged at debug level only (a loop would otherwise repeat every
 * image every few minutes).
 */
export async function prepullRound(o: PrepullOptions, signal: AbortSignal, seen: ReadonlySet<string> = new Set()): Promise<RoundResult> {
  const started = Date.now()
  let entries: readonly string[]
  try {
    entries = await o.list(signal)
  } catch (err) {
    const reason = message(err)
    if (!signal.aborted) o.log.error({ reason }, 'list unavailable')
    return { kind: 'no-list', reason }
  }
  // Each once: two spellings of one image would race two pulls of it.
  const unique = [...new Set(entries.map((e) => parseImageReference(e)?.text ?? e))]
  const outcomes = await mapBounded(unique, o.concurrency, (entry) => prepullImage(o, entry, seen.has(entry), signal))
  const count = (kind: ImageOutcome['kind']): number => outcomes.filter((x) => x.kind === kind).length
  o.log.info({
    images: outcomes.length, present: count('present'), pulled: count('pulled'), failed: count('failed'),
    ...(count('abandoned') > 0 ? { abandoned: count('abandoned') } : {}),
    ms: Date.now() - started,
  }, 'round done')
  return { kind: 'done', outcomes }
}

/** `--once`: 0 when every image is present or pulled, 1 when any failed, was abandoned, or the list could not be had. */
export async function prepullOnce(o: PrepullOptions, signal: AbortSignal): Promise<number> {
  const r = await prepullRound(o, signal)
  if (r.kind === 'no-list') return 1
  return r.outcomes.every((x) => x.kind === 'present' || x.kind === 'pulled') ? 0 : 1
}

/**
 * Rounds every `intervalMs` until `signal` aborts; then in-flight pulls are
 * cancelled and it resolves 0. Nothing that goes wrong in a round is fatal:
 * the next round tries again (a mirror that is restarting, a runtime that is
 * busy, an image that is not pushed yet).
 */
export async function prepullLoop(o: PrepullOptions, intervalMs: number, signal: AbortSignal): Promise<number> {
  let seen = new Set<string>()
  while (!signal.aborted) {
    const r = await prepullRound(o, signal, seen)
    // A round without a list says nothing about the store: keep what we knew.
    if (r.kind === 'done') seen = new Set(r.outcomes.filter((x) => x.kind === 'present' || x.kind === 'pulled').map((x) => x.image))
    await sleep(intervalMs, signal)
  }
  o.log.info('stopped')
  return 0
}
