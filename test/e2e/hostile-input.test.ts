// Bad input never becomes a 5xx or a crash: a few hundred random and
// adversarial requests (paths, query strings with repeated keys, Range,
// Accept, Authorization, methods, malformed request lines) against a real
// mirror process in front of a real registry. Every answer is below 500,
// every 4xx carries the OCI error body, nothing reaches an unhandled
// rejection or uncaught exception, and a real pull still works afterwards.
// Replay a failure with FC_SEED=<seed printed> (and FC_PATH=<path>).
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { request } from 'undici'
import { apiRequestArb, insightsQueryArb, problems, rawArb, requestArb, type HostileRequest } from '../harness/hostile.js'
import { REPO_ROOT } from '../harness/mirror.js'
import { rawExchange, type RawAnswer } from '../harness/raw-http.js'
import { startStack } from '../harness/stack.js'
import { requireTools } from '../harness/tools.js'

const SEED = Number(process.env['FC_SEED'] ?? 20261203)
const PATH = process.env['FC_PATH']
const errorCode = (body: Buffer): string | undefined => {
  try {
    return (JSON.parse(body.toString()) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code
  } catch {
    return undefined
  }
}
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

t.test('hostile input against a real mirror', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t, { env: { NODE_OPTIONS: `--import=${join(REPO_ROOT, 'test', 'harness', 'crash-watch.mjs')}` } })
  const targets = {
    repo: s.repo,
    upstreamHost: s.registry.host,
    manifestDigests: [s.oci.digest, s.docker.digest, s.index.digest, s.list.digest],
    blobDigests: [s.oci.digest, s.oci.config.digest, ...s.oci.layers.map((l) => l.digest), ...s.docker.layers.map((l) => l.digest)],
    tags: ['oci', 'docker', 'index', 'list'],
  }
  const port = s.mirror.port
  const send = async (req: HostileRequest): Promise<RawAnswer | undefined> => {
    try {
      return await rawExchange(port, req.bytes, req.mustAnswer ? 5000 : 1500)
    } catch {
      return undefined
    }
  }
  const check = async (req: HostileRequest): Promise<void> => {
    const found = problems(req, await send(req))
    if (found.length > 0) throw new Error(`${found.join('; ')}\n  request: ${JSON.stringify(req.bytes.slice(0, 300))}`)
  }
  const run = async (name: string, arb: fc.Arbitrary<HostileRequest>, numRuns: number): Promise<void> => {
    try {
      // fast-check's message names the seed and path that replay the shrunk counterexample.
      await fc.assert(fc.asyncProperty(arb, check), { seed: SEED, numRuns, ...(PATH !== undefined ? { path: PATH } : {}) })
      t.pass(`${name}: ${numRuns} requests keep the rules (seed ${SEED})`)
    } catch (err) {
      const cause = err instanceof Error && err.cause !== undefined ? `\n  ${String(err.cause)}` : ''
      t.fail(`${name} (seed ${SEED}): ${String(err)}${cause}`)
    }
  }

  await t.test('inputs that were a 5xx, a dropped connection or a non-OCI body', async (t) => {
    const h = s.registry.host
    const get = (path: string, headers = ''): string => `GET ${path} HTTP/1.1\r\nhost: m\r\nconnection: close\r\n${headers}\r\n`
    const layer = s.oci.layers[0]?.digest ?? ''
    const cases: Array<[string, number, string]> = [
      [get('/v2/library/alpine/manifests/1?ns=docker.io&ns=ghcr.io'), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/manifests/oci?ns=${h}&ns=${h}`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/blobs/${layer}?ns=${h}&ns=${h}`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/tags/list?ns=${h}&ns=${h}`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/referrers/${s.oci.digest}?artifactType=a/b&artifactType=c/d`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/tags/list?n=1&n=2`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/tags/list?n=abc`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/tags/list?last=%00`), 400, 'UNSUPPORTED'],
      [get(`/v2/${s.repo}/manifests/oci?ns=%zz`), 400, 'UNSUPPORTED'],
      [get('/v2/%zz/manifests/x'), 400, 'NAME_INVALID'],
      [get(`/v2/${s.repo}/manifests/%zz`), 400, 'NAME_INVALID'],
      ['GET /v2/a\0b/manifests/x HTTP/1.1\r\nhost: m\r\n\r\n', 400, 'UNSUPPORTED'],
      ['FOO /v2/ HTTP/1.1\r\nhost: m\r\n\r\n', 400, 'UNSUPPORTED'],
      ['GET /v2/ HTTP/1.1\r\nhost: m\r\nbad header\r\n\r\n', 400, 'UNSUPPORTED'],
      [get('/v2/', `x-big: ${'h'.repeat(20_000)}\r\n`), 431, 'UNSUPPORTED'],
      [get('/v2/', 'expect: bogus\r\n'), 417, 'UNSUPPORTED'],
      ['GET /v2/ HTTP/1.1\r\nconnection: close\r\n\r\n', 400, 'UNSUPPORTED'],
      ['CONNECT /v2/ HTTP/1.1\r\nhost: m\r\n\r\n', 405, 'UNSUPPORTED'],
      ['PROPFIND /v2/ HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n', 405, 'UNSUPPORTED'],
      [`POST /v2/${s.repo}/blobs/uploads/ HTTP/1.1\r\nhost: m\r\nconnection: close\r\ncontent-type: ;;;\r\ncontent-length: 2\r\n\r\n{}`, 405, 'UNSUPPORTED'],
    ]
    for (const [bytes, status, code] of cases) {
      const what = JSON.stringify(bytes.split('\r\n', 1)[0]?.slice(0, 100))
      const a = await rawExchange(port, bytes)
      t.equal(a.status, status, `${what}: ${status}`)
      t.equal(errorCode(a.body), code, `${what}: ${code}`)
      t.equal(a.headers['docker-distribution-api-version'], 'registry/2.0', `${what}: API version header`)
    }
  })

  await run('HTTP/1.1 requests with random parts', requestArb(targets), 300)
  await run('malformed request lines and framing', rawArb(targets), 120)
  await run('JSON API requests with random bodies', apiRequestArb(targets), 150)
  await run('insights and status page requests with random queries', insightsQueryArb(targets), 150)

  await s.mirror.settle()
  t.equal(s.mirror.exitStatus(), null, 'the mirror process is still running')
  const watched = s.mirror.stderr().split('\n').filter((l) => l.startsWith('CRASH-WATCH'))
  t.equal(watched[0], 'CRASH-WATCH armed', 'the crash watch is loaded in the mirror process')
  t.same(watched.slice(1), [], 'no unhandled rejection or uncaught exception in the mirror')
  t.notOk(s.mirror.logs().some((l) => l['msg'] === 'unhandled rejection'), 'no unhandled rejection logged')

  // A real pull: the manifest by tag, then its config and layers by digest.
  const base = `${s.mirror.url}/v2/${s.repo}`
  const m = await request(`${base}/manifests/oci?ns=${encodeURIComponent(s.registry.host)}`, { headers: { accept: s.oci.mediaType } })
  const manifest = Buffer.from(await m.body.arrayBuffer())
  t.equal(m.statusCode, 200, 'manifest still served')
  t.ok(manifest.equals(s.oci.manifest), 'exact manifest bytes')
  const doc = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
    const b = await request(`${base}/blobs/${d}`)
    const body = Buffer.from(await b.body.arrayBuffer())
    t.equal(b.statusCode, 200, `blob ${d.slice(7, 19)} served`)
    t.equal(sha(body), d, `blob ${d.slice(7, 19)} hashes to its digest`)
  }
})

// The test process itself: a handler that leaked a promise would show here too.
const leaks: unknown[] = []
process.on('unhandledRejection', (err) => leaks.push(err))
process.on('uncaughtException', (err) => leaks.push(err))
t.teardown(() => {
  if (leaks.length > 0) throw new Error(`unhandled in the test process: ${leaks.map(String).join('; ')}`)
})
