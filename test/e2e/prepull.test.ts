// `stevedore prepull` against containerd 1.6's real CRI plugin: the built CLI
// asks a real mirror (in front of a real distribution registry) for its
// pre-pull list and pulls it through CRI into containerd's k8s.io namespace,
// the kubelet's; containerd goes through the mirror by the hosts.toml in its
// CRI config_path. Everything listens on 127.0.0.1.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startContainerd, writeHostsToml, type Containerd } from '../harness/containerd.js'
import { cleanEnv, REPO_ROOT, startMirror, type Mirror } from '../harness/mirror.js'
import { startStack, type Stack } from '../harness/stack.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'
import { freePort, LogTail, requireTools, run, runOk, spawnService, stopService, tempDir, waitFor, type RunResult } from '../harness/tools.js'

const CLI = join(REPO_ROOT, 'dist', 'cli.js')
const TOOLS = ['docker-registry', 'containerd', 'ctr'] as const

type Line = Record<string, unknown>

const jsonLines = (text: string): Line[] =>
  text.split('\n').flatMap((l) => {
    try {
      const v: unknown = JSON.parse(l)
      return v !== null && typeof v === 'object' && !Array.isArray(v) ? [v as Line] : []
    } catch {
      return []
    }
  })

interface Prepull extends RunResult {
  readonly lines: Line[]
}

async function prepull(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Prepull> {
  const r = await run(process.execPath, [CLI, 'prepull', ...args], { env: cleanEnv(env), timeoutMs: 180_000 })
  return { ...r, lines: jsonLines(r.stdout) }
}

/** Image references in containerd's k8s.io namespace (the harness's ctr() uses its own `test` namespace). */
async function kubeletImages(ctrd: Containerd): Promise<string[]> {
  const r = await runOk('ctr', ['--address', ctrd.address, '-n', 'k8s.io', 'images', 'ls', '-q'], { timeoutMs: 30_000 })
  return r.stdout.split('\n').map((l) => l.trim()).filter(Boolean)
}

/** Restarts the stack's mirror with `prepull.images` (and anything else) added to its config. */
async function restartWith(mirror: Mirror, config: Record<string, unknown>, extra: Record<string, unknown>): Promise<void> {
  await mirror.stop()
  await mirror.writeConfig({ ...config, ...extra })
  await mirror.start()
}

const withMsg = (lines: Line[], msg: string): Line[] => lines.filter((l) => l['msg'] === msg)
const imagesOf = (lines: Line[], msg: string): string[] => withMsg(lines, msg).map((l) => String(l['image'])).sort()

interface Setup {
  readonly s: Stack
  readonly ctrd: Containerd
  readonly refs: (...tags: string[]) => string[]
}

async function setup(t: Test, tags: string[]): Promise<Setup> {
  // Layers of a few MB, so that the pull times below say something.
  const s = await startStack(t, { layers: [4_000_000, 1_000_000] })
  const refs = (...ts: string[]): string[] => ts.map((tag) => `${s.registry.host}/${s.repo}:${tag}`)
  await restartWith(s.mirror, s.config, { prepull: { images: refs(...tags) } })
  const ctrd = await startContainerd(t)
  await writeHostsToml(ctrd.certsDir, s.registry.host, s.registry.url, s.mirror.url)
  s.registry.resetRequests()
  return { s, ctrd, refs }
}

t.test('--once pulls the list into the k8s.io namespace through the mirror; a second run pulls nothing', async (t) => {
  if (!requireTools(t, ...TOOLS)) return
  const { s, ctrd, refs } = await setup(t, ['oci', 'docker', 'index'])
  const expected = refs('oci', 'docker', 'index')
  const listed = (await (await fetch(`${s.mirror.url}/api/v1/prepull`)).json()) as { images: string[] }
  t.same(listed.images.slice().sort(), expected.slice().sort(), 'the mirror lists prepull.images')
  const seenBefore = s.mirror.logs().length

  const first = await prepull(['--cri', `unix://${ctrd.address}`, '--mirror', s.mirror.url, '--once'])
  t.equal(first.code, 0, `exit 0${first.code === 0 ? '' : `: ${first.stdout}${first.stderr}`}`)
  t.same(imagesOf(first.lines, 'pulled'), expected.slice().sort(), 'a "pulled" line per image')
  const pulled = withMsg(first.lines, 'pulled')
  t.ok(pulled.every((l) => typeof l['id'] === 'string' && String(l['id']).startsWith('sha256:')), 'each with the image id containerd gave')
  t.comment(`pull times (ms, concurrency 2, ~5 MB images): ${pulled.map((l) => `${String(l['image']).split(':').at(-1) ?? ''}=${String(l['ms'])}`).join(' ')}`)
  const round = withMsg(first.lines, 'round done')[0]
  t.match(round, { images: 3, present: 0, pulled: 3, failed: 0 }, 'the round\'s summary')
  t.comment(`first round: ${String(round?.['ms'])} ms`)
  t.equal(first.stderr, '', 'nothing on stderr')

  const inStore = await kubeletImages(ctrd)
  for (const ref of expected) t.ok(inStore.includes(ref), `${ref} is in containerd's k8s.io namespace`)

  // Through the mirror: containerd asked the mirror for every layer, and the
  // registry never heard from containerd (only from the mirror).
  await s.mirror.settle()
  await s.registry.settle()
  const fromContainerd = s.mirror.logs().slice(seenBefore).filter((l) => l['msg'] === 'request' && String(l['ua']).startsWith('containerd/'))
  for (const layer of [...s.oci.layers, ...s.docker.layers]) {
    t.ok(fromContainerd.some((l) => l['path'] === `/v2/${s.repo}/blobs/${layer.digest}` && l['status'] === 200), `containerd fetched layer ${layer.digest.slice(7, 19)} from the mirror`)
  }
  t.equal(s.registry.requests().filter((q) => q.userAgent.startsWith('containerd/')).length, 0, 'containerd never went to the registry itself')
  for (const layer of s.oci.layers) t.equal(s.registry.count('GET', `/blobs/${layer.digest}`), 1, `the registry served layer ${layer.digest.slice(7, 19)} once, to the mirror`)

  const seenAfterFirst = s.mirror.logs().length
  const second = await prepull(['--cri', `unix://${ctrd.address}`, '--mirror', s.mirror.url, '--once'])
  t.equal(second.code, 0, 'second run: exit 0')
  t.same(imagesOf(second.lines, 'already present'), expected.slice().sort(), 'an "already present" line per image')
  t.same(withMsg(second.lines, 'pulled'), [], 'and nothing pulled')
  await s.mirror.settle()
  const again = s.mirror.logs().slice(seenAfterFirst).filter((l) => l['msg'] === 'request' && l['path'] !== '/api/v1/prepull')
  t.same(again, [], 'the second run cost the mirror only the list request')
})

t.test('an image that cannot be pulled fails the run (exit 1, named with the reason); the others are still pulled', async (t) => {
  if (!requireTools(t, ...TOOLS)) return
  const { s, ctrd, refs } = await setup(t, ['no-such-tag', 'oci'])
  const [missing, good] = refs('no-such-tag', 'oci') as [string, string]
  // One at a time, the missing image first: the failure must not stop the round.
  const r = await prepull(['--cri', `unix://${ctrd.address}`, '--mirror', s.mirror.url, '--once', '--concurrency', '1'])
  t.equal(r.code, 1, 'exit 1')
  const failed = withMsg(r.lines, 'pull failed')
  t.equal(failed.length, 1, 'one failure')
  t.equal(failed[0]?.['image'], missing, 'naming the image')
  t.match(String(failed[0]?.['reason']), /not found|NotFound/i, `with containerd's reason: ${String(failed[0]?.['reason'])}`)
  t.equal(failed[0]?.['level'], 50, 'at level error')
  t.same(imagesOf(r.lines, 'pulled'), [good], 'the other image was pulled')
  t.ok((await kubeletImages(ctrd)).includes(good), 'and is in the store')
  t.notOk((await kubeletImages(ctrd)).includes(missing))
})

t.test('a mirror that cannot be reached, or asked for a list without its credentials, fails --once with exit 1', async (t) => {
  if (!requireTools(t, ...TOOLS, 'htpasswd')) return
  const { s, ctrd, refs } = await setup(t, ['oci'])
  const cri = `unix://${ctrd.address}`

  const nobody = `http://127.0.0.1:${await freePort()}`
  const down = await prepull(['--cri', cri, '--mirror', nobody, '--once'])
  t.equal(down.code, 1, 'unreachable mirror: exit 1')
  t.match(String(withMsg(down.lines, 'list unavailable')[0]?.['reason']), /ECONNREFUSED/, 'logged with the reason')
  t.same(await kubeletImages(ctrd), [], 'nothing pulled')

  // Client auth on: the list, like /v2/, wants credentials; containerd gets
  // its own from the hosts.toml that `stevedore hosts --auth-file` writes.
  const dir = await tempDir(t, 'stevedore-prepull-auth')
  const htpasswd = join(dir, 'htpasswd')
  await runOk('htpasswd', ['-B', '-b', '-c', htpasswd, 'node-agent', 'pull-secret'])
  const mirror = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, auth: { htpasswd }, prepull: { images: refs('oci') } } })
  const authFile = join(dir, 'auth')
  await writeFile(authFile, 'node-agent:pull-secret\n')
  const hosts = await run(process.execPath, [CLI, 'hosts', '--mirror', mirror.url, '--dir', ctrd.certsDir, '--config', mirror.configPath, '--auth-file', authFile, '--force'], { env: cleanEnv(), timeoutMs: 30_000 })
  t.equal(hosts.code, 0, `stevedore hosts --auth-file${hosts.code === 0 ? '' : `: ${hosts.stderr}`}`)

  const anonymous = await prepull(['--cri', cri, '--mirror', mirror.url, '--once'])
  t.equal(anonymous.code, 1, 'without --user: exit 1')
  t.match(String(withMsg(anonymous.lines, 'list unavailable')[0]?.['reason']), /asks for credentials.*--user/, 'a message that says what to give')
  const wrong = await prepull(['--cri', cri, '--mirror', mirror.url, '--once', '--user', 'node-agent:wrong'])
  t.equal(wrong.code, 1, 'a wrong password: exit 1')
  t.match(String(withMsg(wrong.lines, 'list unavailable')[0]?.['reason']), /refused the credentials/)
  t.notMatch(wrong.stdout + wrong.stderr, /wrong/, 'the password is not logged')

  const user = await prepull(['--cri', cri, '--mirror', mirror.url, '--once', '--user', 'node-agent:pull-secret'])
  t.equal(user.code, 0, `with --user: exit 0${user.code === 0 ? '' : `: ${user.stdout}`}`)
  t.same(imagesOf(user.lines, 'pulled'), refs('oci'), 'pulled through the mirror that wants credentials')
  t.match(user.stderr, /warning: --user with an http:\/\/ mirror/, 'with a warning about plain http')
  t.notMatch(user.stdout, /pull-secret/, 'the password is not logged')
  const env = await prepull(['--cri', cri, '--mirror', mirror.url, '--once'], { STEVEDORE_AUTH: 'node-agent:pull-secret' })
  t.equal(env.code, 0, 'with STEVEDORE_AUTH: exit 0')
  t.same(imagesOf(env.lines, 'already present'), refs('oci'))
})

t.test('an https mirror with a private CA: the list needs --ca, containerd trusts it through hosts.toml', async (t) => {
  if (!requireTools(t, ...TOOLS, 'openssl', 'htpasswd')) return
  const { s, ctrd, refs } = await setup(t, ['oci'])
  const dir = await tempDir(t, 'stevedore-prepull-tls')
  const ca = await makeCa(join(dir, 'ca'), 'stevedore prepull test CA')
  const cert = await makeServerCert(join(dir, 'tls'), ca)
  const htpasswd = join(dir, 'htpasswd')
  await runOk('htpasswd', ['-B', '-b', '-c', htpasswd, 'node-agent', 'pull-secret'])
  const authFile = join(dir, 'auth')
  await writeFile(authFile, 'node-agent:pull-secret\n')
  const mirror = await startMirror(t, {
    config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, auth: { htpasswd }, tls: { cert: cert.certPath, key: cert.keyPath }, prepull: { images: refs('oci') } },
    ca: await readFile(ca.certPath, 'utf8'),
  })
  const hosts = await run(process.execPath, [CLI, 'hosts', '--mirror', mirror.url, '--dir', ctrd.certsDir, '--config', mirror.configPath, '--auth-file', authFile, '--ca', ca.certPath, '--force'], { env: cleanEnv(), timeoutMs: 30_000 })
  t.equal(hosts.code, 0, `stevedore hosts --auth-file --ca${hosts.code === 0 ? '' : `: ${hosts.stderr}`}`)
  const cri = `unix://${ctrd.address}`
  const untrusted = await prepull(['--cri', cri, '--mirror', mirror.url, '--once', '--user', 'node-agent:pull-secret'])
  t.equal(untrusted.code, 1, 'without --ca: exit 1')
  t.match(String(withMsg(untrusted.lines, 'list unavailable')[0]?.['reason']), /--ca/, `the message points at --ca: ${String(withMsg(untrusted.lines, 'list unavailable')[0]?.['reason'])}`)
  const trusted = await prepull(['--cri', cri, '--mirror', mirror.url, '--once', '--ca', ca.certPath], { STEVEDORE_AUTH: 'node-agent:pull-secret' })
  t.equal(trusted.code, 0, `with --ca: exit 0${trusted.code === 0 ? '' : `: ${trusted.stdout}`}`)
  t.equal(trusted.stderr, '', 'no warning: the credentials travel over TLS')
  t.same(imagesOf(trusted.lines, 'pulled'), refs('oci'), 'pulled')
  await mirror.settle()
  t.ok(mirror.logs().some((l) => l['msg'] === 'request' && String(l['ua']).startsWith('containerd/') && l['path'] === `/v2/${s.repo}/blobs/${s.oci.layers[0]?.digest ?? ''}` && l['status'] === 200), 'containerd fetched the layer from the TLS mirror')
})

t.test('usage errors exit 2 with the usage text', async (t) => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no --cri', ['--mirror', 'http://127.0.0.1:5000', '--once'], /--cri is required/],
    ['a --cri that is not unix://', ['--cri', '/run/containerd/containerd.sock', '--mirror', 'http://127.0.0.1:5000'], /--cri: must be unix:\/\//],
    ['no --mirror', ['--cri', 'unix:///run/containerd/containerd.sock'], /--mirror is required/],
    ['a bad --interval', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--interval', 'soon'], /--interval: must be a duration/],
    ['an --interval under 1s', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--interval', '200ms'], /at least 1s/],
    ['an unknown flag', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--pull-everything'], /Unknown option '--pull-everything'/],
    ['a bad --concurrency', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--concurrency', '0'], /--concurrency: must be a whole number from 1/],
    ['a malformed --user', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--user', 'just-a-name'], /--user: must be USER:PASS/],
    ['--ca with http://', ['--cri', 'unix:///x.sock', '--mirror', 'http://127.0.0.1:5000', '--ca', '/x.pem'], /--ca goes with an https/],
  ]
  for (const [what, args, message] of cases) {
    const r = await prepull(args)
    t.equal(r.code, 2, `${what}: exit 2`)
    t.match(r.stderr, message, `${what}: says so`)
    t.match(r.stderr, /Usage: stevedore prepull/, `${what}: with the usage`)
    t.equal(r.stdout, '', `${what}: nothing on stdout`)
  }
  const help = await prepull(['--help'])
  t.equal(help.code, 0, '--help: exit 0')
  t.match(help.stdout, /hosts\.toml/, 'the usage says where containerd\'s credentials come from')
})

/** A TCP server that accepts connections and never answers: a pull from it hangs until cancelled. */
async function blackhole(t: Test): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => undefined)
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return port
}

t.test('loop mode: a failed list is retried, a new image on the list is pulled, SIGTERM during a pull exits 0 at once', async (t) => {
  if (!requireTools(t, ...TOOLS)) return
  const { s, ctrd, refs } = await setup(t, ['oci'])
  const dir = await tempDir(t, 'stevedore-prepull-loop')
  const stdoutFile = join(dir, 'stdout.log')
  const stderrFile = join(dir, 'stderr.log')
  const svc = spawnService(process.execPath, [CLI, 'prepull', '--cri', `unix://${ctrd.address}`, '--mirror', s.mirror.url, '--interval', '1s'], { env: cleanEnv(), stdoutFile, stderrFile })
  t.teardown(() => stopService(svc, 'SIGKILL', 1000).then(() => undefined))
  const tail = new LogTail(stdoutFile)
  const lines: Line[] = []
  const seen = (pred: (l: Line) => boolean) => async (): Promise<boolean> => {
    lines.push(...jsonLines(tail.read().join('\n')))
    return lines.some(pred)
  }
  const [oci, docker] = refs('oci', 'docker') as [string, string]
  await waitFor(seen((l) => l['msg'] === 'pulled' && l['image'] === oci), 60_000, 'the first image pulled')
  // A second round, which finds the image there already.
  await waitFor(async () => (await seen(() => false)(), lines.filter((l) => l['msg'] === 'round done').length >= 2), 10_000, 'two rounds')

  // The mirror goes away: rounds log it and go on.
  await s.mirror.stop()
  await waitFor(seen((l) => l['msg'] === 'list unavailable'), 10_000, 'a round without a list')
  t.equal(svc.status(), null, 'a list that could not be had is not fatal')
  // It comes back with one more image, and one from a registry that accepts
  // connections and never answers: that pull is still running at SIGTERM.
  const stuckPort = await blackhole(t)
  const stuck = `127.0.0.1:${stuckPort}/team/stuck:1`
  await mkdir(join(ctrd.certsDir, `127.0.0.1:${stuckPort}`), { recursive: true })
  await writeFile(join(ctrd.certsDir, `127.0.0.1:${stuckPort}`, 'hosts.toml'), `server = "http://127.0.0.1:${stuckPort}"\n`)
  await s.mirror.writeConfig({ ...s.config, prepull: { images: [oci, docker, stuck] } })
  await s.mirror.start()
  await waitFor(seen((l) => l['msg'] === 'pulled' && l['image'] === docker), 60_000, 'the added image pulled')
  t.ok((await kubeletImages(ctrd)).includes(docker), 'the added image is in the store')
  t.same(lines.filter((l) => l['msg'] === 'already present'), [], 'an image pulled in round one is not announced as "already present" every round after')
  t.same(lines.filter((l) => l['msg'] === 'pull failed'), [], 'nothing failed (the stuck pull is still going)')

  const started = Date.now()
  svc.child.kill('SIGTERM')
  const exit = await svc.exited
  const ms = Date.now() - started
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0')
  t.ok(ms < 3000, `promptly (${ms} ms)`)
  lines.push(...jsonLines(tail.read().join('\n')))
  t.ok(lines.some((l) => l['msg'] === 'pull abandoned: stopping' && l['image'] === stuck), 'the pull in flight was cancelled')
  t.equal(lines.at(-1)?.['msg'], 'stopped', 'the last line says it stopped')
})
