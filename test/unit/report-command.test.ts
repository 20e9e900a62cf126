// `stevedore report` end to end, in-process (runReportCommand with its own
// io), against STAND-IN mirrors: small node:http (and https) servers on
// 127.0.0.1 that answer /api/v1/summary, images, layers and pulls with the
// fixture JSON, as the insights API does. They stand in for the real mirror
// because they can be made to answer as two replicas, to vanish, to ask for
// credentials or to sit behind a load balancer at will; the test against the
// real mirror after real pulls is an e2e test.
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { basicAuthorization, type CommandIo } from '../../src/cli/usage.js'
import { REPORT_USAGE, runReportCommand, type ReportOptions } from '../../src/insights/report/command.js'
import { buildReport, type ReportDocument } from '../../src/insights/report/document.js'
import { REPO_ROOT } from '../harness/mirror.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'
import { freePort, requireTools, tempDir } from '../harness/tools.js'
import { APP, insightsOf, ML, replicaA, replicaB, type ReplicaFixture } from './report-fixtures.js'

interface StandIn {
  readonly url: string
  /** The paths asked for, with their query. */
  readonly asked: string[]
}

type Answer = (req: IncomingMessage, res: ServerResponse) => boolean

/** A STAND-IN mirror answering the insights API from a fixture; `before` may answer first (auth, errors). */
async function standIn(t: Test, fixture: (path: string) => ReplicaFixture, opts: { before?: Answer; tls?: { cert: string; key: string } } = {}): Promise<StandIn> {
  const asked: string[] = []
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    asked.push(req.url ?? '')
    if (opts.before?.(req, res) === true) return
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const f = fixture(path)
    const body = ({ '/api/v1/summary': f.summary, '/api/v1/images': f.images, '/api/v1/layers': f.layers, '/api/v1/pulls': f.pulls } as Record<string, unknown>)[path]
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'NOT_FOUND', message: 'no such route' }] }))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
  }
  const server: Server = opts.tls !== undefined ? createHttpsServer(opts.tls, handler) : createHttpServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { url: `${opts.tls !== undefined ? 'https' : 'http'}://127.0.0.1:${address.port}`, asked }
}

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const NOW = new Date('2026-12-02T12:00:10.000Z')
// Retries a few ms apart: the retry path runs, the test stays quick.
const QUICK: ReportOptions = { backoffMs: [10, 10], timeoutMs: 5000, now: () => NOW }

async function report(args: string[], env: NodeJS.ProcessEnv = {}, options: ReportOptions = QUICK): Promise<Ran> {
  let stdout = ''
  let stderr = ''
  const io: CommandIo = { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env, signal: new AbortController().signal }
  const code = await runReportCommand(args, io, options)
  return { code, stdout, stderr }
}

const origin = (url: string): string => new URL(url).origin

t.test('two replicas: exit 0, the merged tables; --json is the merged data and the advice', async (t) => {
  const a = await standIn(t, replicaA)
  const b = await standIn(t, replicaB)
  const r = await report(['--mirror', a.url, '--mirror', b.url])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '', 'nothing on stderr')
  t.match(r.stdout, /^Stevedore report: 2 replicas \(mirror-a at http:\/\/127\.0\.0\.1:\d+, mirror-b at http:\/\/127\.0\.0\.1:\d+\)/)
  t.match(r.stdout, /^docker\.io\/library\/app:1\s+6\s+4\s+1\s+1\s+4\.00 s\s+10\.0 s/m, 'app:1 with the pulls of both')
  t.match(r.stdout, /requests from cache\s+350 of 400 \(87\.5%\)/)
  t.match(r.stdout, /^Size advice/m)
  t.same(a.asked.sort(), ['/api/v1/images?limit=1000000', '/api/v1/layers?limit=1000000', '/api/v1/pulls?limit=1000000', '/api/v1/summary'], 'the four documents, once each')

  const j = await report(['--mirror', a.url, '--mirror', b.url, '--json'])
  t.equal(j.code, 0, j.stderr)
  const doc = JSON.parse(j.stdout) as ReportDocument
  const want = buildReport([
    { url: origin(a.url), state: 'merged', instance: 'mirror-a' },
    { url: origin(b.url), state: 'merged', instance: 'mirror-b' },
  ], [insightsOf(replicaA()), insightsOf(replicaB())], NOW)
  t.same(doc, JSON.parse(JSON.stringify(want)), 'the whole merged document')
  t.equal(doc.images.length, 4, 'every image, not --top of them')
  t.equal(doc.summary.cache.size, 5_200_000_000, 'the shared bucket once')
  t.equal(doc.advice.sharedBase?.estimatedSavedBytes, 3_000_000)
  t.equal(doc.images.find((i) => i.image === APP)?.uniqueBytes, 5_000_000, 'unique bytes over both replicas')

  const top = await report(['--mirror', a.url, '--mirror', b.url, '--top', '1'])
  t.match(top.stdout, /^Top images by pull-seconds \(top 1 of 4\)$/m)
  t.match(top.stdout, new RegExp(`^${ML.replace(/\./g, '\\.')}\\s+1\\s+1`, 'm'))
})

t.test('a replica that cannot be reached: named on stderr, the others reported, exit 1', async (t) => {
  const a = await standIn(t, replicaA)
  const gone = `http://127.0.0.1:${await freePort()}`
  const r = await report(['--mirror', a.url, '--mirror', gone])
  t.equal(r.code, 1)
  t.match(r.stderr, `stevedore report: ${gone} left out of the report: `, 'named')
  t.match(r.stderr, /ECONNREFUSED \(gave up after 3 tries\)/, 'after the retries')
  t.equal(r.stderr.match(/trying again in 0 s/g)?.length, 2, 'each retry told, once per replica (the summary is asked first)')
  t.match(r.stderr, /1 of 2 replicas left out: the report covers only the pulls of the others/)
  t.match(r.stdout, /^Stevedore report: 1 replica \(mirror-a at /, 'the report of the one that answered')
  t.match(r.stdout, new RegExp(`^Left out: ${gone.replace(/\./g, '\\.')}: `, 'm'), 'and named in it')
  const j = await report(['--mirror', a.url, '--mirror', gone, '--json'])
  t.equal(j.code, 1)
  t.match((JSON.parse(j.stdout) as ReportDocument).mirrors, [{ url: origin(a.url), state: 'merged' }, { url: gone, state: 'missing', error: /ECONNREFUSED/ }], '--json says which is missing')

  const none = await report(['--mirror', gone])
  t.equal(none.code, 1, 'no replica answered')
  t.equal(none.stdout, '', 'nothing to report')
  t.match(none.stderr, /no replica answered: nothing to report/)
})

t.test('a replica failing with 5xx is asked again; one that recovers is reported', async (t) => {
  let failures = 2
  const flaky = await standIn(t, replicaA, {
    before: (req, res) => {
      if (!req.url?.startsWith('/api/v1/summary') || failures === 0) return false
      failures--
      res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'starting' }] }))
      return true
    },
  })
  const r = await report(['--mirror', flaky.url])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, /\/api\/v1\/summary: 503 starting; trying again/)
  t.equal(flaky.asked.filter((p) => p === '/api/v1/summary').length, 3)
})

t.test('a mirror that asks for credentials: a clear message; --user and STEVEDORE_AUTH are sent', async (t) => {
  const good = basicAuthorization('ops:s3cret')
  const locked = await standIn(t, replicaA, {
    before: (req, res) => {
      if (req.headers.authorization === good) return false
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="stevedore"' }).end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }))
      return true
    },
  })
  const none = await report(['--mirror', locked.url])
  t.equal(none.code, 1)
  t.match(none.stderr, `${origin(locked.url)} left out of the report: ${locked.url}/api/v1/`)
  t.match(none.stderr, /authentication required: the mirror asks for credentials \(401\); give --user USER:PASS or set STEVEDORE_AUTH/)
  t.notMatch(none.stderr, /trying again/, 'a 401 is not retried')
  const wrong = await report(['--mirror', locked.url, '--user', 'ops:nope'])
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /the mirror refused the credentials of --user \/ STEVEDORE_AUTH \(401\)/)
  t.match(wrong.stderr, /warning: --user with an http:\/\/ mirror: the credentials travel unencrypted/)
  const right = await report(['--mirror', locked.url, '--user', 'ops:s3cret'])
  t.equal(right.code, 0, right.stderr)
  const fromEnv = await report(['--mirror', locked.url], { STEVEDORE_AUTH: 'ops:s3cret' })
  t.equal(fromEnv.code, 0, fromEnv.stderr)
  t.match(fromEnv.stderr, /warning: STEVEDORE_AUTH with an http:\/\/ mirror/)
})

t.test('answers that are not a replica\'s insights', async (t) => {
  const other = await standIn(t, () => { throw new Error('unused') }, {
    before: (_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return true
    },
  })
  const r = await report(['--mirror', other.url])
  t.equal(r.code, 1)
  t.match(r.stderr, /: 404 \(is --mirror a Stevedore mirror with the insights API\?\)/)

  let n = 0
  const balanced = await standIn(t, () => (n++ % 2 === 0 ? replicaA() : replicaB()))
  const lb = await report(['--mirror', balanced.url])
  t.equal(lb.code, 1)
  t.match(lb.stderr, /answered by several replicas \(mirror-[ab], mirror-[ab]\): a load-balanced address; give each replica's own address with --mirror/)

  const a = await standIn(t, replicaA)
  const twice = await report(['--mirror', a.url, '--mirror', a.url.replace('127.0.0.1', 'localhost')])
  t.equal(twice.code, 0, `two addresses of one replica: ${twice.stderr}`)
  t.match(twice.stderr, /answered as mirror-a, as http:\/\/127\.0\.0\.1:\d+ did: counted once/)
  t.match(twice.stdout, /requests from cache\s+80 of 100/, 'its figures once')
})

t.test('a replica that does not answer: given up after the timeout; Ctrl-C ends the wait', async (t) => {
  const silent = await standIn(t, replicaA, { before: () => true })
  // One try: undici's timers tick about once a second, so each try costs one.
  const slow = await report(['--mirror', silent.url], {}, { ...QUICK, backoffMs: [], timeoutMs: 150 })
  t.equal(slow.code, 1)
  t.match(slow.stderr, /no answer in time \(gave up after 1 try\)/)
  let stderr = ''
  const stop = new AbortController()
  setTimeout(() => stop.abort(), 100)
  const code = await runReportCommand(['--mirror', silent.url], { stdout: () => undefined, stderr: (s) => void (stderr += s), env: {}, signal: stop.signal }, { now: () => NOW })
  t.equal(code, 130, 'interrupted')
  t.equal(stderr, 'stevedore report: interrupted\n')
})

t.test('https with a private CA: --ca names the fix, then works', async (t) => {
  if (!requireTools(t, 'openssl')) return
  const dir = await tempDir(t, 'stevedore-report-tls')
  const ca = await makeCa(join(dir, 'ca'), 'report-test-ca')
  const cert = await makeServerCert(join(dir, 'server'), ca)
  const secure = await standIn(t, replicaB, { tls: { cert: await readFile(cert.certPath, 'utf8'), key: await readFile(cert.keyPath, 'utf8') } })
  const untrusted = await report(['--mirror', secure.url])
  t.equal(untrusted.code, 1)
  t.match(untrusted.stderr, /\(a private CA\? give it with --ca FILE\)/)
  t.notMatch(untrusted.stderr, /trying again/, 'a certificate problem is not retried')
  const trusted = await report(['--mirror', secure.url, '--ca', ca.certPath])
  t.equal(trusted.code, 0, trusted.stderr)
  t.match(trusted.stdout, /mirror-b at https:\/\/127\.0\.0\.1:/)
  const notPem = await report(['--mirror', secure.url, '--ca', cert.keyPath])
  t.equal(notPem.code, 1)
  t.match(notPem.stderr, /not a PEM certificate/)
})

t.test('usage: exit 2 with the reason; --help exit 0', async (t) => {
  const help = await report(['--help'])
  t.equal(help.code, 0)
  t.equal(help.stdout, REPORT_USAGE)
  const cases: Array<[string[], RegExp]> = [
    [[], /--mirror is required/],
    [['--mirror', 'ftp://x'], /--mirror: must start with http:\/\/ or https:\/\//],
    [['--mirror', 'http://127.0.0.1:1/path'], /--mirror: must be a bare origin/],
    [['--mirror', 'http://127.0.0.1:1', '--top', '0'], /--top: must be a whole number from 1 to 1000/],
    [['--mirror', 'http://127.0.0.1:1', '--top', 'ten'], /--top: must be a whole number/],
    [['--mirror', 'http://127.0.0.1:1', '--ca', '/dev/null'], /--ca goes with an https:\/\/ --mirror/],
    [['--mirror', 'http://127.0.0.1:1', '--user', 'nopassword'], /--user: must be USER:PASS/],
    [['--mirror', 'http://127.0.0.1:1', 'extra'], /unexpected argument "extra"/],
    [['--mirror', 'http://127.0.0.1:1', '--colour'], /Unknown option '--colour'/],
  ]
  for (const [args, why] of cases) {
    const r = await report(args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, why, args.join(' '))
    t.match(r.stderr, /Usage: stevedore report --mirror URL/)
    t.equal(r.stdout, '')
  }
})

t.test('the stevedore command line has report', async (t) => {
  // Through src/cli.ts as the built dist/cli.js would run it (tsx compiles it on the fly): one run, as each costs seconds here.
  const cli = (args: string[]): Promise<Ran> => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (b: Buffer) => void (stdout += b.toString()))
    child.stderr.on('data', (b: Buffer) => void (stderr += b.toString()))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
  })
  const a = await standIn(t, replicaA)
  const r = await cli(['report', '--mirror', a.url, '--json'])
  t.equal(r.code, 0, r.stderr)
  t.equal((JSON.parse(r.stdout) as ReportDocument).summary.instances[0], 'mirror-a')
})
