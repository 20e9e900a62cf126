// Properties of configuration checking over random input: whatever a YAML
// file holds, start-up ends in a Config or in one ConfigError line, never in
// a TypeError; and whatever is accepted is within what its use can honour.
import fc from 'fast-check'
import t from 'tap'
import { ConfigError, validateConfig, type Config } from '../../src/config/schema.js'
import { parseDuration, parseSize } from '../../src/config/units.js'

const MAX_TIMER_MS = 2 ** 31 - 1
const RUNS = 400

const upstreams = { 'docker.io': { url: 'https://registry-1.docker.io' } }

/** validateConfig's answer, or the ConfigError it threw; anything else thrown fails the property. */
function attempt(doc: unknown): Config | ConfigError {
  try {
    return validateConfig(doc, { env: { TOKEN: 'x', POD_IP: '10.0.3.7' }, readSecret: () => '-----BEGIN CERTIFICATE-----\nsecret\n' })
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
}

const oneLine = (err: ConfigError): boolean => !err.message.includes('\n') && err.message.startsWith(`config: ${err.key}: `) && err.key !== ''

// What YAML can give: scalars of every kind, lists and mappings of them.
const yamlValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('value'), { maxKeys: 4 }),
  ),
})).value

const unit = fc.constantFrom('', 'ms', 's', 'm', 'h', 'd', 'w', 'B', 'KiB', 'MiB', 'GiB', 'TiB', 'KB', 'MB', 'GB', 'TB', 'Ki', 'x')
const amount = fc.oneof(fc.nat().map(String), fc.double({ min: 0, max: 1e20, noNaN: true }).map(String), fc.bigInt({ min: 0n, max: 10n ** 40n }).map(String))
// Strings shaped like a duration or size, so that bounds are reached and not only syntax.
const measured = fc.oneof(
  fc.tuple(amount, fc.constantFrom('', ' '), unit, fc.constantFrom('', ' ')).map(([n, a, u, b]) => `${n}${a}${u}${b}`),
  fc.double(), fc.integer(), fc.string(), fc.constant(Number.POSITIVE_INFINITY), fc.constant(Number.NaN),
)
const scalarish = fc.oneof(measured, yamlValue)

t.test('parseDuration and parseSize never throw and give whole, finite, non-negative numbers or undefined', async (t) => {
  fc.assert(fc.property(fc.oneof(measured, fc.anything()), (value) => {
    for (const parsed of [parseDuration(value), parseSize(value)]) {
      if (parsed !== undefined && !(Number.isSafeInteger(parsed) && parsed >= 0)) return false
    }
    return true
  }), { numRuns: RUNS * 5 })
  t.pass('held')
})

t.test('every accepted timer duration is 0 < ms < 2^31; every rejected one names its key', async (t) => {
  const timers: Array<[string, string, (c: Config) => number | undefined]> = [
    ['timeouts', 'connect', (c) => c.timeouts.connectMs],
    ['timeouts', 'read', (c) => c.timeouts.readMs],
    ['timeouts', 'fill', (c) => c.timeouts.fillMs],
    ['timeouts', 'shutdown', (c) => c.timeouts.shutdownMs],
    ['limits', 'queueTimeout', (c) => c.limits.queueTimeoutMs],
    ['limits', 'idleTimeout', (c) => c.limits.idleTimeoutMs],
    ['limits', 'writeTimeout', (c) => c.limits.writeTimeoutMs],
  ]
  fc.assert(fc.property(fc.constantFrom(...timers), scalarish, ([section, key, read], value) => {
    const r = attempt({ upstreams, [section]: { [key]: value } })
    if (r instanceof ConfigError) return r.key === `${section}.${key}` && oneLine(r)
    const ms = read(r)
    // null is an empty YAML key: the default (or, for fill, none).
    if (ms === undefined) return key === 'fill' && value === null
    return Number.isSafeInteger(ms) && ms > 0 && ms <= MAX_TIMER_MS && (value === null || ms === parseDuration(value))
  }), { numRuns: RUNS * 2 })
  t.pass('held')
})

t.test('every accepted size is within its bounds; every rejected one names its key', async (t) => {
  const sizes: Array<[string, string, number, number, (c: Config) => number | undefined]> = [
    ['limits', 'sendBuffers', 1024 ** 2, 16 * 1024 ** 3, (c) => c.limits.sendBuffers],
    ['storage', 'maxSize', 1024 ** 2, Number.MAX_SAFE_INTEGER, (c) => c.storage.maxSize],
    ['cache', 'memory', 0, 64 * 1024 ** 3, (c) => c.cache.memoryBytes],
  ]
  fc.assert(fc.property(fc.constantFrom(...sizes), scalarish, ([section, key, min, max, read], value) => {
    const r = attempt({ upstreams, [section]: { [key]: value } })
    if (r instanceof ConfigError) return r.key === `${section}.${key}` && oneLine(r)
    const bytes = read(r)
    if (bytes === undefined) return key === 'maxSize' && value === null
    return Number.isSafeInteger(bytes) && bytes >= min && bytes <= max
  }), { numRuns: RUNS * 2 })
  t.pass('held')
})

t.test('limits counts: accepted ones are integers in range, with fewer reserved than fills', async (t) => {
  const limit = fc.dictionary(
    fc.constantFrom('fills', 'fillsReservedForPulls', 'fillQueue', 'responses', 'responseQueue', 'connections', 'bogus'),
    fc.oneof(fc.integer({ min: -2, max: 40 }), fc.integer(), fc.double(), yamlValue),
    { maxKeys: 4 },
  )
  fc.assert(fc.property(limit, (limits) => {
    const r = attempt({ upstreams, limits })
    if (r instanceof ConfigError) return r.key.startsWith('limits') && oneLine(r)
    const l = r.limits
    return [l.fills, l.fillsReservedForPulls, l.fillQueue, l.responses, l.responseQueue, l.connections].every(Number.isSafeInteger) &&
      l.fills >= 1 && l.fillsReservedForPulls >= 0 && l.fillsReservedForPulls < l.fills && l.responses >= 1 && l.connections >= 1
  }), { numRuns: RUNS })
  t.pass('held')
})

// Documents near the real shape: mostly good parts, now and then a bad or a junk one.
const maybe = <T>(good: fc.Arbitrary<T>, ...bad: unknown[]): fc.Arbitrary<unknown> => fc.oneof(
  { weight: 150, arbitrary: good },
  { weight: 1, arbitrary: bad.length > 0 ? fc.constantFrom(...bad) : scalarish },
  { weight: 1, arbitrary: scalarish },
)
const some = (good: unknown[], ...bad: unknown[]): fc.Arbitrary<unknown> => maybe(fc.constantFrom(...good), ...bad)
const duration = some(['1s', '30s', '5m', '2h', 30, '250ms'], '0s', '30d', 'soon')
const optional = { requiredKeys: [] as never[] }
const host = fc.oneof({ weight: 150, arbitrary: fc.constantFrom('docker.io', 'ghcr.io', 'localhost', 'registry.example.com:5443', '127.0.0.1:5001') }, fc.constantFrom('library', ''), fc.string({ maxLength: 12 }))
const upstream = maybe(fc.record({
  url: some(['https://registry-1.docker.io', 'http://127.0.0.1:5000', 'https://ghcr.io'], 'ftp://x', 'https://x/path', 'https://u:p@x'),
  credentials: fc.option(fc.tuple(fc.constantFrom('password', 'passwordEnv', 'passwordFile'), some(['TOKEN'], 'UNSET'))),
  ca: some(['/etc/ca.pem']),
  insecureSkipVerify: some([true, false], 'yes'),
  repositories: maybe(fc.array(some(['library/*', 'org/**'], 'UPPER'), { minLength: 1, maxLength: 3 }), []),
  redirectHosts: maybe(fc.array(some(['localhost', '*.example.com', '::1', '[fd00::1]'], 'x:1', '*'), { minLength: 1, maxLength: 3 }), []),
}, { requiredKeys: ['url'] }).map(({ credentials, ...u }) => (credentials === null || credentials === undefined ? u : { ...u, username: 'robot', [credentials[0]]: credentials[1] })))
const documentArb = fc.oneof(
  { weight: 1, arbitrary: yamlValue },
  {
    weight: 8,
    arbitrary: fc.record({
      listen: some(['0.0.0.0:5000', '[::1]:80', ':5000'], 'x:99999'),
      storage: maybe(fc.oneof(
        fc.record({ filesystem: maybe(fc.record({ root: some(['/var/lib/stevedore']) })) }),
        fc.record({ s3: maybe(fc.record({ bucket: some(['b']), prefix: some(['p', 'p/', '']), endpoint: some(['http://minio:9000'], 'nope'), staleUploadAge: some(['30m', '6h'], '10s') }, { requiredKeys: ['bucket'] })) }),
        fc.record({ maxSize: some(['50GiB', '1MiB'], '1KiB', '1e3'), evict: some([true, false]) }, optional),
      )),
      upstreams: maybe(fc.dictionary(host, upstream, { minKeys: 1, maxKeys: 3 })),
      defaultUpstream: maybe(host),
      cache: maybe(fc.record({ tagTtl: some(['1s', '5m'], '2d'), maxStaleAge: some(['1h', '24h']), notFoundTtl: duration, memory: some(['64MiB', 0]), rateLimitBackoff: some(['60s', '1h'], '7h') }, optional)),
      timeouts: maybe(fc.record({ connect: duration, read: duration, fill: duration, shutdown: duration }, optional)),
      limits: maybe(fc.record({
        fills: some([4, 32], 0), fillsReservedForPulls: some([0, 3], 32), fillQueue: some([0, 256], -1), responses: some([1, 1024]), responseQueue: some([0, 10]),
        queueTimeout: duration, sendBuffers: some(['1MiB', '128MiB'], '1KiB', '17GiB'), connections: some([1, 4096]), idleTimeout: duration, writeTimeout: duration,
      }, optional)),
      cluster: maybe(fc.record({
        self: some(['http://10.0.3.7:5000', 'http://[fd00::7]:5000'], 'ftp://x', 'http://x/p'),
        peers: maybe(fc.array(some(['http://10.0.3.8:5000', 'http://[fd00::8]:5000/'], 'https://10.0.3.9:5000', 'http://u:p@x'), { minLength: 1, maxLength: 3 }), []),
        discovery: some(['dns:peers.stevedore.svc:5000'], 'dns:peers', 'peers:5000', 'dns:p:99999'),
        secretFile: some(['/s']),
        healthInterval: duration, connectTimeout: some(['1s', '250ms'], '2m'), discoveryInterval: duration,
        tls: maybe(fc.record({ ca: some(['/ca.pem']), serverName: some(['stevedore.svc']) }, optional)),
      }, { requiredKeys: ['secretFile'] })),
      log: maybe(fc.record({ level: some(['info', 'debug'], 'loud') }, optional)),
    }, { requiredKeys: ['upstreams'] }),
  },
  { weight: 1, arbitrary: fc.record({ upstreams: fc.constant(upstreams), extra: yamlValue }) },
)

t.test('whole documents: a Config within bounds or one ConfigError line, never anything else', async (t) => {
  let accepted = 0
  let rejected = 0
  fc.assert(fc.property(documentArb, (doc) => {
    const r = attempt(doc)
    if (r instanceof ConfigError) {
      rejected++
      return oneLine(r)
    }
    accepted++
    const timers = [r.timeouts.connectMs, r.timeouts.readMs, r.timeouts.shutdownMs, r.limits.queueTimeoutMs, r.limits.idleTimeoutMs, r.limits.writeTimeoutMs]
    if (r.timeouts.fillMs !== undefined) timers.push(r.timeouts.fillMs)
    const c = r.cluster
    if (c !== undefined) {
      timers.push(c.healthIntervalMs, c.connectTimeoutMs, c.discoveryIntervalMs)
      const origins = [c.self, ...(c.peers ?? [])]
      // Exactly one way to find peers; every origin bare and of self's scheme.
      if ((c.peers === undefined) === (c.discovery === undefined)) return false
      if (!origins.every((o) => new URL(o).origin === o && o.startsWith(c.self.startsWith('https:') ? 'https:' : 'http:'))) return false
      if (c.secret.byteLength < 16) return false
    }
    return timers.every((ms) => Number.isSafeInteger(ms) && ms > 0 && ms <= MAX_TIMER_MS) &&
      r.upstreams.size > 0 && r.cache.maxStaleMs >= r.cache.tagTtlMs &&
      (r.defaultUpstream === undefined || r.upstreams.has(r.defaultUpstream))
  }), { numRuns: RUNS * 3 })
  // Both sides reached, or the property says little.
  t.ok(accepted > RUNS / 10 && rejected > RUNS / 10, `${accepted} accepted, ${rejected} rejected`)
})

t.test('anything at all: fast-check values of every kind', async (t) => {
  fc.assert(fc.property(fc.anything({ withNullPrototype: true, withObjectString: true, withBoxedValues: true }), fc.anything(), (doc, part) => {
    for (const d of [doc, { upstreams, timeouts: part }, { upstreams: { 'docker.io': part } }, { upstreams, storage: { s3: part } }, { upstreams, cluster: part }]) {
      const r = attempt(d)
      if (r instanceof ConfigError && !oneLine(r)) return false
    }
    return true
  }), { numRuns: RUNS })
  t.pass('held')
})
