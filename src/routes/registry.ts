import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { OutgoingHttpHeaders } from 'node:http'
import { isDigestReference } from '../oci/digest.js'
import { RegistryError } from '../oci/errors.js'
import type { BlobSource } from '../cache/blob-source.js'
import type { BlobAnswer } from '../cache/blobs.js'
import type { Mirror } from '../mirror.js'
import type { UpstreamClient } from '../upstream/client.js'
import { errorForUpstreamStatus } from '../upstream/errors.js'
import type { Route } from '../upstream/router.js'
import { parseQuery } from './query.js'
import { recordResponse } from './record.js'
import { WriteTimeoutError, endBlob, watchWrites, writeBlob } from './send-blob.js'
import { announceBlobStart } from './served.js'
import { parseV2Path } from './v2-path.js'

/**
 * The read-only OCI distribution API under /v2/ (write methods are refused
 * before routing, by checkRequest). All of a request's input is checked
 * before anything is asked of the store or an upstream: path, query, name.
 */
export function registerRegistryRoutes(app: FastifyInstance, mirror: Mirror): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const path = (request.raw.url ?? '/').split('?', 1)[0] as string
    const target = parseV2Path(path)
    const ctx = request.stevedore
    ctx.kind = target.kind
    const query = parseQuery(request.query, target.kind)
    if (target.kind === 'base') return reply.type('application/json').send('{}')
    if (target.kind === 'upload') throw new RegistryError('UNSUPPORTED', 'this registry mirror is read-only')

    const route = mirror.router.route(target.name, query.ns)
    ctx.upstream = route.upstream.name
    ctx.repository = route.repository
    // Answer at once: containerd moves on to the next host on a 503.
    if (!mirror.storeReady) throw new RegistryError('UNAVAILABLE', 'cache storage is not reachable yet')
    const client = mirror.clients.get(route.upstream.name) as UpstreamClient
    reply.header('oci-namespace', route.upstream.name)

    switch (target.kind) {
      case 'manifest':
        return serveManifest(mirror, request, reply, client, route, target.reference)
      case 'blob':
        return serveBlob(mirror, request, reply, client, route, target.digest)
      case 'tags':
        return passThrough(request, reply, client, route, `/v2/${route.repository}/tags/list`, { n: query.n, last: query.last }, query.ns, new RegistryError('NAME_UNKNOWN', 'repository unknown', { detail: { name: route.clientName } }))
      case 'referrers': {
        const { digest } = target
        ctx.digest = digest
        return passThrough(request, reply, client, route, `/v2/${route.repository}/referrers/${digest}`, { artifactType: query.artifactType }, query.ns, new RegistryError('MANIFEST_UNKNOWN', 'no referrers', { detail: { digest } }))
      }
    }
  }
  app.all('/v2', handler)
  app.all('/v2/*', handler)
}

async function serveManifest(mirror: Mirror, request: FastifyRequest, reply: FastifyReply, client: UpstreamClient, route: Route, reference: string): Promise<unknown> {
  const ctx = request.stevedore
  if (isDigestReference(reference)) ctx.digest = reference
  else ctx.tag = reference
  const answer = await mirror.manifests.get({ client, repository: route.repository, reference: ctx.digest ?? reference })
  const { manifest } = answer
  ctx.cache = answer.cache
  ctx.digest = manifest.digest
  ctx.manifest = manifest
  mirror.metrics.cacheResults.inc({ kind: 'manifest', result: answer.cache })
  reply
    .header('content-type', manifest.mediaType)
    .header('docker-content-digest', manifest.digest)
    .header('etag', `"${manifest.digest}"`)
    .header('content-length', manifest.bytes.byteLength)
  ctx.bytes = request.method === 'HEAD' ? 0 : manifest.bytes.byteLength
  return request.method === 'HEAD' ? reply.send() : reply.send(manifest.bytes)
}

async function serveBlob(mirror: Mirror, request: FastifyRequest, reply: FastifyReply, client: UpstreamClient, route: Route, digest: string): Promise<unknown> {
  const ctx = request.stevedore
  ctx.digest = digest
  const target = { client, repository: route.repository, digest }
  reply.header('docker-content-digest', digest).header('accept-ranges', 'bytes')
  if (request.method === 'HEAD') {
    const answer = await mirror.blobs.head(target)
    ctx.cache = answer.cache
    ctx.bytes = 0
    mirror.metrics.cacheResults.inc({ kind: 'blob', result: answer.cache })
    return reply.type('application/octet-stream').header('content-length', answer.size).send()
  }
  // From here the pull is waiting on this blob, even while it queues for a slot or the upstream's headers.
  announceBlobStart(mirror, request)
  // A response holds a socket, a file and buffers until the client has it all: they are bounded.
  const gone = new AbortController()
  reply.raw.once('close', () => gone.abort(new Error('client went away')))
  const release = await mirror.responseSlots.acquire('live', gone.signal)
  reply.raw.once('close', release)
  const answer = await mirror.blobs.get(target, { ...(request.headers.range !== undefined ? { range: request.headers.range } : {}), allowRedirect: true })
  ctx.cache = answer.cache
  mirror.metrics.cacheResults.inc({ kind: 'blob', result: answer.cache })
  return sendBlobAnswer(mirror, request, reply, answer)
}

/** Writes a blob answer: a redirect, a range, or the whole blob from a file, a fill or the store's stream. */
export async function sendBlobAnswer(mirror: Mirror, request: FastifyRequest, reply: FastifyReply, answer: BlobAnswer): Promise<unknown> {
  const ctx = request.stevedore
  if (answer.kind === 'redirect') {
    ctx.bytes = 0
    ctx.redirect = true
    return reply.code(307).header('location', answer.url).send()
  }
  reply.type('application/octet-stream')
  if (answer.range !== undefined) {
    const { start, end } = answer.range
    reply.code(206).header('content-range', `bytes ${start}-${end}/${answer.size ?? '*'}`).header('content-length', end - start + 1)
    ctx.bytes = end - start + 1
  } else if (answer.size !== undefined) {
    reply.header('content-length', answer.size)
    ctx.bytes = answer.size
  }
  observeFirstByte(mirror, request, reply)
  if (answer.kind !== 'stream') return sendSource(mirror, request, reply, answer.source, answer.range?.start ?? 0)
  const body = answer.body
  // A client that goes away must release the store's stream. fastify runs onResponse only
  // on finish or error, not for a client that left mid-body: the response is recorded here then.
  reply.raw.once('close', () => {
    if (!body.destroyed && !reply.raw.writableFinished) body.destroy()
    recordResponse(mirror, request, reply)
  })
  // fastify pipes this body: a client that stops reading is dropped here, as writeBlob does.
  watchWrites(reply.raw, mirror.send, (err) => {
    request.log.info({ err }, 'client stopped reading: dropped')
    reply.raw.destroy()
  })
  return reply.send(body)
}

/**
 * A blob from a local file or a fill in progress, written to the socket by
 * writeBlob (pooled buffers, shared fill chunks): the hot path of a
 * mirror. fastify steps aside, so the response is recorded here.
 */
async function sendSource(mirror: Mirror, request: FastifyRequest, reply: FastifyReply, source: BlobSource, start: number): Promise<void> {
  const res = reply.raw
  reply.hijack()
  const transfer = (async (): Promise<void> => {
    try {
      res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
      await writeBlob(source, start, res, mirror.send)
      await endBlob(res, mirror.send)
    } catch (err) {
      // Headers are out: an incomplete body must end in a cut connection, never a clean end.
      if (err instanceof WriteTimeoutError) request.log.info({ err }, 'client stopped reading: dropped')
      else request.log.debug({ err }, 'blob stream ended early')
      res.destroy()
    } finally {
      await source.close()
      recordResponse(mirror, request, reply)
    }
  })()
  // Shutdown waits for the transfers written outside fastify's reply.
  mirror.transfers.add(transfer)
  await transfer
  mirror.transfers.delete(transfer)
}

/** Records time to first body byte without touching the body stream's flow. */
function observeFirstByte(mirror: Mirror, request: FastifyRequest, reply: FastifyReply): void {
  const res = reply.raw
  const write = res.write
  const ctx = request.stevedore
  res.write = function patched(this: typeof res, ...args: Parameters<typeof write>) {
    res.write = write
    ctx.firstByteAt = Date.now()
    mirror.metrics.timeToFirstByte.observe({ kind: ctx.kind, result: ctx.cache ?? 'miss' }, Number(process.hrtime.bigint() - ctx.startedAt) / 1e9)
    return write.apply(this, args)
  } as typeof write
}

/** Tags and referrers: asked of the upstream every time (with the checked `params` only), answered as it answers. */
async function passThrough(request: FastifyRequest, reply: FastifyReply, client: UpstreamClient, route: Route, upstreamPath: string, params: Record<string, string | number | undefined>, ns: string | undefined, notFound: RegistryError): Promise<unknown> {
  if (request.method === 'HEAD') throw new RegistryError('UNSUPPORTED', 'use GET')
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined) search.set(name, String(value))
  }
  const qs = search.toString()
  const res = await client.request({ method: 'GET', path: qs === '' ? upstreamPath : `${upstreamPath}?${qs}`, repository: route.repository, headers: { accept: 'application/json' } })
  if (res.status !== 200) {
    await res.body.dump()
    throw errorForUpstreamStatus(client.name, res.status, res.headers, notFound)
  }
  const type = res.headers['content-type']
  reply.type(typeof type === 'string' ? type : 'application/json')
  const length = res.headers['content-length']
  if (typeof length === 'string') reply.header('content-length', length)
  const link = res.headers['link']
  if (typeof link === 'string') reply.header('link', rewriteLink(link, route, ns))
  request.raw.once('close', () => {
    if (!res.body.destroyed && !reply.raw.writableFinished) res.body.destroy()
  })
  return reply.send(res.body)
}

/** Points a pagination Link at the mirror: the client's name for the repository, and its `ns`. */
export function rewriteLink(link: string, route: Route, ns: string | undefined): string {
  return link.replace(/<([^>]*)>/g, (whole, target: string) => {
    let url: URL
    try {
      url = new URL(target, 'http://upstream.invalid')
    } catch {
      return whole
    }
    const upstreamPrefix = `/v2/${route.repository}/`
    if (!url.pathname.startsWith(upstreamPrefix)) return whole
    url.pathname = `/v2/${route.clientName}/${url.pathname.slice(upstreamPrefix.length)}`
    if (ns !== undefined && ns !== '') url.searchParams.set('ns', ns)
    return `<${url.pathname}${url.search}>`
  })
}
