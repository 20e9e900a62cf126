import type { Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../src/config/load.js'
import { ConfigError, validateConfig } from '../../src/config/schema.js'
import { parseDuration, parseSize } from '../../src/config/units.js'

const minimal = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } }

const rejects = (t: Test, doc: unknown, key: string, problem: RegExp, env: NodeJS.ProcessEnv = {}): void => {
  try {
    validateConfig(doc, { env, readSecret: () => { throw Object.assign(new Error('nope'), { code: 'ENOENT' }) } })
    t.fail(`${key}: should be rejected`)
  } catch (err) {
    t.ok(err instanceof ConfigError, `${key}: a ConfigError`)
    t.equal((err as ConfigError).key, key, `${key}: names the key`)
    t.match((err as Error).message, problem, `${key}: says the problem`)
    t.notMatch((err as Error).message, /\n/, `${key}: one line`)
  }
}

t.test('embedded default', async (t) => {
  const c = loadConfig({ env: {} })
  t.same(c.listen, { host: '0.0.0.0', port: 5000 })
  t.equal(c.storage.backend.kind, 'filesystem')
  t.same([...c.upstreams.keys()], ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io', 'gcr.io', 'public.ecr.aws', 'mcr.microsoft.com'])
  t.equal(c.upstreams.get('docker.io')?.url.origin, 'https://registry-1.docker.io')
  t.equal(c.defaultUpstream, 'docker.io')
  t.equal(c.cache.tagTtlMs, 300_000)
})

t.test('the documented minimal file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-config-'))
  writeFileSync(join(dir, 'pw'), 's3cret\n')
  const file = join(dir, 'config.yaml')
  writeFileSync(file, `listen: 127.0.0.1:5010
storage:
  filesystem:
    root: /var/lib/stevedore
upstreams:
  docker.io:
    url: https://registry-1.docker.io
  registry.example.com:5443:
    url: https://registry.example.com:5443
    username: robot
    passwordFile: ${join(dir, 'pw')}
defaultUpstream: docker.io
`)
  const c = loadConfig({ file, env: {} })
  t.same(c.listen, { host: '127.0.0.1', port: 5010 })
  t.same(c.storage.backend, { kind: 'filesystem', root: '/var/lib/stevedore' })
  t.equal(c.upstreams.get('registry.example.com:5443')?.password, 's3cret', 'trailing newline of the secret file dropped')
  t.same([...c.upstreams.keys()], ['docker.io', 'registry.example.com:5443'], 'the file replaces the built-in list')
  t.same(loadConfig({ file, listen: '127.0.0.1:6000', env: { STEVEDORE_LISTEN: '127.0.0.1:7000' } }).listen.port, 6000, '--listen wins')
  t.same(loadConfig({ file, env: { STEVEDORE_LISTEN: '127.0.0.1:7000' } }).listen.port, 7000, 'env beats the file')
  t.same(loadConfig({ env: { STEVEDORE_CONFIG: file } }).listen.port, 5010, 'STEVEDORE_CONFIG')
  writeFileSync(join(dir, 'bad.yaml'), 'listen: [unclosed\n')
  t.throws(() => loadConfig({ file: join(dir, 'bad.yaml'), env: {} }), /is not valid YAML at line/)
  t.throws(() => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), /cannot be read \(ENOENT\)/)
})

t.test('password from an environment variable', async (t) => {
  const c = validateConfig({ upstreams: { 'ghcr.io': { url: 'https://ghcr.io', username: 'u', passwordEnv: 'GHCR_TOKEN' } } }, { env: { GHCR_TOKEN: 'tok' } })
  t.equal(c.upstreams.get('ghcr.io')?.password, 'tok')
  rejects(t, { upstreams: { 'ghcr.io': { url: 'https://ghcr.io', username: 'u', passwordEnv: 'GHCR_TOKEN' } } }, 'upstreams.ghcr.io.passwordEnv', /GHCR_TOKEN is not set/)
})

t.test('invalid configs name the key', async (t) => {
  rejects(t, {}, 'upstreams', /is required/)
  rejects(t, { ...minimal, listen: 'nope' }, 'listen', /HOST:PORT/)
  rejects(t, { ...minimal, listen: '0.0.0.0:70000' }, 'listen', /HOST:PORT/)
  rejects(t, { ...minimal, bogus: 1 }, 'bogus', /not a known key/)
  rejects(t, { upstreams: { 'docker.io': { url: 'ftp://x' } } }, 'upstreams.docker.io.url', /http/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x/path' } } }, 'upstreams.docker.io.url', /bare origin/)
  rejects(t, { upstreams: { 'docker.io': {} } }, 'upstreams.docker.io.url', /is required/)
  rejects(t, { upstreams: { library: { url: 'https://x' } } }, 'upstreams.library', /registry host/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', username: 'u' } } }, 'upstreams.docker.io', /go together/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', username: 'u', password: 'p', passwordEnv: 'X' } } }, 'upstreams.docker.io', /only one of/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', username: 'u', passwordFile: '/nope' } } }, 'upstreams.docker.io.passwordFile', /cannot be read/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', repositories: ['UPPER/*'] } } }, 'upstreams.docker.io.repositories[0]', /pattern/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', insecureSkipVerify: 'yes' } } }, 'upstreams.docker.io.insecureSkipVerify', /true or false/)
  rejects(t, { ...minimal, defaultUpstream: 'quay.io' }, 'defaultUpstream', /not in upstreams/)
  rejects(t, { ...minimal, cache: { tagTtl: 'soon' } }, 'cache.tagTtl', /duration/)
  rejects(t, { ...minimal, cache: { tagTtl: '2h', maxStaleAge: '1h' } }, 'cache.maxStaleAge', /not be shorter/)
  rejects(t, { ...minimal, storage: { maxSize: 'lots' } }, 'storage.maxSize', /size/)
  rejects(t, { ...minimal, storage: { filesystem: { root: '/x' }, s3: { bucket: 'b' } } }, 'storage', /either filesystem or s3/)
  rejects(t, { ...minimal, storage: { s3: {} } }, 'storage.s3.bucket', /is required/)
  rejects(t, { ...minimal, log: { level: 'loud' } }, 'log.level', /one of/)
})

t.test('secrets never appear in config errors', async (t) => {
  try {
    validateConfig({ upstreams: { 'docker.io': { url: 'https://x', username: 'u', password: 'hunter2', passwordEnv: 'X' } } }, {})
    t.fail('should throw')
  } catch (err) {
    t.notMatch((err as Error).message, /hunter2/)
  }
})

t.test('units', async (t) => {
  t.equal(parseDuration('90s'), 90_000)
  t.equal(parseDuration('5m'), 300_000)
  t.equal(parseDuration('24h'), 86_400_000)
  t.equal(parseDuration('250ms'), 250)
  t.equal(parseDuration(30), 30_000)
  t.equal(parseDuration('5 weeks'), undefined)
  t.equal(parseSize('50GiB'), 50 * 1024 ** 3)
  t.equal(parseSize('512MB'), 512e6)
  t.equal(parseSize('1.5Ki'), 1536)
  t.equal(parseSize(1024), 1024)
  t.equal(parseSize('10 bananas'), undefined)
})
