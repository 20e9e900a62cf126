// A real upstream registry: CNCF distribution 2.8 (`docker-registry serve`),
// on a loopback port, with its own temp dir, stopped at t.teardown.
//
// Request counting uses distribution's own access log: even at
// `log.level: warn` it writes one Apache "combined" line per request to
// stdout, e.g.
//   127.0.0.1 - - [29/Nov/2026:09:16:20 +0000] "GET /v2/foo/blobs/sha256:ab.. HTTP/1.1" 200 157 "" "curl/7.88.1"
// stdout goes to a file that requests()/count() read synchronously. The
// line is written after the handler returns; for blobs Go may already have
// sent the last bytes by then, and on a loaded machine a line came up to
// ~15 ms after the client had the whole body (2 in 1000 direct fetches of a
// 5 MB blob). So: `await reg.settle()` (or waitCount) before asserting an
// exact count.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { genSaltSync, hashSync } from 'bcryptjs'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { randomPassword, startTokenIssuer, type TokenIssuer } from './token-issuer.js'
import { freePort, httpAnswers, LogTail, runOk, waitFor, waitQuiet, makeTemp, removeDir, spawnService, stopService, tailFile, waitReady, type Service } from './tools.js'

export type RegistryAuth = 'none' | 'htpasswd' | 'token'

export interface RegistryOptions {
  auth?: RegistryAuth
  /** run distribution as a pull-through cache of this upstream (it panics at start if that is down) */
  proxyRemoteUrl?: string
  /** credentials distribution uses towards proxyRemoteUrl */
  proxyUsername?: string
  proxyPassword?: string
  port?: number
  /** storage root; default <tempdir>/data (a caller-supplied dir is not removed) */
  dataDir?: string
  /** token mode: anonymous token requests get pull-only tokens instead of 401 */
  tokenAllowAnonymous?: boolean
  /** token mode: expires_in seconds (default 60) */
  tokenExpiresIn?: number
  /** readiness timeout, default 15 s */
  startTimeoutMs?: number
  /** serve HTTPS with a fresh self-signed certificate (SAN IP:127.0.0.1, DNS:localhost): url is https://, certPath is its PEM (its own CA) */
  tls?: boolean
}

export interface RegistryRequest {
  method: string
  /** request URI as logged: path plus query string */
  path: string
  status: number
  /** bytes written ('-' → 0) */
  size: number
  userAgent: string
}

export interface Registry {
  /** "127.0.0.1:PORT" */
  host: string
  /** "http://127.0.0.1:PORT" ("https://..." with tls) */
  url: string
  port: number
  dataDir: string
  auth: RegistryAuth
  /** tls: the server certificate (self-signed, PEM): trust it as a CA */
  certPath?: string
  username?: string
  password?: string
  /** access-log lines parsed from the registry's stdout, since start or last resetRequests() */
  requests(): RegistryRequest[]
  /** requests whose method matches (case-insensitive; '*' = any) and whose path includes `pathIncludes` */
  count(method: string, pathIncludes: string): number
  resetRequests(): void
  /**
   * Wait until the access log has been quiet for `quietMs` (default 100).
   * distribution writes a request's line after its handler returns, which
   * for a blob can be several ms (under load) after the client got the last
   * byte: await this before asserting an exact count.
   */
  settle(quietMs?: number): Promise<void>
  /** wait until count(method, pathIncludes) >= n; returns the count (throws after timeoutMs, default 10 s) */
  waitCount(method: string, pathIncludes: string, n: number, timeoutMs?: number): Promise<number>
  /** data/docker/registry/v2/blobs/sha256/<2>/<hex>/data */
  blobDataPath(digest: string): string
  /** stdout/stderr of the registry process (non-access lines are on stderr) */
  stderr(): string
  stop(): Promise<void>
  /** start again on the same port and data */
  start(): Promise<void>
  /** token mode: number of requests the token issuer got */
  tokenRequests?: () => number
  /** token mode: the issuer itself (per-request details, reset) */
  tokenIssuer?: TokenIssuer
}

// host - user [time] "METHOD URI PROTO" status size "referer" "ua"
const ACCESS_RE = /^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+)(?: \S+)?" (\d{3}) (\d+|-) "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"/

/** readiness probe path; its access lines are left out of requests() */
const PROBE = '/v2/?harness-ready'

export function parseAccessLine(line: string): RegistryRequest | null {
  const m = ACCESS_RE.exec(line)
  if (!m) return null
  return {
    method: m[1] ?? '',
    path: m[2] ?? '',
    status: Number(m[3]),
    size: m[4] === '-' ? 0 : Number(m[4]),
    userAgent: m[5] ?? '',
  }
}

export async function startRegistry(t: Test, opts: RegistryOptions = {}): Promise<Registry> {
  const auth = opts.auth ?? 'none'
  const dir = await makeTemp('stevedore-registry')
  let issuer: TokenIssuer | undefined
  let svc: Service | undefined
  let stopped = false
  t.teardown(async () => {
    stopped = true
    try {
      if (svc) await stopService(svc, 'SIGTERM', 5000)
      if (issuer) await issuer.stop()
    } catch (err) {
      process.stderr.write(`harness: registry teardown: ${String(err)}\n`)
    }
    await removeDir(dir)
  })

  const port = opts.port ?? (await freePort())
  const dataDir = opts.dataDir ?? join(dir, 'data')
  await mkdir(dataDir, { recursive: true })
  const stdoutFile = join(dir, 'stdout.log')
  const stderrFile = join(dir, 'stderr.log')
  const configPath = join(dir, 'config.yml')

  let username: string | undefined
  let password: string | undefined
  let authConfig: Record<string, unknown> | undefined
  if (auth === 'htpasswd') {
    username = 'robot'
    password = randomPassword()
    const htpasswd = join(dir, 'htpasswd')
    // cost 4 (the minimum): distribution checks the hash on every request
    const hash = hashSync(password, genSaltSync(4))
    await writeFile(htpasswd, `${username}:${hash}\n`)
    authConfig = { htpasswd: { realm: 'test', path: htpasswd } }
  } else if (auth === 'token') {
    username = 'robot'
    password = randomPassword()
    const idir = join(dir, 'issuer')
    await mkdir(idir)
    issuer = await startTokenIssuer({
      dir: idir,
      username,
      password,
      service: 'test-registry',
      issuer: 'test-issuer',
      ...(opts.tokenExpiresIn === undefined ? {} : { expiresIn: opts.tokenExpiresIn }),
      ...(opts.tokenAllowAnonymous === undefined ? {} : { allowAnonymous: opts.tokenAllowAnonymous }),
    })
    authConfig = {
      token: {
        realm: issuer.realm,
        service: 'test-registry',
        issuer: 'test-issuer',
        rootcertbundle: issuer.certPath,
      },
    }
  }

  let certPath: string | undefined
  let tlsConfig: Record<string, unknown> | undefined
  if (opts.tls) {
    certPath = join(dir, 'tls.crt')
    const keyPath = join(dir, 'tls.key')
    await runOk(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyPath, '-out', certPath],
      { timeoutMs: 30_000 },
    )
    tlsConfig = { certificate: certPath, key: keyPath }
  }

  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex'), ...(tlsConfig ? { tls: tlsConfig } : {}) },
  }
  if (authConfig) config.auth = authConfig
  if (opts.proxyRemoteUrl) {
    const proxy: Record<string, unknown> = { remoteurl: opts.proxyRemoteUrl }
    if (opts.proxyUsername !== undefined) proxy.username = opts.proxyUsername
    if (opts.proxyPassword !== undefined) proxy.password = opts.proxyPassword
    config.proxy = proxy
  }
  await writeFile(configPath, stringify(config))

  const tail = new LogTail(stdoutFile)
  let reqs: RegistryRequest[] = []
  const poll = (): void => {
    for (const line of tail.read()) {
      const r = parseAccessLine(line)
      if (r && !r.path.startsWith(PROBE)) reqs.push(r)
    }
  }
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`
  const ca = certPath === undefined ? undefined : await readFile(certPath, 'utf8')

  const start = async (): Promise<void> => {
    if (stopped) throw new Error('registry: torn down')
    if (svc && svc.status() === null) throw new Error('registry: already running')
    const s = spawnService('docker-registry', ['serve', configPath], { cwd: dir, stdoutFile, stderrFile })
    svc = s
    // 401 (auth modes) counts as up
    await waitReady(s, () => httpAnswers(`${url}${PROBE}`, undefined, ca), opts.startTimeoutMs ?? 15_000, `docker-registry on ${port}`, stderrFile)
  }
  await start()

  const reg: Registry = {
    host: `127.0.0.1:${port}`,
    url,
    port,
    dataDir,
    auth,
    ...(certPath === undefined ? {} : { certPath }),
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    requests: () => {
      poll()
      return reqs.slice()
    },
    count: (method, pathIncludes) => {
      poll()
      const m = method.toUpperCase()
      return reqs.filter((r) => (m === '*' || r.method.toUpperCase() === m) && r.path.includes(pathIncludes)).length
    },
    resetRequests: () => {
      poll()
      reqs = []
    },
    settle: (quietMs = 100) => waitQuiet(stdoutFile, quietMs, 30_000),
    waitCount: async (method, pathIncludes, n, timeoutMs = 10_000) => {
      let c = 0
      await waitFor(async () => (c = reg.count(method, pathIncludes)) >= n, timeoutMs, `${n}× ${method} *${pathIncludes}* in the registry log`)
      return c
    },
    blobDataPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '')
      if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`not a sha256 digest: ${digest}`)
      return join(dataDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')
    },
    stderr: () => tailFile(stderrFile, 1 << 20),
    stop: async () => {
      if (svc) await stopService(svc, 'SIGTERM', 5000)
    },
    start,
  }
  if (issuer) {
    const iss = issuer
    reg.tokenRequests = () => iss.count()
    reg.tokenIssuer = iss
  }
  return reg
}
