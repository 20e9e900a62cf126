// `stevedore prefetch`, the built CLI as a child process, against the real
// mirror process and the real upstream registry: a prefetched image pulls
// through containerd with the upstream stopped; --json is the API's status;
// failures and refusals are named; usage errors; --file and stdin; one line
// per change off a terminal, bars under a pseudo-terminal (script(1));
// client auth. The retry paths (503 with Retry-After, a mirror gone while
// polling) run against a STAND-IN mirror: a few lines of node:http answering
// as the API does, because the real mirror cannot be told to be busy or to
// vanish at a given poll.
import { spawn } from 'node:child_process'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startContainerd, writeHostsToml } from '../harness/containerd.js'
import { startFaultProxy } from '../harness/fault-proxy.js'
import { fetchAll } from '../harness/http.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'
import type { ImageStatus, JobStatus } from '../harness/prefetch-status.js'
import { cleanEnv, REPO_ROOT, startMirror } from '../harness/mirror.js'
import { cachedBlobPath, startStack, type Stack } from '../harness/stack.js'
import { freePort, requireTools, run, runOk, tempDir, waitFor, type RunResult } from '../harness/tools.js'

const CLI = join(REPO_ROOT, 'dist', 'cli.js')

/** The command line of the built CLI, without tap's loader in NODE_OPTIONS (as an operator runs it). */
const command = (args: string[]): string[] => ['-u', 'NODE_OPTIONS', process.execPath, CLI, 'prefetch', ...args]

function prefetch(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  // STEVEDORE_AUTH of the machine running the tests must not leak in.
  return run('env', command(args), { env: cleanEnv({ STEVEDORE_AUTH: '', ...opts.env }), timeoutMs: 120_000, ...(opts.input !== undefined ? { input: opts.input } : {}) })
}

/** The summary table's row of an image: its cells. */
function row(stdout: string, image: string): string[] | undefined {
  return stdout.split('\n').find((l) => l.startsWith(`${image} `))?.split(/\s{2,}/)
}

const jsonLines = (stdout: string): JobStatus[] => stdout.trim().split('\n').map((l) => JSON.parse(l) as JobStatus)

/** Every config and layer digest of a manifest or index, read from the registry itself. */
async function blobsOf(s: Stack, reference: string): Promise<string[]> {
  const accept = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json'
  const r = await fetchAll(`${s.registry.url}/v2/${s.repo}/manifests/${reference}`, { headers: { accept } })
  if (r.status !== 200) throw new Error(`manifest ${reference}: ${r.status}`)
  const doc = JSON.parse(r.body.toString()) as { manifests?: Array<{ digest: string }>; config?: { digest: string }; layers?: Array<{ digest: string }> }
  if (doc.manifests !== undefined) return (await Promise.all(doc.manifests.map((m) => blobsOf(s, m.digest)))).flat()
  return [doc.config?.digest ?? '', ...(doc.layers ?? []).map((l) => l.digest)]
}

t.test('prefetch warms the cache; containerd then pulls the images with the upstream stopped', async (t) => {
  if (!requireTools(t, 'docker-registry', 'containerd', 'ctr')) return
  const s = await startStack(t, { layers: [1_500_000, 700_000] })
  const oci = `${s.registry.host}/${s.repo}:oci`
  const index = `${s.registry.host}/${s.repo}:index`
  const blobs = [...new Set([...(await blobsOf(s, 'oci')), ...(await blobsOf(s, 'index'))])]
  t.equal(blobs.length, 5, 'two platforms of the index: the oci image (config, 2 layers) and the other one (config, 1 layer)')
  t.ok(blobs.every((d) => !existsSync(cachedBlobPath(s.cacheRoot, d))), 'nothing cached before')

  const r = await prefetch(['--mirror', s.mirror.url, oci, index])
  t.equal(r.code, 0, `exit 0: ${r.stderr}`)
  t.match(row(r.stdout, oci), [oci, 'done', s.oci.digest.slice(0, 19)], 'the table: oci done, its digest short')
  t.match(row(r.stdout, index), [index, 'done', s.index.digest.slice(0, 19), /linux\/\w+,linux\/\w+/], 'index done, both platforms')
  t.match(r.stdout, /^IMAGE\s+STATE\s+DIGEST\s+PLATFORMS\s+LAYERS F\/C\/T\s+BYTES FETCHED\/TOTAL\s+TIME$/m, 'the header')
  t.match(r.stdout, /^2 images: 2 done$/m, 'the totals')
  for (const d of blobs) t.ok(existsSync(cachedBlobPath(s.cacheRoot, d)), `${d.slice(0, 19)} is in the mirror's cache`)
  // Not a terminal here: one line per change, on stderr.
  t.match(r.stderr, new RegExp(`^\\[1/2\\] ${oci.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: done, layers 3/3 `, 'm'), 'a progress line for the end of the oci image')

  const again = await prefetch(['--mirror', s.mirror.url, '--json', oci, index])
  t.equal(again.code, 0, `a second prefetch: ${again.stderr}`)
  const warm = jsonLines(again.stdout)[0]
  t.same(warm?.images.map((i) => [i.state, i.layers.fetched, i.layers.cached]), [['done', 0, 3], ['done', 0, 5]], 'a second prefetch finds every blob cached')

  await s.registry.stop()
  const ctrd = await startContainerd(t)
  const hostsDir = await tempDir(t, 'stevedore-prefetch-hosts')
  await writeHostsToml(hostsDir, s.registry.host, s.registry.url, s.mirror.url)
  for (const ref of [oci, index]) {
    const pulled = await ctrd.pull(ref, { hostsDir, plainHttp: true })
    t.equal(pulled.code, 0, `ctr pull ${ref} with the upstream stopped: ${pulled.stderr.slice(-500)}`)
  }
  t.same((await ctrd.images()).sort(), [index, oci].sort(), 'containerd has both')
  // The control: an image nobody prefetched cannot be had now.
  const cold = await ctrd.pull(`${s.registry.host}/${s.repo}:docker`, { hostsDir, plainHttp: true, timeoutMs: 60_000 })
  t.not(cold.code, 0, 'an image not prefetched fails to pull with the upstream stopped')
})

t.test('against one mirror: --json, failures, --file and stdin, jobs split to the mirror\'s limit', async (t) => {
  if (!requireTools(t, 'docker-registry')) return
  const s = await startStack(t)
  const good = `${s.registry.host}/${s.repo}:oci`

  await t.test('--json prints the API\'s job status on stdout, and only that', async (t) => {
    const r = await prefetch(['--mirror', s.mirror.url, '--json', '--platform', 'linux/arm64,linux/amd64', `${s.registry.host}/${s.repo}:list`])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.stderr, '', 'no progress on stderr either')
    const jobs = jsonLines(r.stdout)
    t.equal(jobs.length, 1, 'one job, one line')
    const job = jobs[0] as JobStatus
    t.equal(job.state, 'done')
    t.same(job.platforms, ['linux/arm64', 'linux/amd64'], 'the platforms asked for')
    const api = await fetchAll(`${s.mirror.url}/api/v1/prefetch/${job.id}`)
    t.equal(api.status, 200)
    t.same(job, JSON.parse(api.body.toString()), 'the same document GET /api/v1/prefetch/{id} answers')
  })

  await t.test('a registry the mirror does not mirror and a missing tag: exit 1, each named on stderr, the good image done', async (t) => {
    const missing = `${s.registry.host}/${s.repo}:no-such-tag`
    s.registry.resetRequests()
    const r = await prefetch(['--mirror', s.mirror.url, good, 'quay.io/x/y:1', missing])
    t.equal(r.code, 1, 'exit 1')
    t.match(row(r.stdout, good), [good, 'done'], 'the good image is done')
    t.match(row(r.stdout, 'quay.io/x/y:1'), ['quay.io/x/y:1', 'refused', '-'])
    t.match(row(r.stdout, missing), [missing, 'failed', '-'])
    t.match(r.stdout, /^3 images: 1 done, 1 failed, 1 refused$/m)
    const reasons = r.stderr.split('\n').filter((l) => l.startsWith('stevedore prefetch: '))
    t.equal(reasons.length, 2, `one line per image that is not warm:\n${reasons.join('\n')}`)
    t.match(reasons, [/^stevedore prefetch: quay\.io\/x\/y:1: refused: .*quay\.io/, new RegExp(`^stevedore prefetch: ${missing}: failed: .+`)])
    await s.registry.settle()
    t.notOk(s.registry.requests().some((q) => q.path.includes('/x/y/')), 'nothing about quay.io went to the one upstream')
  })

  await t.test('--file (comments, blank lines) and - (stdin) combine with the arguments', async (t) => {
    const dir = await tempDir(t, 'stevedore-prefetch-file')
    const file = join(dir, 'images.txt')
    await writeFile(file, `# the release's images\n\n${s.registry.host}/${s.repo}:docker   # the docker one\n   \n${good}\n`)
    const r = await prefetch(['--mirror', s.mirror.url, '--file', file, '-', `${s.registry.host}/${s.repo}:index`], { input: `${s.registry.host}/${s.repo}:list\n# end\n` })
    t.equal(r.code, 0, r.stderr)
    const images = r.stdout.split('\n').filter((l) => l.startsWith(s.registry.host)).map((l) => l.split(/\s+/).slice(0, 2).join(' '))
    t.same(images, ['index', 'docker', 'oci', 'list'].map((tag) => `${s.registry.host}/${s.repo}:${tag} done`), 'the arguments first, then the file, then stdin; all done')
    const fromStdinOnly = await prefetch(['--mirror', s.mirror.url, '--json', '--file', '-'], { input: `${good}\n` })
    t.equal(fromStdinOnly.code, 0, fromStdinOnly.stderr)
    t.same(jsonLines(fromStdinOnly.stdout)[0]?.images.map((i) => i.image), [good], '--file - reads stdin')
  })

  await t.test('more images than prefetch.maxImagesPerJob: sent in jobs the mirror takes', async (t) => {
    const dir = await tempDir(t, 'stevedore-prefetch-small')
    const small = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, prefetch: { maxImagesPerJob: 2 } } })
    const images = [...['oci', 'docker', 'index', 'list'].map((tag) => `${s.registry.host}/${s.repo}:${tag}`), `${s.registry.host}/${s.repo}@${s.oci.digest}`]
    const r = await prefetch(['--mirror', small.url, '--json', ...images])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stderr, /at most 2 images per job \(prefetch\.maxImagesPerJob\)/, 'says why it splits')
    const jobs = jsonLines(r.stdout)
    t.same(jobs.map((j) => j.images.length), [2, 2, 1], 'three jobs, one line each')
    t.same(jobs.flatMap((j) => j.images.map((i) => i.image)), images, 'every image once, in order')
    t.ok(jobs.every((j) => j.state === 'done'))
  })
})

t.test('usage errors exit 2 before asking anything', async (t) => {
  const port = await freePort() // nothing listens there: a usage error must not get as far as asking it
  const mirror = `http://127.0.0.1:${port}`
  const cases: Array<[string, string[], RegExp]> = [
    ['no images', ['--mirror', mirror], /no images given/],
    ['no --mirror', ['127.0.0.1:5000/a:1'], /--mirror is required/],
    ['a bad --mirror', ['--mirror', 'ftp://x', '127.0.0.1:5000/a:1'], /--mirror: must start with http/],
    ['a bad --platform', ['--mirror', mirror, '--platform', 'linux', '127.0.0.1:5000/a:1'], /--platform: must be os\/architecture/],
    ['an unknown flag', ['--mirror', mirror, '--bogus', '127.0.0.1:5000/a:1'], /Unknown option '--bogus'/],
    ['an unreadable --file', ['--mirror', mirror, '--file', '/nonexistent/images.txt'], /--file \/nonexistent\/images\.txt: ENOENT/],
    ['not a reference', ['--mirror', mirror, 'Not A Reference'], /"Not A Reference" is not an image reference/],
    ['--ca with http', ['--mirror', mirror, '--ca', '/etc/hostname', '127.0.0.1:5000/a:1'], /--ca goes with an https/],
    ['a bad --user', ['--mirror', mirror, '--user', 'nocolon', '127.0.0.1:5000/a:1'], /--user: must be USER:PASS/],
  ]
  for (const [what, args, message] of cases) {
    const r = await prefetch(args)
    t.equal(r.code, 2, `${what}: exit 2`)
    t.match(r.stderr, message, `${what}: says so`)
    t.match(r.stderr, /Usage: stevedore prefetch/, `${what}: with the usage`)
    t.equal(r.stdout, '', `${what}: nothing on stdout`)
  }
  const help = await prefetch(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^Usage: stevedore prefetch --mirror URL/)
})

/** Shell quoting for script(1)'s command string. */
const sh = (arg: string): string => `'${arg.replace(/'/g, `'\\''`)}'`

t.test('progress: one line per change off a terminal, bars under a pseudo-terminal', async (t) => {
  if (!requireTools(t, 'docker-registry', 'script', 'stty')) return
  const s = await startStack(t, { layers: [600_000, 400_000] })
  // Blob bodies paced through a proxy: each image takes seconds, so many
  // polls see bytes move while the layer counts stand still.
  const faults = await startFaultProxy(t, s.registry.url)
  faults.add({ method: 'GET', pathIncludes: '/blobs/', fault: { kind: 'pace', bytesPerSecond: 400_000 } })
  const dir = await tempDir(t, 'stevedore-prefetch-progress')
  const config = { ...s.config, upstreams: { [faults.host]: { url: faults.url } }, defaultUpstream: faults.host }

  await t.test('not a terminal', async (t) => {
    const mirror = await startMirror(t, { config: { ...config, storage: { filesystem: { root: join(dir, 'lines') } } } })
    const images = ['oci', 'docker'].map((tag) => `${faults.host}/${s.repo}:${tag}`)
    const started = Date.now()
    const r = await prefetch(['--mirror', mirror.url, ...images])
    const seconds = (Date.now() - started) / 1000
    t.equal(r.code, 0, r.stderr)
    t.ok(seconds >= 2, `paced: the prefetch took ${seconds}s, a few polls (each 0.5 s) per image`)
    const lines = r.stderr.split('\n').filter((l) => l !== '')
    t.ok(lines.every((l) => /^\[[12]\/2\] \S+: (queued|running|done)/.test(l)), `every line is a progress line:\n${r.stderr}`)
    for (const [i, image] of images.entries()) {
      const mine = lines.filter((l) => l.startsWith(`[${i + 1}/2] ${image}: `))
      // What a line is told by: state and layer counts, never the bytes alone.
      const keys = mine.map((l) => /: (\w+)(?:, layers (\d+\/\d+) \((\d+) fetched, (\d+) cached)?/.exec(l)?.slice(1).join(' '))
      t.same(keys, [...new Set(keys)], `${image}: no line without a change of state or layer counts`)
      t.ok(mine.length >= 2 && mine.length <= 6, `${image}: ${mine.length} lines (queued/running, one per layer at most, done)`)
      t.match(mine.at(-1), /: done, layers 3\/3 \(3 fetched, 0 cached\), 1\.0\d? MB of 1\.0\d? MB$/, 'the last says done with the bytes')
    }
  })

  await t.test('a terminal (script -qfec)', async (t) => {
    const mirror = await startMirror(t, { config: { ...config, storage: { filesystem: { root: join(dir, 'bars') } } } })
    const images = ['oci', 'docker'].map((tag) => `${faults.host}/${s.repo}:${tag}`)
    const line = ['stty rows 40 cols 120;', 'exec env', ...command(['--mirror', mirror.url, ...images]).map(sh)].join(' ')
    const r = await run('script', ['-qfec', line, '/dev/null'], { env: cleanEnv({ STEVEDORE_AUTH: '' }), timeoutMs: 120_000 })
    t.equal(r.code, 0, `exit 0 under a pty: ${r.stdout.slice(-2000)}`)
    const out = r.stdout
    const frames = out.split(/\r|\x1b\[\d*[AGK]|\n/).filter((f) => f.includes('|') && f.includes(`${s.repo}:oci`))
    t.ok(frames.length >= 3, `several frames of the oci image's bar (${frames.length})`)
    t.ok(frames.some((f) => /\|[\u2591]+\| (queued|running)/.test(f) || /\|\u2588+\u2591+\| running/.test(f)), 'an empty or partly full bar while it runs')
    t.ok(frames.some((f) => /\|\u2588+\| done\s+3\/3 layers 1\.0\d? MB\/1\.0\d? MB/.test(f)), 'a full bar, done, with layers and bytes')
    const partial = new Set(frames.filter((f) => f.includes('running')).map((f) => /\| running (\d+\/\d+ layers \S+ \w+)/.exec(f)?.[1]))
    t.ok(partial.size >= 2, `the bytes move between frames: ${[...partial].join('; ')}`)
    t.match(out, /\x1b\[\?25l/, 'the cursor hidden while drawing')
    t.match(out, /\x1b\[\?25h/, 'and shown again')
    t.match(out, /IMAGE\s+STATE\s+DIGEST/, 'the summary after the bars')
    t.match(out, /2 images: 2 done/)
  })
})

t.test('with client auth on the mirror: --user and STEVEDORE_AUTH work; without, "authentication required"', async (t) => {
  if (!requireTools(t, 'docker-registry', 'htpasswd')) return
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-prefetch-auth')
  const file = join(dir, 'htpasswd')
  await runOk('htpasswd', ['-B', '-b', '-c', file, 'ci', 'rollout-secret'])
  const mirror = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, auth: { htpasswd: file } } })
  const image = `${s.registry.host}/${s.repo}:oci`

  const withUser = await prefetch(['--mirror', mirror.url, '--user', 'ci:rollout-secret', image])
  t.equal(withUser.code, 0, `--user: ${withUser.stderr}`)
  t.match(row(withUser.stdout, image), [image, 'done'])
  const fromEnv = await prefetch(['--mirror', mirror.url, '--json', image], { env: { STEVEDORE_AUTH: 'ci:rollout-secret' } })
  t.equal(fromEnv.code, 0, `STEVEDORE_AUTH: ${fromEnv.stderr}`)
  t.equal(jsonLines(fromEnv.stdout)[0]?.state, 'done')

  const without = await prefetch(['--mirror', mirror.url, image])
  t.equal(without.code, 1, 'exit 1 without credentials')
  t.match(without.stderr, /^stevedore prefetch: .*authentication required: .*--user USER:PASS or set STEVEDORE_AUTH$/m)
  t.equal(without.stdout, '', 'no table: nothing was prefetched')
  const wrong = await prefetch(['--mirror', mirror.url, '--user', 'ci:guess', image])
  t.equal(wrong.code, 1, 'exit 1 with a wrong password')
  t.match(wrong.stderr, /authentication failed: the mirror refused the credentials/)
  t.notMatch(wrong.stderr, /guess/, 'the password is not echoed')
})

t.test('an https mirror: trusted with --ca; without it, the certificate problem names --ca', async (t) => {
  if (!requireTools(t, 'docker-registry', 'openssl')) return
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-prefetch-tls')
  const ca = await makeCa(join(dir, 'ca'), 'stevedore test CA')
  const cert = await makeServerCert(join(dir, 'server'), ca)
  const mirror = await startMirror(t, {
    config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, tls: { cert: cert.certPath, key: cert.keyPath } },
    ca: await readFile(ca.certPath, 'utf8'),
  })
  const image = `${s.registry.host}/${s.repo}:oci`
  const trusted = await prefetch(['--mirror', mirror.url, '--ca', ca.certPath, image])
  t.equal(trusted.code, 0, `--ca: ${trusted.stderr}`)
  t.match(row(trusted.stdout, image), [image, 'done'])
  const untrusted = await prefetch(['--mirror', mirror.url, image])
  t.equal(untrusted.code, 1, 'exit 1 without the CA')
  t.match(untrusted.stderr, /a private CA\? give it with --ca FILE/)
  t.notMatch(untrusted.stderr, /trying again/, 'a certificate problem is not retried')
  const notPem = await prefetch(['--mirror', mirror.url, '--ca', join(dir, 'server', 'ext.cnf'), image])
  t.equal(notPem.code, 2, 'a --ca that is not a certificate is bad usage')
  t.match(notPem.stderr, /--ca: .*not a PEM certificate/)
})

// ---------------------------------------------------------------- a stand-in mirror

interface StandIn {
  url: string
  posts: number
  gets: number
  close(): void
}

/** A STAND-IN for the mirror's API (not the mirror): answers as `answer` says, records what it was asked. */
async function standIn(t: Test, answer: (req: IncomingMessage, res: ServerResponse, s: StandIn) => void): Promise<StandIn> {
  const port = await freePort()
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      if (req.method === 'POST') state.posts++
      else state.gets++
      answer(req, res, state)
    })
  })
  const sockets = new Set<import('node:net').Socket>()
  server.on('connection', (sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
  })
  const state: StandIn = {
    url: `http://127.0.0.1:${port}`,
    posts: 0,
    gets: 0,
    close: () => {
      server.close()
      for (const sock of sockets) sock.destroy()
    },
  }
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => state.close())
  return state
}

const image = (state: string): ImageStatus => ({
  image: 'registry.test/a:1', reference: 'registry.test/a:1', state, platforms: [], failures: [],
  layers: { total: 2, cached: 0, fetched: state === 'done' ? 2 : 0, failed: 0 }, bytes: { total: 10, cached: 0, fetched: state === 'done' ? 10 : 0 },
})
const job = (state: string): JobStatus => ({ id: 'job-1', state, createdAt: new Date().toISOString(), platforms: ['linux/amd64'], images: [image(state)] })
const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
}

t.test('stand-in mirror: a busy 503 on submit is waited out as Retry-After says', async (t) => {
  const mirror = await standIn(t, (req, res, s) => {
    if (req.method === 'POST' && s.posts <= 2) return send(res, 503, { errors: [{ code: 'UNAVAILABLE', message: 'too many prefetch jobs running', detail: null }] }, { 'retry-after': '1' })
    if (req.method === 'POST') return send(res, 202, job('running'), { location: '/api/v1/prefetch/job-1' })
    send(res, 200, job(s.gets >= 2 ? 'done' : 'running'))
  })
  const started = Date.now()
  const r = await prefetch(['--mirror', mirror.url, 'registry.test/a:1'])
  t.equal(r.code, 0, r.stderr)
  t.equal(mirror.posts, 3, 'two busy answers, then accepted')
  t.ok(Date.now() - started >= 2000, 'waited the second Retry-After asked, twice')
  t.match(r.stderr, /503 too many prefetch jobs running; trying again in 1 s/, 'said why it waits')
  t.match(r.stdout, /^registry\.test\/a:1\s+done/m)
})

t.test('stand-in mirror: gone while polling → a few tries, then exit 1 naming it', async (t) => {
  const mirror = await standIn(t, (req, res, s) => {
    if (req.method === 'POST') return send(res, 202, job('running'), { location: '/api/v1/prefetch/job-1' })
    send(res, 200, job('running'))
    if (s.gets === 2) s.close()
  })
  const r = await prefetch(['--mirror', mirror.url, 'registry.test/a:1'])
  t.equal(r.code, 1, 'exit 1')
  t.equal(mirror.gets, 2, 'polled until it went away')
  const tries = r.stderr.split('\n').filter((l) => / ECONNREFUSED; trying again in /.test(l))
  t.equal(tries.length, 5, `five retries, each said:\n${r.stderr}`)
  t.match(r.stderr, new RegExp(`^stevedore prefetch: ${mirror.url}/api/v1/prefetch/job-1: ECONNREFUSED \\(gave up after 6 tries\\); accepted job job-1 goes on in the mirror$`, 'm'))
  t.equal(r.stdout, '', 'no table for a job whose end was not seen')
})

t.test('stand-in mirror: a job the mirror forgot (restarted) is named', async (t) => {
  const mirror = await standIn(t, (req, res) => {
    if (req.method === 'POST') return send(res, 202, job('running'), { location: '/api/v1/prefetch/job-1' })
    send(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'no such prefetch job', detail: { id: 'job-1' } }] })
  })
  const r = await prefetch(['--mirror', mirror.url, 'registry.test/a:1'])
  t.equal(r.code, 1)
  t.match(r.stderr, /the mirror no longer knows job job-1 \(restarted\? jobs live in its memory only\)/)
})

t.test('stand-in mirror: SIGINT while it waits to retry → exit 130 at once, naming the job that goes on', async (t) => {
  const mirror = await standIn(t, (req, res, s) => {
    if (req.method === 'POST') return send(res, 202, job('running'), { location: '/api/v1/prefetch/job-1' })
    send(res, 200, job('running'))
    if (s.gets === 2) s.close()
  })
  // `env` execs node: the pid is the CLI's own, signalled by that pid only.
  const child = spawn('env', command(['--mirror', mirror.url, 'registry.test/a:1']), { env: cleanEnv({ STEVEDORE_AUTH: '' }), stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
  child.stdout.resume()
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => void child.kill('SIGKILL'))
  await waitFor(async () => /trying again in/.test(stderr), 20_000, 'the first retry')
  const sent = Date.now()
  child.kill('SIGINT')
  const code = await exited
  t.equal(code, 130, 'exit 130')
  t.ok(Date.now() - sent < 2000, `stopped waiting at once (${Date.now() - sent} ms)`)
  t.match(stderr, /^stevedore prefetch: interrupted; accepted job job-1 goes on in the mirror$/m)
})
