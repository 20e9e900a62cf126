// One list+watch loop per resource, on the official client's Watch. Not
// makeInformer: its ObjectCache keeps every whole object in memory, and a big
// cluster's Deployments alone can be hundreds of megabytes; here each object
// is handed to a sink (which keeps a few strings of it) and dropped.
import type { Logger } from 'pino'
import { abortableSleep, Backoff, WATCH_BACKOFF, type BackoffOptions } from './backoff.js'
import { field } from './workloads.js'

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED'

/** One page of a cluster-wide list. */
export interface ListPage {
  readonly items: readonly unknown[]
  readonly resourceVersion: string | undefined
  readonly continue: string | undefined
}

/** A resource to watch cluster-wide. */
export interface WatchedResource {
  /** For logs and metrics: `deployments`. */
  readonly name: string
  /** The cluster-wide watch path: `/apis/apps/v1/deployments`. */
  readonly path: string
  /** More query parameters of the watch (a fieldSelector); `list` applies the same itself. */
  readonly query?: Readonly<Record<string, string>>
  /** One page of the cluster-wide list (the same path, `limit` and `continue`). */
  list(limit: number, continueToken: string | undefined): Promise<ListPage>
}

/** Where the objects of a resource go. */
export interface ResourceSink {
  /** A full list begins: the first one, or a relist after 410 Gone. */
  listStarted(): void
  listed(obj: unknown): void
  /** The list is complete: what was not listed since listStarted is gone. */
  listDone(): void
  /** A change seen on the watch. */
  event(type: WatchEventType, obj: unknown): void
}

/** The part of the client's Watch used here (a stand-in in unit tests). */
export interface Watcher {
  watch(path: string, query: Record<string, unknown>, callback: (type: string, obj: unknown) => void, done: (err: unknown) => void): Promise<AbortController>
}

export interface WatchLoopOptions {
  readonly resource: WatchedResource
  readonly sink: ResourceSink
  readonly watcher: Watcher
  readonly log: Logger
  /** Aborting ends the loop: the watch, a list in progress, a backoff wait. */
  readonly signal: AbortSignal
  readonly backoff?: BackoffOptions
  readonly pageSize?: number
}

// Small enough that a page of a big cluster is a few megabytes at most.
const PAGE_SIZE = 500

type WatchOutcome =
  | { readonly kind: 'closed'; readonly resourceVersion: string | undefined }
  | { readonly kind: 'gone' }
  | { readonly kind: 'failed'; readonly resourceVersion: string | undefined; readonly err: unknown }

const isGone = (err: unknown): boolean => field(err, 'statusCode') === 410 || field(err, 'code') === 410

/**
 * List, then watch from the list's resourceVersion; a watch that ends is
 * resumed from the last version seen, after a backoff delay unless it stayed
 * up a healthy while; a 410 Gone (the version is too old, as an HTTP status
 * or an ERROR event) lists again. Never rejects; resolves once the signal
 * has aborted.
 */
export async function runWatchLoop(options: WatchLoopOptions): Promise<void> {
  const { resource, log, signal } = options
  const backoff = new Backoff(options.backoff ?? WATCH_BACKOFF)
  let resourceVersion: string | undefined
  let listed = false
  while (!signal.aborted) {
    if (!listed) {
      try {
        resourceVersion = await list(options)
        listed = true
      } catch (err) {
        if (signal.aborted) break
        const retryInMs = backoff.next()
        log.warn({ resource: resource.name, err, retryInMs }, 'pre-warm: list failed; retrying')
        await abortableSleep(retryInMs, signal)
        continue
      }
    }
    const started = Date.now()
    const outcome = await watchOnce(options, resourceVersion)
    if (signal.aborted) break
    backoff.connected(Date.now() - started)
    if (outcome.kind === 'gone') {
      log.info({ resource: resource.name }, 'pre-warm: resourceVersion too old (410 Gone); listing again')
      listed = false
    } else {
      resourceVersion = outcome.resourceVersion
      if (outcome.kind === 'failed') log.warn({ resource: resource.name, err: outcome.err }, 'pre-warm: watch failed; reconnecting')
      else log.debug({ resource: resource.name }, 'pre-warm: watch closed; reconnecting')
    }
    await abortableSleep(backoff.next(), signal)
  }
}

async function list(options: WatchLoopOptions): Promise<string | undefined> {
  const { resource, sink, signal } = options
  sink.listStarted()
  let continueToken: string | undefined
  let resourceVersion: string | undefined
  do {
    const page = await untilAborted(resource.list(options.pageSize ?? PAGE_SIZE, continueToken), signal)
    if (page === undefined) throw new Error('stopped')
    for (const item of page.items) sink.listed(item)
    // Every page of one list carries the version of the snapshot it was cut from.
    resourceVersion = page.resourceVersion ?? resourceVersion
    continueToken = page.continue !== undefined && page.continue !== '' ? page.continue : undefined
  } while (continueToken !== undefined)
  sink.listDone()
  return resourceVersion
}

function watchOnce(options: WatchLoopOptions, fromVersion: string | undefined): Promise<WatchOutcome> {
  const { resource, sink, log, signal, watcher } = options
  let resourceVersion = fromVersion
  let gone = false
  let controller: AbortController | undefined
  return new Promise<WatchOutcome>((resolve) => {
    let settled = false
    const finish = (outcome: WatchOutcome): void => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      controller?.abort()
      resolve(outcome)
    }
    // The client hands out its controller only once the response has begun;
    // until then a stop cannot cancel the request, so it is let go and aborted when it arrives.
    const onAbort = (): void => finish({ kind: 'closed', resourceVersion })
    signal.addEventListener('abort', onAbort, { once: true })
    const onEvent = (type: string, obj: unknown): void => {
      if (settled) return
      if (type === 'ERROR') {
        if (isGone(obj)) {
          gone = true
          finish({ kind: 'gone' })
        } else {
          finish({ kind: 'failed', resourceVersion, err: new Error(`ERROR event: ${String(field(obj, 'message') ?? JSON.stringify(obj))}`) })
        }
        return
      }
      const version = field(field(obj, 'metadata'), 'resourceVersion')
      if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
        try {
          sink.event(type, obj)
        } catch (err) {
          log.error({ resource: resource.name, err }, 'pre-warm: could not handle a watch event')
        }
      }
      // BOOKMARK carries nothing but a newer version to resume from.
      if (typeof version === 'string' && version !== '') resourceVersion = version
    }
    const onDone = (err: unknown): void => {
      if (gone || isGone(err)) finish({ kind: 'gone' })
      else if (err === null || err === undefined) finish({ kind: 'closed', resourceVersion })
      else finish({ kind: 'failed', resourceVersion, err })
    }
    // Like client-go's reflector: the server ends each watch after 5-10 minutes, so a
    // connection that silently died is noticed, and every watcher does not reconnect at once.
    const query = { ...resource.query, allowWatchBookmarks: true, timeoutSeconds: 300 + Math.floor(Math.random() * 300), ...(fromVersion !== undefined ? { resourceVersion: fromVersion } : {}) }
    watcher.watch(resource.path, query, onEvent, onDone).then((c) => {
      controller = c
      if (settled) c.abort()
    }, (err: unknown) => finish({ kind: 'failed', resourceVersion, err }))
  })
}

/** The promise's value, or undefined as soon as the signal aborts (the promise is left to settle unobserved). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    promise.catch(() => undefined)
    return Promise.resolve(undefined)
  }
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => resolve(undefined)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then((v) => {
      signal.removeEventListener('abort', onAbort)
      resolve(v)
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort)
      reject(err)
    })
  })
}
