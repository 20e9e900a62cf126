import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { runHostsCommand, type HostsIo } from '../../src/hosts/command.js'
import { alternateHostDirName, isMarked, MARK_LINE, parseMirrorUrl, renderHostsToml } from '../../src/hosts/toml.js'
import { DEFAULT_CONFIG_DOCUMENT } from '../../src/config/schema.js'
import { snapshot } from '../harness/files.js'

interface Run {
  readonly code: number
  readonly out: string
  readonly err: string
}

async function hosts(args: string[], extra: { env?: NodeJS.ProcessEnv; signal?: AbortSignal; onOut?: (s: string) => void } = {}): Promise<Run> {
  let out = ''
  let err = ''
  const io: HostsIo = {
    stdout: (s) => {
      out += s
      extra.onOut?.(s)
    },
    stderr: (s) => {
      err += s
    },
    env: extra.env ?? {},
    ...(extra.signal !== undefined ? { signal: extra.signal } : {}),
  }
  const code = await runHostsCommand(args, io)
  return { code, out, err }
}

async function temp(t: { teardown(fn: () => unknown): void }, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `stevedore-${prefix}-`))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}


const MIRROR = 'http://10.96.0.50:5000'
const DEFAULT_HOSTS = Object.keys(DEFAULT_CONFIG_DOCUMENT.upstreams).sort()

t.test('renders the hosts.toml that PROTOCOL.md asks for', async (t) => {
  const text = renderHostsToml({
    registry: 'docker.io',
    server: new URL('https://registry-1.docker.io'),
    mirror: new URL('http://10.96.0.50:5000'),
    dialTimeout: '2s',
  })
  t.equal(text.split('\n')[0], MARK_LINE)
  t.ok(isMarked(text))
  t.match(text, /^server = "https:\/\/registry-1\.docker\.io"$/m)
  t.match(text, /^\[host\."http:\/\/10\.96\.0\.50:5000"\]\n {2}capabilities = \["pull", "resolve"\]\n {2}dial_timeout = "2s"$/m)
  t.notMatch(text, /skip_verify|ca =/, 'no TLS settings on an http:// host: containerd would try HTTPS first')
  t.notOk(isMarked('server = "https://example.com"\n'))
  t.notOk(isMarked(`\n${MARK_LINE}\n`), 'the mark counts only on the first line')
  t.equal(alternateHostDirName('myreg.example:5000'), 'myreg.example_5000_')
  t.equal(alternateHostDirName('docker.io'), undefined)
})

t.test('--mirror must be an http(s) origin', async (t) => {
  t.equal(parseMirrorUrl('https://mirror.example:5443').origin, 'https://mirror.example:5443')
  for (const bad of ['10.96.0.50:5000', 'ftp://x', 'http://x:5000/v2', 'http://u:p@x', 'http://x?a=1', 'not a url']) {
    const r = await hosts(['--mirror', bad, '--dir', '/nonexistent'])
    t.equal(r.code, 2, bad)
    t.match(r.err, /--mirror/, bad)
  }
  const missing = await hosts(['--dir', '/nonexistent'])
  t.equal(missing.code, 2)
  t.match(missing.err, /--mirror is required/)
  const noDir = await hosts(['--mirror', MIRROR])
  t.equal(noDir.code, 2)
  t.match(noDir.err, /--dir is required/)
  t.equal((await hosts(['--mirror', MIRROR, '--dir', '/x', '--bogus'])).code, 2)
  t.equal((await hosts(['--mirror', MIRROR, '--dir', '/x', '--remove', '--watch'])).code, 2)
  t.equal((await hosts(['--mirror', MIRROR, '--dir', '/x', '--dial-timeout', 'soon'])).code, 2)
  const help = await hosts(['--help'])
  t.equal(help.code, 0)
  t.match(help.out, /--mirror URL/)
})

t.test('writes one marked hosts.toml per configured upstream, idempotently and atomically', async (t) => {
  const dir = join(await temp(t, 'certs'), 'certs.d')
  const first = await hosts(['--mirror', MIRROR, '--dir', dir])
  t.equal(first.code, 0, first.err)
  t.same((await readdir(dir)).sort(), DEFAULT_HOSTS, 'one folder per upstream, named after the registry host')
  const docker = await readFile(join(dir, 'docker.io', 'hosts.toml'), 'utf8')
  t.match(docker, /^server = "https:\/\/registry-1\.docker\.io"$/m, 'docker.io goes to registry-1.docker.io')
  t.match(docker, /^\[host\."http:\/\/10\.96\.0\.50:5000"\]$/m)
  for (const host of DEFAULT_HOSTS) {
    const text = await readFile(join(dir, host, 'hosts.toml'), 'utf8')
    t.ok(text.startsWith(`${MARK_LINE}\n`), `${host} is marked`)
    t.same(await readdir(join(dir, host)), ['hosts.toml'], `${host}: no temp file left behind`)
    t.equal((await stat(join(dir, host, 'hosts.toml'))).mode & 0o777, 0o644)
  }
  t.equal(first.out.split('\n').filter((l) => l.startsWith('written')).length, DEFAULT_HOSTS.length)

  const before = await stat(join(dir, 'ghcr.io', 'hosts.toml'))
  const second = await hosts(['--mirror', MIRROR, '--dir', dir])
  t.equal(second.code, 0)
  t.equal(second.out.split('\n').filter((l) => l.startsWith('unchanged')).length, DEFAULT_HOSTS.length, 'a second run changes nothing')
  const after = await stat(join(dir, 'ghcr.io', 'hosts.toml'))
  t.equal(after.ino, before.ino, 'an unchanged file is not rewritten')

  const moved = await hosts(['--mirror', 'http://10.96.0.51:5000', '--dir', dir])
  t.equal(moved.code, 0)
  t.match(await readFile(join(dir, 'ghcr.io', 'hosts.toml'), 'utf8'), /10\.96\.0\.51/, 'its own files are rewritten when the mirror moves')
  t.not((await stat(join(dir, 'ghcr.io', 'hosts.toml'))).ino, before.ino, 'rewritten by rename, not in place')
})

t.test('a hosts.toml without the mark is left untouched unless --force', async (t) => {
  const dir = await temp(t, 'certs')
  const foreign = 'server = "https://quay.io"\n[host."https://my-own-mirror.example"]\n  capabilities = ["pull"]\n'
  await mkdir(join(dir, 'quay.io'))
  await writeFile(join(dir, 'quay.io', 'hosts.toml'), foreign)
  const r = await hosts(['--mirror', MIRROR, '--dir', dir])
  t.equal(r.code, 0, 'a skipped file is reported, not a failure')
  t.match(r.out, new RegExp(`^skipped +${join(dir, 'quay.io', 'hosts.toml')}: not written by stevedore`, 'm'))
  t.equal(await readFile(join(dir, 'quay.io', 'hosts.toml'), 'utf8'), foreign)

  const removed = await hosts(['--remove', '--dir', dir])
  t.equal(removed.code, 0)
  t.equal(await readFile(join(dir, 'quay.io', 'hosts.toml'), 'utf8'), foreign, '--remove leaves it too')

  const forced = await hosts(['--mirror', MIRROR, '--dir', dir, '--force', '--registry', 'quay.io'])
  t.equal(forced.code, 0)
  t.ok(isMarked(await readFile(join(dir, 'quay.io', 'hosts.toml'), 'utf8')), '--force replaces it')
})

t.test('a folder in containerd\'s older layout (certificates, no hosts.toml) is left alone', async (t) => {
  const dir = await temp(t, 'certs')
  await mkdir(join(dir, 'ghcr.io'))
  await writeFile(join(dir, 'ghcr.io', 'ca.crt'), 'cert')
  const r = await hosts(['--mirror', MIRROR, '--dir', dir, '--registry', 'ghcr.io'])
  t.equal(r.code, 0)
  t.match(r.out, /^skipped .*ghcr\.io\/hosts\.toml: the folder holds ca\.crt/m)
  t.same(await readdir(join(dir, 'ghcr.io')), ['ca.crt'])
})

t.test('--remove deletes only marked files and leaves the folder as it was', async (t) => {
  const dir = await temp(t, 'certs')
  await mkdir(join(dir, 'quay.io'))
  await writeFile(join(dir, 'quay.io', 'hosts.toml'), 'server = "https://quay.io"\n')
  await mkdir(join(dir, 'docker.io'))
  await writeFile(join(dir, 'docker.io', 'client.cert'), 'keep me') // a folder that held something else before
  await mkdir(join(dir, 'other.example'))
  await writeFile(join(dir, 'other.example', 'hosts.toml'), 'server = "https://other.example"\n')
  const before = await snapshot(dir)

  // Without --force the docker.io folder (certificates, no hosts.toml) is skipped, so force it to get a file there.
  t.equal((await hosts(['--mirror', MIRROR, '--dir', dir])).code, 0)
  t.equal((await hosts(['--mirror', MIRROR, '--dir', dir, '--registry', 'docker.io', '--force'])).code, 0)
  t.ok(isMarked(await readFile(join(dir, 'docker.io', 'hosts.toml'), 'utf8')))
  t.notSame(await snapshot(dir), before)

  const dry = await hosts(['--remove', '--dir', dir, '--dry-run'])
  t.match(dry.out, /^would remove/m)
  t.ok(isMarked(await readFile(join(dir, 'ghcr.io', 'hosts.toml'), 'utf8')), '--dry-run removes nothing')

  const r = await hosts(['--remove', '--dir', dir])
  t.equal(r.code, 0, r.err)
  t.match(r.out, /^removed +.*docker\.io\/hosts\.toml$/m)
  t.match(r.out, /^skipped +.*quay\.io\/hosts\.toml: not written by stevedore/m)
  t.same(await snapshot(dir), before, 'exactly the folder as it was before')

  const again = await hosts(['--remove', '--dir', dir, '--registry', 'ghcr.io'])
  t.equal(again.code, 0)
  t.match(again.out, /^absent +.*ghcr\.io\/hosts\.toml$/m)
})

t.test('registry hosts with a port: the folder containerd looks up', async (t) => {
  const work = await temp(t, 'cfg')
  const config = join(work, 'config.yaml')
  await writeFile(config, [
    'upstreams:',
    '  docker.io: {url: "https://registry-1.docker.io"}',
    '  "127.0.0.1:5001": {url: "http://127.0.0.1:5001"}',
    '  "registry.example.com:5443": {url: "https://registry.example.com:5443", username: u, passwordEnv: NOT_SET_HERE}',
    'storage: {s3: {bucket: b}}',
    '',
  ].join('\n'))
  const dir = join(work, 'certs.d')
  const r = await hosts(['--mirror', 'http://127.0.0.1:5999', '--dir', dir, '--config', config])
  t.equal(r.code, 0, `${r.out}${r.err}`)
  t.same((await readdir(dir)).sort(), ['127.0.0.1:5001', 'docker.io', 'registry.example.com:5443'],
    'a secret the node agent does not have is no error: only upstream URLs are read')
  t.match(await readFile(join(dir, '127.0.0.1:5001', 'hosts.toml'), 'utf8'), /^server = "http:\/\/127\.0\.0\.1:5001"$/m)
  t.match(await readFile(join(dir, 'registry.example.com:5443', 'hosts.toml'), 'utf8'), /^server = "https:\/\/registry\.example\.com:5443"$/m)

  // containerd reads host_port_ before host:port: a foreign file there would win over ours, so it counts as foreign.
  await rm(join(dir, 'registry.example.com:5443'), { recursive: true })
  await mkdir(join(dir, 'registry.example.com_5443_'))
  await writeFile(join(dir, 'registry.example.com_5443_', 'hosts.toml'), 'server = "https://registry.example.com:5443"\n')
  const again = await hosts(['--mirror', 'http://127.0.0.1:5999', '--dir', dir, '--config', config])
  t.match(again.out, /^skipped +.*registry\.example\.com_5443_\/hosts\.toml: not written by stevedore/m)
  t.notOk((await readdir(dir)).includes('registry.example.com:5443'), 'no shadowed file of ours next to it')
})

t.test('config: --config, STEVEDORE_CONFIG, errors; --registry selects', async (t) => {
  const work = await temp(t, 'cfg')
  const config = join(work, 'c.yaml')
  await writeFile(config, 'upstreams:\n  ghcr.io: {url: "https://ghcr.io"}\n  quay.io: {url: "https://quay.io"}\n')
  const viaEnv = await hosts(['--mirror', MIRROR, '--dir', join(work, 'a')], { env: { STEVEDORE_CONFIG: config } })
  t.equal(viaEnv.code, 0)
  t.same((await readdir(join(work, 'a'))).sort(), ['ghcr.io', 'quay.io'])

  const one = await hosts(['--mirror', MIRROR, '--dir', join(work, 'b'), '--config', config, '--registry', 'quay.io'])
  t.equal(one.code, 0)
  t.same(await readdir(join(work, 'b')), ['quay.io'])

  const unknown = await hosts(['--mirror', MIRROR, '--dir', join(work, 'c'), '--config', config, '--registry', 'docker.io'])
  t.equal(unknown.code, 2)
  t.match(unknown.err, /docker\.io: not an upstream in the config \(configured: ghcr\.io, quay\.io\)/)

  const missing = await hosts(['--mirror', MIRROR, '--dir', join(work, 'd'), '--config', join(work, 'nope.yaml')])
  t.equal(missing.code, 1)
  t.match(missing.err, /config: .*nope\.yaml: cannot be read \(ENOENT\)/)

  await writeFile(join(work, 'bad.yaml'), 'upstreams:\n  notahost: {url: "https://x"}\n')
  const bad = await hosts(['--mirror', MIRROR, '--dir', join(work, 'e'), '--config', join(work, 'bad.yaml')])
  t.equal(bad.code, 1)
  t.match(bad.err, /config: upstreams\.notahost: must be keyed by a registry host/)
})

t.test('a registry whose file cannot be written fails the run, the others are still written', async (t) => {
  const dir = await temp(t, 'certs')
  await writeFile(join(dir, 'ghcr.io'), 'a file where a folder should be')
  const r = await hosts(['--mirror', MIRROR, '--dir', dir])
  t.equal(r.code, 1)
  t.match(r.err, /^error +.*ghcr\.io\/hosts\.toml: ENOTDIR/m)
  t.ok(isMarked(await readFile(join(dir, 'quay.io', 'hosts.toml'), 'utf8')), 'quay.io written all the same')
  t.equal(await readFile(join(dir, 'ghcr.io'), 'utf8'), 'a file where a folder should be')
})

t.test('--dry-run prints and writes nothing', async (t) => {
  const dir = join(await temp(t, 'certs'), 'certs.d')
  const r = await hosts(['--mirror', MIRROR, '--dir', dir, '--dry-run', '--registry', 'docker.io'])
  t.equal(r.code, 0)
  t.match(r.out, /^would write +.*docker\.io\/hosts\.toml\n {4}# Managed by stevedore hosts/m)
  t.match(r.out, /^ {4}server = "https:\/\/registry-1\.docker\.io"$/m)
  await t.rejects(stat(dir), { code: 'ENOENT' })
})

t.test('an upstream dropped from the config loses its file; --registry runs prune nothing', async (t) => {
  const work = await temp(t, 'cfg')
  const config = join(work, 'c.yaml')
  const dir = join(work, 'certs.d')
  await writeFile(config, 'upstreams:\n  ghcr.io: {url: "https://ghcr.io"}\n  quay.io: {url: "https://quay.io"}\n')
  t.equal((await hosts(['--mirror', MIRROR, '--dir', dir, '--config', config])).code, 0)
  t.equal((await hosts(['--mirror', MIRROR, '--dir', dir, '--config', config, '--registry', 'ghcr.io'])).code, 0)
  t.same((await readdir(dir)).sort(), ['ghcr.io', 'quay.io'])
  await writeFile(config, 'upstreams:\n  ghcr.io: {url: "https://ghcr.io"}\n')
  const r = await hosts(['--mirror', MIRROR, '--dir', dir, '--config', config])
  t.match(r.out, /^removed +.*quay\.io\/hosts\.toml: no longer an upstream/m)
  t.same(await readdir(dir), ['ghcr.io'])
})

t.test('--watch re-applies until stopped; --remove-on-exit cleans up', async (t) => {
  const work = await temp(t, 'cfg')
  const config = join(work, 'c.yaml')
  const dir = join(work, 'certs.d')
  await writeFile(config, 'upstreams:\n  ghcr.io: {url: "https://ghcr.io"}\n')
  const controller = new AbortController()
  let rounds = 0
  const running = hosts(['--mirror', MIRROR, '--dir', dir, '--config', config, '--watch', '--interval', '150ms', '--remove-on-exit'], {
    signal: controller.signal,
    onOut: (s) => {
      if (s.startsWith('written')) rounds++
    },
  })
  const until = async (what: string, cond: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + 5000
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const has = (name: string) => async () => (await readdir(dir).catch(() => [] as string[])).includes(name)
  await until('the first round', has('ghcr.io'))
  await rm(join(dir, 'ghcr.io'), { recursive: true })
  await until('the file to come back', has('ghcr.io'))
  await writeFile(config, 'upstreams:\n  ghcr.io: {url: "https://ghcr.io"}\n  quay.io: {url: "https://quay.io"}\n')
  await until('a new upstream to be picked up', has('quay.io'))
  await writeFile(config, 'upstreams: [broken\n')
  await new Promise((r) => setTimeout(r, 400))
  t.same((await readdir(dir)).sort(), ['ghcr.io', 'quay.io'], 'a broken config leaves the files as they are')
  controller.abort()
  const r = await running
  t.equal(r.code, 0)
  t.ok(rounds >= 2)
  t.match(r.err, /not valid YAML/)
  t.equal(r.err.split('\n').filter((l) => l.includes('not valid YAML')).length, 1, 'the same error is said once, not every round')
  t.match(r.out, /stopped; removed/)
  t.same(await readdir(dir), [], 'files removed on exit')
})

t.test('--auth-file and --ca: the header and the CA for the mirror only; credentials root-only; the CA removed with the files', async (t) => {
  const root = await temp(t, 'certs-auth')
  const dir = join(root, 'certs.d')
  const authFile = join(root, 'auth')
  await writeFile(authFile, 'node-agent:s3cret\n')
  const { makeCa } = await import('../harness/tls-certs.js')
  const ca = await makeCa(join(root, 'ca'), 'test CA')
  const caPem = await readFile(ca.certPath, 'utf8')
  const https = 'https://10.96.0.50:5443'

  t.equal((await hosts(['--mirror', MIRROR, '--dir', dir, '--ca', ca.certPath])).code, 2, '--ca with an http:// mirror is bad usage')
  const run = await hosts(['--mirror', https, '--dir', dir, '--auth-file', authFile, '--ca', ca.certPath, '--registry', 'docker.io'])
  t.equal(run.code, 0, run.err)
  const folder = join(dir, 'docker.io')
  const text = await readFile(join(folder, 'hosts.toml'), 'utf8')
  t.match(text, '  ca = "stevedore-ca.crt"', 'ca names the copy, beside hosts.toml (containerd reads a relative path from that folder)')
  t.match(text, /^ {2}\[host\."https:\/\/10\.96\.0\.50:5443"\.header\]\n {4}authorization = "Basic bm9kZS1hZ2VudDpzM2NyZXQ="$/m, 'the header, under the mirror\'s host only')
  t.equal((await stat(join(folder, 'hosts.toml'))).mode & 0o777, 0o600, 'a file holding credentials is root-only')
  const copy = await readFile(join(folder, 'stevedore-ca.crt'), 'utf8')
  t.ok(copy.startsWith(`${MARK_LINE}\n`) && copy.endsWith(caPem), 'the CA, marked as ours')
  const { X509Certificate } = await import('node:crypto')
  t.doesNotThrow(() => new X509Certificate(copy), 'still a PEM certificate with the mark line before it')
  t.same((await readdir(folder)).sort(), ['hosts.toml', 'stevedore-ca.crt'])

  const again = await hosts(['--mirror', https, '--dir', dir, '--auth-file', authFile, '--ca', ca.certPath, '--registry', 'docker.io'])
  t.match(again.out, /^unchanged/m, 'a second run changes nothing')
  const warned = await hosts(['--mirror', MIRROR, '--dir', dir, '--auth-file', authFile, '--registry', 'ghcr.io', '--dry-run'])
  t.match(warned.err, /warning: --auth-file with an http:\/\/ mirror/, 'credentials over http: a warning')
  const dry = await hosts(['--mirror', https, '--dir', dir, '--auth-file', authFile, '--registry', 'ghcr.io', '--dry-run'])
  t.notMatch(dry.out, /bm9kZS1hZ2VudDpzM2NyZXQ=/, '--dry-run never prints the credentials')
  await writeFile(authFile, 'no colon here\n')
  const bad = await hosts(['--mirror', https, '--dir', dir, '--auth-file', authFile, '--registry', 'docker.io'])
  t.equal(bad.code, 1)
  t.match(bad.err, /--auth-file: .*user:password/)
  const removed = await hosts(['--dir', dir, '--remove'])
  t.equal(removed.code, 0, removed.err)
  t.same(await readdir(dir), [], 'hosts.toml, the CA copy and the folder are gone')
})

t.test("the mirror's cluster section is no error on a node: no POD_IP, no peer secret there", async (t) => {
  const work = await temp(t, 'cluster')
  const config = join(work, 'c.yaml')
  const dir = join(work, 'certs.d')
  await writeFile(config, [
    'upstreams:',
    '  ghcr.io: {url: "https://ghcr.io"}',
    'cluster:',
    '  discovery: dns:stevedore-peers.stevedore.svc.cluster.local:5000',
    `  secretFile: ${join(work, 'absent-secret')}`,
    '',
  ].join('\n'))
  const r = await hosts(['--mirror', MIRROR, '--dir', dir, '--config', config], { env: {} })
  t.equal(r.code, 0, r.err)
  t.same(await readdir(dir), ['ghcr.io'], 'the upstream still gets its hosts.toml')
})
