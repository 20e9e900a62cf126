import type { Test } from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { ConfigError, DEFAULT_LIMITS, validateConfig } from '../../src/config/schema.js'
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

t.test('durations behind timers are bounded: above zero, at most 2^31-1 ms', async (t) => {
  rejects(t, { ...minimal, timeouts: { fill: '30d' } }, 'timeouts.fill', /must be at most 24d/)
  rejects(t, { ...minimal, timeouts: { read: 0 } }, 'timeouts.read', /greater than zero/)
  rejects(t, { ...minimal, timeouts: { connect: '0s' } }, 'timeouts.connect', /greater than zero/)
  rejects(t, { ...minimal, timeouts: { shutdown: '2147483648ms' } }, 'timeouts.shutdown', /at most 24d/)
  rejects(t, { ...minimal, timeouts: { fill: '1e3s' } }, 'timeouts.fill', /duration such as/)
  rejects(t, { ...minimal, timeouts: { fill: '9'.repeat(400) } }, 'timeouts.fill', /at most 24d/)
  rejects(t, { ...minimal, timeouts: { bogus: '1s' } }, 'timeouts.bogus', /not a known key/)
  t.equal(validateConfig({ ...minimal, timeouts: { shutdown: '2147483647ms' } }, {}).timeouts.shutdownMs, 2 ** 31 - 1, 'the last delay a timer honours')
  t.equal(validateConfig({ ...minimal, timeouts: { fill: '24d' } }, {}).timeouts.fillMs, 24 * 86_400_000)
})

t.test('timeouts: fill has no default; read is the progress deadline', async (t) => {
  const c = validateConfig(minimal, {})
  t.same(c.timeouts, { connectMs: 5_000, readMs: 30_000, shutdownMs: 25_000 })
  t.equal(c.timeouts.fillMs, undefined)
  t.notOk('fillMs' in c.timeouts, 'no key at all')
  t.equal(validateConfig({ ...minimal, timeouts: { fill: '2h' } }, {}).timeouts.fillMs, 7_200_000)
  t.equal(validateConfig({ ...minimal, timeouts: { fill: null } }, {}).timeouts.fillMs, undefined, 'an empty YAML key is as if absent')
})

t.test('limits', async (t) => {
  const defaults = validateConfig(minimal, {}).limits
  t.same(defaults, {
    fills: 32, fillsReservedForPulls: 8, fillQueue: 256, responses: 1024, responseQueue: 1024,
    queueTimeoutMs: 10_000, sendBuffers: 128 * 1024 * 1024, connections: 4096, idleTimeoutMs: 60_000, writeTimeoutMs: 60_000,
  })
  t.same(DEFAULT_LIMITS, defaults, 'DEFAULT_LIMITS is the schema with nothing set')
  const set = validateConfig({ ...minimal, limits: { fills: 1, fillsReservedForPulls: 0, fillQueue: 0, responses: 2, responseQueue: 1, queueTimeout: '20s', sendBuffers: '1MiB', connections: 4, idleTimeout: '1s', writeTimeout: '3s' } }, {}).limits
  t.same(set, { fills: 1, fillsReservedForPulls: 0, fillQueue: 0, responses: 2, responseQueue: 1, queueTimeoutMs: 20_000, sendBuffers: 1024 * 1024, connections: 4, idleTimeoutMs: 1_000, writeTimeoutMs: 3_000 })
  const bad: Array<[string, unknown, RegExp]> = [
    ['fills', 0, /integer between 1 and 10000 \(got 0\)/],
    ['fills', 2.5, /integer between 1 and/],
    ['fills', '32', /integer between 1 and/],
    ['fillsReservedForPulls', -1, /integer between 0 and/],
    ['fillQueue', -1, /integer between 0 and/],
    ['fillQueue', 1e9, /integer between 0 and 1000000/],
    ['responses', 0, /integer between 1 and/],
    ['responseQueue', -1, /integer between 0 and/],
    ['connections', 0, /integer between 1 and/],
    ['queueTimeout', '0s', /greater than zero/],
    ['queueTimeout', '30d', /at most 24d/],
    ['idleTimeout', 'soon', /duration/],
    ['idleTimeout', '25d', /at most 24d/],
    ['writeTimeout', 0, /greater than zero/],
    ['sendBuffers', '512KiB', /at least 1MiB/],
    ['sendBuffers', '17GiB', /at most 16GiB/],
    ['sendBuffers', 'lots', /size/],
  ]
  for (const [key, value, problem] of bad) rejects(t, { ...minimal, limits: { [key]: value } }, `limits.${key}`, problem)
  rejects(t, { ...minimal, limits: { fills: 4, fillsReservedForPulls: 4 } }, 'limits.fillsReservedForPulls', /less than limits.fills/)
  rejects(t, { ...minimal, limits: { fillsReservedForPulls: 32 } }, 'limits.fillsReservedForPulls', /less than limits.fills \(32\)/)
  rejects(t, { ...minimal, limits: { maxFills: 3 } }, 'limits.maxFills', /not a known key/)
  rejects(t, { ...minimal, limits: [1] }, 'limits', /must be a mapping/)
})

t.test('sizes are bounded', async (t) => {
  rejects(t, { ...minimal, storage: { maxSize: '512KiB' } }, 'storage.maxSize', /at least 1MiB/)
  rejects(t, { ...minimal, storage: { maxSize: '9999999999TiB' } }, 'storage.maxSize', /at most/)
  rejects(t, { ...minimal, cache: { memory: '1TiB' } }, 'cache.memory', /at most 64GiB/)
  t.equal(validateConfig({ ...minimal, storage: { maxSize: '50GiB' } }, {}).storage.maxSize, 50 * 1024 ** 3)
})

t.test('redirectHosts', async (t) => {
  const withHosts = (redirectHosts: unknown): unknown => ({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', redirectHosts } } })
  const c = validateConfig(withHosts(['localhost', '*.CloudFront.net', 'production.cloudflare.docker.com', '10.0.0.7', '[fd00::1]', '::1']), {})
  t.same(c.upstreams.get('docker.io')?.redirectHosts, ['localhost', '*.cloudfront.net', 'production.cloudflare.docker.com', '10.0.0.7', 'fd00::1', '::1'], 'lower-case, brackets off, as RedirectRules compares')
  t.equal(validateConfig(minimal, {}).upstreams.get('docker.io')?.redirectHosts, undefined, 'unset: any host but internal ones')
  for (const bad of ['https://cdn.example.com', 'cdn.example.com:443', '*', 'a b', 'cdn.*.com', '', 5]) {
    rejects(t, withHosts([bad]), 'upstreams.docker.io.redirectHosts[0]', /host name, "\*\.domain" or an IP address/)
  }
  rejects(t, withHosts([]), 'upstreams.docker.io.redirectHosts', /non-empty list/)
  rejects(t, withHosts('cdn.example.com'), 'upstreams.docker.io.redirectHosts', /non-empty list/)
})

t.test('storage.s3.staleUploadAge', async (t) => {
  const s3 = (extra: Record<string, unknown> = {}): unknown => ({ ...minimal, storage: { s3: { bucket: 'b', ...extra } } })
  const backend = validateConfig(s3(), {}).storage.backend
  t.equal(backend.kind === 's3' ? backend.staleUploadAgeMs : undefined, 30 * 60_000, 'default 30m')
  const set = validateConfig(s3({ staleUploadAge: '6h' }), {}).storage.backend
  t.equal(set.kind === 's3' ? set.staleUploadAgeMs : undefined, 6 * 3_600_000)
  rejects(t, s3({ staleUploadAge: '10s' }), 'storage.s3.staleUploadAge', /at least 1m/)
  rejects(t, s3({ staleUploadAge: 'old' }), 'storage.s3.staleUploadAge', /duration/)
  rejects(t, { ...minimal, storage: { filesystem: { root: '/x', staleUploadAge: '1h' } } }, 'storage.filesystem.staleUploadAge', /not a known key/)
  rejects(t, s3({ accessKeyId: 'a' }), 'storage.s3', /go together/)
  rejects(t, s3({ endpoint: 'not a url' }), 'storage.s3.endpoint', /not a URL/)
  rejects(t, s3({ bogus: 1 }), 'storage.s3.bogus', /not a known key/)
  const region = validateConfig(s3({ prefix: 'mirror' }), { env: { AWS_DEFAULT_REGION: 'eu-north-1' } }).storage.backend
  t.match(region, { kind: 's3', region: 'eu-north-1', prefix: 'mirror/' })
})

t.test('empty and misplaced values', async (t) => {
  rejects(t, { upstreams: { 'docker.io': null } }, 'upstreams.docker.io', /must be a mapping/)
  rejects(t, { upstreams: {} }, 'upstreams', /at least one upstream/)
  rejects(t, [], '(root)', /YAML mapping/)
  rejects(t, 'listen: x', '(root)', /YAML mapping/)
  rejects(t, { ...minimal, cache: [] }, 'cache', /must be a mapping/)
  rejects(t, { ...minimal, bogus: null }, 'bogus', /not a known key/)
  rejects(t, JSON.parse('{"upstreams":{"docker.io":{"url":"https://x"}},"__proto__":{"listen":"1.2.3.4:1"}}'), '__proto__', /not a known key/)
  rejects(t, { upstreams: { 'docker.io': { url: 'https://x', repositories: ['ok/*', 5] } } }, 'upstreams.docker.io.repositories[1]', /pattern/)
  const c = validateConfig({ ...minimal, storage: null, cache: null, timeouts: null, limits: null, log: null }, {})
  t.equal(c.storage.backend.kind, 'filesystem', 'empty sections take their defaults')
  t.equal(c.logLevel, 'info')
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
  t.equal(parseDuration('9'.repeat(400)), undefined, 'Infinity is no duration')
  t.equal(parseDuration(Number.MAX_VALUE), undefined)
  t.equal(parseSize('9'.repeat(400)), undefined, 'Infinity is no size')
  t.equal(parseSize('9007199254740992'), undefined, 'past 2^53 bytes')
  t.equal(parseSize(-1), undefined)
  t.equal(parseDuration(Number.NaN), undefined)
})

t.test('the example config file in the package is valid, and says the defaults of insights', async (t) => {
  const c = loadConfig({ file: new URL('../../config/stevedore.example.yaml', import.meta.url).pathname, env: {} })
  const d = loadConfig({ env: {} })
  t.same(c.insights, d.insights, 'insights: the example shows the defaults')
  t.same(c.prefetch, d.prefetch, 'prefetch too')
})

t.test('STEVEDORE_INSIGHTS_INSTANCE names the history of this replica, checked like the key', async (t) => {
  t.equal(loadConfig({ env: { STEVEDORE_INSIGHTS_INSTANCE: 'stevedore-7f9c-abcde' } }).insights.instance, 'stevedore-7f9c-abcde')
  t.equal(loadConfig({ env: {} }).insights.instance, undefined, 'unset: the default')
  t.throws(() => loadConfig({ env: { STEVEDORE_INSIGHTS_INSTANCE: '../x' } }), /insights\.instance/, 'not a path')
})

t.test('cluster: absent is no cluster', async (t) => {
  t.equal(validateConfig(minimal, {}).cluster, undefined)
  t.equal(validateConfig({ ...minimal, cluster: null }, {}).cluster, undefined, 'an empty YAML key is as if absent')
  t.equal(loadConfig({ env: {} }).cluster, undefined, 'the embedded default')
})

t.test('cluster: static peers, self, secret and defaults', async (t) => {
  const files: Record<string, string> = { '/etc/stevedore/peer-secret': '0123456789abcdef0123456789abcdef\n', '/ca.pem': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' }
  const readSecret = (path: string): string => {
    const text = files[path]
    if (text === undefined) throw Object.assign(new Error('nope'), { code: 'ENOENT' })
    return text
  }
  const c = validateConfig({
    ...minimal,
    listen: '0.0.0.0:5000',
    cluster: { peers: ['http://10.0.3.7:5000', 'http://10.0.3.8:5000/', 'http://10.0.3.8:5000'], secretFile: '/etc/stevedore/peer-secret' },
  }, { env: { POD_IP: '10.0.3.7' }, readSecret }).cluster
  t.equal(c?.self, 'http://10.0.3.7:5000', 'self from POD_IP and the listen port')
  t.same(c?.peers, ['http://10.0.3.7:5000', 'http://10.0.3.8:5000'], 'normalised origins, no trailing slash, each once')
  t.equal(c?.discovery, undefined)
  t.ok(c?.secret.equals(Buffer.from('0123456789abcdef0123456789abcdef')), 'secret read, trailing newline trimmed')
  t.equal(c?.healthIntervalMs, 2000)
  t.equal(c?.connectTimeoutMs, 1000)
  t.equal(c?.discoveryIntervalMs, 5000)
  t.equal(c?.tls, undefined)

  const explicit = validateConfig({
    ...minimal,
    cluster: {
      self: 'https://10.0.3.9:5443/', peers: ['https://10.0.3.8:5443'], secretFile: '/etc/stevedore/peer-secret',
      healthInterval: '500ms', connectTimeout: '250ms', discoveryInterval: '1m', tls: { ca: '/ca.pem', serverName: 'stevedore.stevedore.svc' },
    },
  }, { env: {}, readSecret }).cluster
  t.equal(explicit?.self, 'https://10.0.3.9:5443', 'self as written, normalised; POD_IP not needed')
  t.same([explicit?.healthIntervalMs, explicit?.connectTimeoutMs, explicit?.discoveryIntervalMs], [500, 250, 60_000])
  t.same(explicit?.tls, { ca: files['/ca.pem'], serverName: 'stevedore.stevedore.svc' }, 'the CA bundle is read at validation')

  const tls = { cert: '/tls.crt', key: '/tls.key' }
  t.equal(validateConfig({ ...minimal, listen: '[::]:5443', tls, cluster: { peers: ['https://[fd00::8]:5443'], secretFile: '/etc/stevedore/peer-secret' } },
    { env: { POD_IP: 'fd00:0::7' }, readSecret }).cluster?.self, 'https://[fd00::7]:5443', 'https with a TLS listener; IPv6 POD_IP bracketed and compressed')
})

t.test('cluster: DNS discovery', async (t) => {
  const readSecret = (): string => 'a-secret-of-twenty-bytes'
  const c = validateConfig({ ...minimal, listen: ':5000', cluster: { discovery: 'dns:Stevedore-Peers.stevedore.svc.cluster.local:5000', secretFile: '/s' } },
    { env: { POD_IP: '10.0.3.7' }, readSecret }).cluster
  t.same(c?.discovery, { host: 'stevedore-peers.stevedore.svc.cluster.local', port: 5000, scheme: 'http' })
  t.equal(c?.peers, undefined)
  const https = validateConfig({ ...minimal, cluster: { self: 'https://10.0.3.7:5443', discovery: 'dns:peers.svc:5443', secretFile: '/s' } }, { env: {}, readSecret }).cluster
  t.equal(https?.discovery?.scheme, 'https', "the scheme is self's")
})

t.test('cluster: invalid settings name the key', async (t) => {
  const withSecret = (doc: unknown, env: NodeJS.ProcessEnv = { POD_IP: '10.0.3.7' }, secret = 'sixteen-bytes-ok'): void => {
    validateConfig(doc, { env, readSecret: () => secret })
  }
  const rejectsWith = (doc: unknown, key: string, problem: RegExp, env?: NodeJS.ProcessEnv, secret?: string): void => {
    try {
      withSecret(doc, env, secret)
      t.fail(`${key}: should be rejected`)
    } catch (err) {
      t.ok(err instanceof ConfigError, `${key}: a ConfigError`)
      t.equal((err as ConfigError).key, key, `${key}: names the key (${(err as Error).message})`)
      t.match((err as Error).message, problem, `${key}: says the problem`)
      t.notMatch((err as Error).message, /\n/, `${key}: one line`)
    }
  }
  const cluster = (c: Record<string, unknown>): unknown => ({ ...minimal, cluster: { secretFile: '/s', ...c } })
  rejectsWith(cluster({ peers: ['http://a:1'], discovery: 'dns:peers.svc:5000' }), 'cluster', /^config: cluster: set peers or discovery, not both$/)
  rejectsWith(cluster({}), 'cluster', /set peers .* or discovery/)
  rejectsWith({ ...minimal, cluster: 'yes' }, 'cluster', /must be a mapping/)
  rejectsWith(cluster({ discovery: 'peers.svc:5000' }), 'cluster.discovery', /dns:HOST:PORT/)
  rejectsWith(cluster({ discovery: 'dns:peers.svc' }), 'cluster.discovery', /dns:HOST:PORT/)
  rejectsWith(cluster({ discovery: 'dns:peers.svc:0' }), 'cluster.discovery', /dns:HOST:PORT/)
  rejectsWith(cluster({ discovery: 'dns:peers.svc:65536' }), 'cluster.discovery', /dns:HOST:PORT/)
  rejectsWith(cluster({ discovery: 'dns:http://peers.svc:5000' }), 'cluster.discovery', /dns:HOST:PORT/)
  rejectsWith(cluster({ peers: [] }), 'cluster.peers', /non-empty list/)
  rejectsWith(cluster({ peers: ['http://10.0.3.8:5000', 'http://10.0.3.9:5000/x'] }), 'cluster.peers[1]', /bare origin/)
  rejectsWith(cluster({ peers: ['http://10.0.3.8:5000?q=1'] }), 'cluster.peers[0]', /bare origin/)
  rejectsWith(cluster({ peers: ['http://u:p@10.0.3.8:5000'] }), 'cluster.peers[0]', /bare origin/)
  rejectsWith(cluster({ peers: ['ftp://10.0.3.8:5000'] }), 'cluster.peers[0]', /http/)
  rejectsWith(cluster({ peers: ['http://10.0.3.8:5000', 'https://10.0.3.9:5000'] }), 'cluster.peers[1]', /must use http:\/\/ like cluster.self/)
  rejectsWith(cluster({ self: 'http://10.0.3.7:5000/path', peers: ['http://a:1'] }), 'cluster.self', /bare origin/)
  rejectsWith(cluster({ peers: ['http://a:1'] }), 'cluster.self', /^config: cluster.self: not set and POD_IP is not in the environment$/, {})
  rejectsWith(cluster({ peers: ['http://a:1'] }), 'cluster.self', /POD_IP is not in the environment/, { POD_IP: '' })
  rejectsWith(cluster({ peers: ['http://a:1'] }), 'cluster.self', /POD_IP is not an IP address/, { POD_IP: 'pod-7' })
  rejectsWith({ ...minimal, cluster: { peers: ['http://a:1'] } }, 'cluster.secretFile', /is required/)
  rejectsWith(cluster({ peers: ['http://a:1'] }), 'cluster.secretFile', /at least 16 bytes \(has 15\)/, undefined, 'fifteen-bytes!!\n')
  rejectsWith(cluster({ peers: ['http://a:1'], tls: { ca: '/ca.pem' } }), 'cluster.tls.ca', /not a PEM/)
  rejectsWith(cluster({ peers: ['http://a:1'], tls: { bogus: 1 } }), 'cluster.tls.bogus', /not a known key/)
  rejectsWith(cluster({ peers: ['http://a:1'], healthInterval: '0s' }), 'cluster.healthInterval', /at least/)
  rejectsWith(cluster({ peers: ['http://a:1'], connectTimeout: '5m' }), 'cluster.connectTimeout', /at most/)
  rejectsWith(cluster({ peers: ['http://a:1'], discoveryInterval: 'soon' }), 'cluster.discoveryInterval', /duration/)
  rejectsWith(cluster({ peers: ['http://a:1'], bogus: 1 }), 'cluster.bogus', /not a known key/)
  rejects(t, cluster({ peers: ['http://a:1'] }), 'cluster.secretFile', /cannot be read \(ENOENT\)/, { POD_IP: '10.0.3.7' })
})

t.test('cluster: the secret never appears in config errors', async (t) => {
  try {
    validateConfig({ ...minimal, cluster: { peers: ['http://a:1'], secretFile: '/s' } }, { env: { POD_IP: '10.0.3.7' }, readSecret: () => 'hunter2' })
    t.fail('should throw')
  } catch (err) {
    t.match((err as Error).message, /at least 16 bytes/)
    t.notMatch((err as Error).message, /hunter2/)
  }
})

t.test('cluster: the commented example in the package file is valid once uncommented', async (t) => {
  const text = readFileSync(new URL('../../config/stevedore.example.yaml', import.meta.url), 'utf8')
  const start = text.indexOf('# cluster:\n')
  t.ok(start > 0, 'the example has a cluster block')
  const block = text.slice(start).split('\n').filter((l, i) => i === 0 || l.startsWith('#   ')).join('\n').split('\n').map((l) => l.slice(2))
  const cluster = (parseYaml(block.join('\n')) as { cluster: Record<string, unknown> }).cluster
  t.ok(cluster['peers'] !== undefined && cluster['discovery'] !== undefined, 'it shows both forms')
  const read = (): string => '-----BEGIN CERTIFICATE-----\n0123456789abcdef\n'
  const { discovery, ...withPeers } = cluster
  const c = validateConfig({ ...minimal, cluster: withPeers }, { env: {}, readSecret: read }).cluster
  t.same(c?.peers, ['http://10.0.3.7:5000', 'http://10.0.3.8:5000'])
  const { peers: _, ...withDiscovery } = cluster
  t.equal(validateConfig({ ...minimal, cluster: withDiscovery }, { env: {}, readSecret: read }).cluster?.discovery?.port, 5000, `${String(discovery)} parses`)
})
