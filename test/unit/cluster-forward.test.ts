// The forwarding router against FAKES: the owner replica (a PeerClient whose
// request answers or fails as each test sets) and the upstream (a client
// whose request answers 200 with the blob). The real exchange between
// replicas, over HTTP with signatures, is test/e2e/replicas.test.ts; these
// pin the fallback decisions, which a real owner cannot be made to take on cue.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import t from 'tap'
import type { BlobTarget } from '../../src/cache/blobs.js'
import { PeerFillRouter } from '../../src/cluster/forward.js'
import type { PeerClient } from '../../src/cluster/peer-client.js'
import { ownerOf } from '../../src/cluster/ring.js'
import { RegistryError } from '../../src/oci/errors.js'
import type { UpstreamClient, UpstreamRequest } from '../../src/upstream/client.js'
import { capturedLogger } from './fakes/cluster.js'

const SELF = 'http://127.0.0.1:15001'
const OWNER = 'http://127.0.0.1:15002'
const BYTES = Buffer.from('layer bytes '.repeat(100))
const DIGEST = `sha256:${createHash('sha256').update(BYTES).digest('hex')}`

type OwnerAnswer = { status: number; body?: string; headers?: Record<string, string> } | Error

function body(bytes: Buffer | string): Readable & { dump(): Promise<void> } {
  const r = Readable.from([Buffer.from(bytes)]) as Readable & { dump(): Promise<void> }
  r.dump = async () => {
    r.resume()
  }
  return r
}

function setup(answer: OwnerAnswer) {
  const live = [SELF, OWNER]
  const markedDown: string[] = []
  const upstreamCalls: UpstreamRequest[] = []
  const fallbacks: string[] = []
  const peers: Pick<PeerClient, 'request'> = {
    request: async () => {
      if (answer instanceof Error) throw answer
      return { statusCode: answer.status, headers: answer.headers ?? {}, body: body(answer.body ?? BYTES) } as unknown as Awaited<ReturnType<PeerClient['request']>>
    },
  }
  const client = {
    name: 'upstream.test',
    origin: 'http://127.0.0.1:15003',
    request: async (req: UpstreamRequest) => {
      upstreamCalls.push(req)
      return { status: 200, headers: { 'content-length': String(BYTES.length) }, body: body(BYTES) }
    },
  } as unknown as UpstreamClient
  const router = new PeerFillRouter({
    // Whichever of the two the ring names for this digest is "the owner" here; self is the other.
    self: ownerOf(DIGEST, live) === OWNER ? SELF : OWNER,
    members: { live: () => live, markDown: (o) => markedDown.push(o) },
    peers,
    keep: false,
    log: capturedLogger().log,
    events: { onFallback: (_o, reason) => fallbacks.push(reason) },
  })
  const target: BlobTarget = { client, repository: 'library/app', digest: DIGEST }
  return { router, target, markedDown, upstreamCalls, fallbacks }
}

async function readAll(batches: AsyncIterable<readonly Buffer[]>): Promise<Buffer> {
  const out: Buffer[] = []
  for await (const batch of batches) out.push(...batch)
  return Buffer.concat(out)
}

const withCode = (message: string, code: string): Error => Object.assign(new Error(message), { code })

t.test('the owner serves: the bytes are its, and the asker is told so (it keeps nothing on a shared bucket)', async (t) => {
  const { router, target, upstreamCalls, markedDown } = setup({ status: 200, headers: { 'content-length': String(BYTES.length) } })
  const route = router.route(target)
  t.ok(route, 'a digest another replica owns is routed')
  const { blob, fromOwner } = await route!.open(new AbortController().signal)
  t.equal(fromOwner, true)
  t.same(await readAll(blob.batches), BYTES)
  t.equal(upstreamCalls.length, 0, 'the upstream is not asked')
  t.same(markedDown, [])
})

t.test('an owner that refuses the connection leaves the ring; the upstream serves, and the asker must keep the blob', async (t) => {
  const { router, target, upstreamCalls, markedDown, fallbacks } = setup(withCode('connect ECONNREFUSED', 'ECONNREFUSED'))
  const { blob, fromOwner } = await router.route(target)!.open(new AbortController().signal)
  t.equal(fromOwner, false, 'nobody else writes it: the fill keeps it')
  t.same(await readAll(blob.batches), BYTES)
  t.equal(upstreamCalls.length, 1)
  t.same(markedDown, [router.route(target)!.via])
  t.same(fallbacks, ['unreachable'])
})

t.test('an owner slow to answer (headers timeout) is alive: fetched from the upstream, but it stays in the ring', async (t) => {
  const { router, target, upstreamCalls, markedDown, fallbacks } = setup(withCode('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT'))
  const { fromOwner, blob } = await router.route(target)!.open(new AbortController().signal)
  blob.destroy()
  t.equal(fromOwner, false)
  t.equal(upstreamCalls.length, 1)
  t.same(markedDown, [], 'its health check decides, not one slow answer')
  t.same(fallbacks, ['unreachable'])
})

t.test("the owner's 429 is not passed on: rate limits are per source address, so this replica asks the upstream itself", async (t) => {
  const oci = JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down', detail: null }] })
  const { router, target, upstreamCalls, fallbacks } = setup({ status: 429, body: oci, headers: { 'retry-after': '30' } })
  const { fromOwner, blob } = await router.route(target)!.open(new AbortController().signal)
  blob.destroy()
  t.equal(fromOwner, false)
  t.equal(upstreamCalls.length, 1)
  t.same(fallbacks, ['owner_error'])
})

t.test("the owner's UNAUTHORIZED is its own client auth, not the upstream's answer: fetched from the upstream", async (t) => {
  const oci = JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] })
  const { router, target, upstreamCalls } = setup({ status: 401, body: oci })
  const { blob } = await router.route(target)!.open(new AbortController().signal)
  blob.destroy()
  t.equal(upstreamCalls.length, 1)
})

t.test("the upstream's own answers through the owner are passed on: 404 BLOB_UNKNOWN, DENIED", async (t) => {
  for (const [status, code] of [[404, 'BLOB_UNKNOWN'], [403, 'DENIED']] as const) {
    const oci = JSON.stringify({ errors: [{ code, message: 'from the upstream', detail: null }] })
    const { router, target, upstreamCalls } = setup({ status, body: oci })
    const err = await router.route(target)!.open(new AbortController().signal).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof RegistryError, `${code}: a registry error`)
    t.equal((err as RegistryError).code, code)
    t.equal(upstreamCalls.length, 0, `${code}: asking the upstream again would get the same answer`)
  }
})
