import { createHash } from 'node:crypto'
import fc from 'fast-check'
import t from 'tap'
import { PullSessions, type EndedSession } from '../../src/insights/sessions.js'
import type { ServedRequest } from '../../src/routes/served.js'

// Any label, as a well-formed digest.
const digest = (c: string): string => `sha256:${createHash('sha256').update(c).digest('hex')}`
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

function imageManifest(config: string, layers: Array<[string, number]>): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 100 },
    layers: layers.map(([d, size]) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d, size })),
  }))
}

function index(entries: Array<[string, string]>): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_INDEX,
    manifests: entries.map(([d, p]) => ({ mediaType: OCI_MANIFEST, digest: d, size: 500, platform: { os: p.split('/')[0], architecture: p.split('/')[1] } })),
  }))
}

interface Harness {
  sessions: PullSessions
  ended: EndedSession[]
  clock: { now: number }
  manifest(d: string, bytes: Buffer, opts?: { tag?: string; method?: string; mediaType?: string; ua?: string; address?: string; at?: number }): void
  blob(d: string, opts?: { bytes?: number; cache?: ServedRequest['cache']; status?: number; complete?: boolean; ua?: string; repository?: string; start?: boolean; seq?: number; address?: string }): void
}

let seq = 0
function harness(idleMs = 1000, maxClients = 100): Harness {
  const ended: EndedSession[] = []
  const clock = { now: 1_000_000 }
  const sessions = new PullSessions({ idleMs, maxClients, onEnd: (s) => ended.push(s), now: () => clock.now })
  const base = (ua: string | undefined, address: string) => ({ upstream: 'reg', client: { address, userAgent: ua }, redirect: false, firstByteAt: undefined })
  return {
    sessions, ended, clock,
    manifest(d, bytes, o = {}) {
      const at = o.at ?? clock.now
      sessions.served({
        ...base(o.ua ?? 'containerd/1.6', o.address ?? '10.0.0.1'), seq: ++seq, kind: 'manifest', method: o.method ?? 'GET', status: 200, repository: 'team/app',
        tag: o.tag, digest: d, manifest: { mediaType: o.mediaType ?? OCI_MANIFEST, bytes }, cache: 'hit', bytes: bytes.length, complete: true, startedAt: at, endedAt: at + 1,
      })
    },
    blob(d, o = {}) {
      const n = o.seq ?? ++seq
      const client = { address: o.address ?? '10.0.0.1', userAgent: o.ua ?? 'containerd/1.6' }
      const repository = o.repository ?? 'team/app'
      if (o.start !== false) sessions.blobStarted({ seq: n, upstream: 'reg', repository, digest: d, client, at: clock.now })
      sessions.served({
        ...base(client.userAgent, client.address), seq: n, kind: 'blob', method: 'GET', status: o.status ?? 200, repository, tag: undefined, digest: d, manifest: undefined,
        cache: o.cache ?? 'hit', bytes: o.bytes ?? 10, complete: o.complete ?? true, startedAt: clock.now, firstByteAt: clock.now + 1, endedAt: clock.now + 5,
      })
    },
  }
}

t.test('a manifest and all its blobs: one pull, ended as soon as the last blob is sent', async (t) => {
  const h = harness()
  const m = imageManifest(digest('c'), [[digest('a'), 1000], [digest('b'), 500]])
  h.manifest(digest('m'), m, { tag: '1.0' })
  h.blob(digest('c'), { bytes: 100 })
  h.blob(digest('a'), { bytes: 1000, cache: 'miss' })
  t.equal(h.ended.length, 0, 'not over while a layer is missing')
  h.blob(digest('b'), { bytes: 500, cache: 'joined' })
  t.equal(h.ended.length, 1, 'over with the last blob')
  t.match(h.ended[0], { tag: '1.0', digest: digest('m'), layers: [{ size: 1000 }, { size: 500 }] })
  t.same(h.ended[0]?.blobs.map((b) => [b.bytes, b.cold]), [[100, false], [1000, true], [500, true]], 'a joined fill is cold')
  t.equal(h.sessions.open, 0)
})

t.test('HEAD by tag, then GET by digest: one pull, the tag kept', async (t) => {
  const h = harness()
  const m = imageManifest(digest('c'), [[digest('a'), 10]])
  h.manifest(digest('m'), m, { tag: 'v1', method: 'HEAD' })
  h.manifest(digest('m'), m)
  h.blob(digest('c'))
  h.blob(digest('a'))
  t.equal(h.ended.length, 1)
  t.equal(h.ended[0]?.tag, 'v1')
})

t.test('index, then the platform manifest: tag, index and platform from the index, timed from the index request', async (t) => {
  const h = harness()
  const m = imageManifest(digest('c'), [[digest('a'), 10]])
  h.manifest(digest('i'), index([[digest('m'), 'linux/arm64'], [digest('n'), 'linux/amd64']]), { tag: 'latest', method: 'HEAD', mediaType: OCI_INDEX, at: 1000 })
  h.manifest(digest('i'), index([[digest('m'), 'linux/arm64'], [digest('n'), 'linux/amd64']]), { mediaType: OCI_INDEX, at: 2000 })
  h.manifest(digest('m'), m, { at: 3000 })
  h.blob(digest('c'))
  h.blob(digest('a'))
  t.match(h.ended, [{ tag: 'latest', index: digest('i'), platform: 'linux/arm64', startedAt: 1000 }])
})

t.test('pulled twice in a row: the second pull is timed from its own index request', async (t) => {
  const h = harness(60_000)
  const idx = index([[digest('m'), 'linux/amd64']])
  const m = imageManifest(digest('c'), [[digest('a'), 10]])
  for (const at of [1000, 5000]) {
    h.manifest(digest('i'), idx, { tag: 'latest', method: 'HEAD', mediaType: OCI_INDEX, at })
    h.manifest(digest('m'), m, { at: at + 10 })
    h.blob(digest('c'))
    h.blob(digest('a'))
  }
  t.same(h.ended.map((e) => e.startedAt), [1000, 5000])
})

t.test('a tag checked and nothing fetched is a resolve, once the client is quiet', async (t) => {
  const h = harness(1000)
  h.manifest(digest('i'), index([[digest('m'), 'linux/amd64']]), { tag: 'latest', method: 'HEAD', mediaType: OCI_INDEX })
  h.sessions.sweep()
  t.equal(h.ended.length, 0, 'not before the idle time')
  h.clock.now += 1010
  h.sessions.sweep()
  t.match(h.ended, [{ tag: 'latest', digest: digest('i'), blobs: [] }], 'a resolve of the index')
  // An image manifest asked for, no blob after it: a resolve of that image.
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]), { tag: 'x' })
  h.clock.now += 1010
  h.sessions.sweep()
  t.match(h.ended[1], { tag: 'x', digest: digest('m'), blobs: [], layers: [{ digest: digest('a') }] })
})

t.test('a node that has some layers: the pull ends when it goes quiet, with the layers it fetched', async (t) => {
  const h = harness(1000)
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10], [digest('b'), 20]]))
  h.blob(digest('c'))
  h.blob(digest('b'))
  h.clock.now += 999
  h.sessions.sweep()
  t.equal(h.ended.length, 0)
  h.clock.now += 10
  h.sessions.sweep()
  t.same(h.ended[0]?.blobs.map((b) => b.digest), [digest('c'), digest('b')])
})

t.test('a blob still sending keeps its pull open past the idle time', async (t) => {
  const h = harness(1000)
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10], [digest('b'), 20]]))
  h.blob(digest('c'))
  h.sessions.blobStarted({ seq: 999_999, upstream: 'reg', repository: 'team/app', digest: digest('a'), client: { address: '10.0.0.1', userAgent: 'containerd/1.6' }, at: h.clock.now })
  h.clock.now += 60_000
  h.sessions.sweep()
  t.equal(h.ended.length, 0, 'a minute-long layer is still part of the pull')
  h.blob(digest('a'), { seq: 999_999, start: false })
  h.clock.now += 1010
  h.sessions.sweep()
  t.equal(h.ended.length, 1)
})

t.test('a cut blob fails the pull unless it is fetched again', async (t) => {
  const h = harness(1000)
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]))
  h.blob(digest('c'))
  h.blob(digest('a'), { complete: false, bytes: 0 })
  t.equal(h.ended.length, 0, 'a cut blob is still pending')
  h.blob(digest('a'), { bytes: 10 })
  t.equal(h.ended.length, 1)
  t.notOk(h.ended[0]?.blobs.some((b) => b.failed), 'mended by the retry')
  const g = harness(1000)
  g.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]))
  g.blob(digest('a'), { status: 404 })
  g.clock.now += 1010
  g.sessions.sweep()
  t.ok(g.ended[0]?.blobs.some((b) => b.failed), 'an error not retried fails it')
})

t.test('two images at once from one client, and another client: each blob to its own pull', async (t) => {
  const h = harness()
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10], [digest('s'), 5]]))
  h.manifest(digest('n'), imageManifest(digest('d'), [[digest('b'), 10], [digest('s'), 5]]))
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10], [digest('s'), 5]]), { ua: 'skopeo/1.9' })
  for (const d of ['c', 'a', 's', 'd', 'b']) h.blob(digest(d))
  // The shared layer went to the first pull; the second still waits for it.
  t.same(h.ended.map((e) => e.digest), [digest('m')])
  h.blob(digest('s'))
  t.same(h.ended.map((e) => e.digest), [digest('m'), digest('n')])
  t.equal(h.sessions.open, 1, 'skopeo\'s pull is its own')
  for (const d of ['c', 'a', 's']) h.blob(digest(d), { ua: 'skopeo/1.9' })
  t.match(h.ended[2], { userAgent: 'skopeo/1.9', digest: digest('m') })
})

t.test('bounded: past maxClients the oldest client\'s pulls end', async (t) => {
  const h = harness(1000, 10)
  for (let i = 0; i < 25; i++) h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]), { address: `10.0.1.${i}` })
  t.equal(h.sessions.open, 10, 'ten clients tracked')
  t.equal(h.ended.length, 15, 'the fifteen oldest ended (as resolves)')
})

t.test('any interleaving of requests: no throw, bounded, every session ends once', async (t) => {
  const digests = ['a', 'b', 'c', 'd', 'm', 'n', 'i'].map(digest)
  const manifests = [imageManifest(digests[2] as string, [[digests[0] as string, 10], [digests[1] as string, 20]]), imageManifest(digests[3] as string, [[digests[1] as string, 20]])]
  const step = fc.oneof(
    fc.record({ kind: fc.constant('manifest' as const), m: fc.integer({ min: 0, max: 1 }), ua: fc.constantFrom('a', 'b', 'c'), head: fc.boolean() }),
    fc.record({ kind: fc.constant('index' as const), ua: fc.constantFrom('a', 'b', 'c') }),
    fc.record({ kind: fc.constant('blob' as const), d: fc.integer({ min: 0, max: 3 }), ua: fc.constantFrom('a', 'b', 'c'), ok: fc.boolean(), start: fc.boolean() }),
    fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 3000 }) }),
  )
  fc.assert(fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
    const h = harness(1000, 2)
    let manifestsServed = 0
    for (const s of steps) {
      if (s.kind === 'manifest') {
        manifestsServed++
        h.manifest(digests[4 + s.m] as string, manifests[s.m] as Buffer, { ua: s.ua, method: s.head ? 'HEAD' : 'GET', address: s.ua })
      } else if (s.kind === 'index') {
        h.manifest(digests[6] as string, index([[digests[4] as string, 'linux/amd64']]), { ua: s.ua, mediaType: OCI_INDEX, address: s.ua })
      } else if (s.kind === 'blob') {
        h.blob(digests[s.d] as string, { ua: s.ua, address: s.ua, status: s.ok ? 200 : 500, start: s.start })
      } else {
        h.clock.now += s.ms
        h.sessions.sweep()
      }
      if (h.sessions.open > 2 * 32) return false
    }
    h.sessions.endAll()
    const again = h.ended.length
    h.sessions.endAll()
    h.sessions.sweep()
    return h.sessions.open === 0 && h.ended.length === again && h.ended.filter((e) => e.layers !== undefined).length <= manifestsServed
  }), { seed: 42, numRuns: 300 })
  t.pass('300 random interleavings')
})

t.test('a layer cut and resumed with a range counts its whole size once; a redirect counts the manifest size', async (t) => {
  const h = harness(1000)
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 1000]]))
  h.blob(digest('c'), { bytes: 0, complete: true })
  h.blob(digest('a'), { bytes: 0, complete: false })
  h.blob(digest('a'), { bytes: 400 })
  t.same(h.ended[0]?.blobs.map((b) => [b.digest, b.bytes, b.failed]), [[digest('c'), 100, false], [digest('a'), 1000, false]], 'the layer: its 1000 bytes, mended')
  const g = harness(1000)
  g.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 1000]]))
  g.sessions.served({ seq: ++seq, kind: 'blob', method: 'GET', status: 307, upstream: 'reg', repository: 'team/app', tag: undefined, digest: digest('a'), manifest: undefined, cache: 'hit', redirect: true, bytes: 0, complete: true, client: { address: '10.0.0.1', userAgent: 'containerd/1.6' }, startedAt: g.clock.now, firstByteAt: undefined, endedAt: g.clock.now + 1 })
  g.clock.now += 1010
  g.sessions.sweep()
  t.match(g.ended[0]?.blobs, [{ bytes: 1000, redirect: true, failed: false }], 'a redirected layer')
})

t.test('full: a client with a blob still sending is not the one ended', async (t) => {
  const h = harness(1000, 10)
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]), { address: '10.0.9.9' })
  h.sessions.blobStarted({ seq: 777_777, upstream: 'reg', repository: 'team/app', digest: digest('a'), client: { address: '10.0.9.9', userAgent: 'containerd/1.6' }, at: h.clock.now })
  for (let i = 0; i < 9; i++) h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]), { address: `10.0.1.${i}` })
  h.manifest(digest('m'), imageManifest(digest('c'), [[digest('a'), 10]]), { address: '10.0.2.1' })
  t.equal(h.ended.length, 1)
  t.not(h.ended[0]?.address, '10.0.9.9', 'the sending one kept')
})
