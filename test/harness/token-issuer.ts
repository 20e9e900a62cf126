// A minimal Docker registry token issuer (the "realm" of Bearer auth), as
// distribution 2.8's `auth: token` expects: RS256 JWTs whose header carries
// the signing certificate (x5c) and whose certificate is in the registry's
// rootcertbundle.
//
// Policy: every token needs valid Basic credentials (robot/<password>), so
// a client that forgets to send them gets 401 (unless allowAnonymous, then
// anonymous callers get pull only). Authenticated callers get every action
// they ask for.
import { createHash, randomBytes, randomUUID, sign, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import { runOk } from './tools.js'

export interface TokenIssuerOptions {
  /** folder for cert.pem / key.pem (owned by the caller) */
  dir: string
  username: string
  password: string
  /** `service` claim (aud) */
  service: string
  /** `iss` claim; must match the registry's auth.token.issuer */
  issuer: string
  port?: number
  /** seconds, default 60 */
  expiresIn?: number
  /** give anonymous callers pull-only tokens instead of 401 */
  allowAnonymous?: boolean
}

export interface TokenRequest {
  method: string
  /** `scope` values as sent, split on spaces */
  scopes: string[]
  service: string | null
  /** authenticated user, or null if anonymous */
  account: string | null
  status: number
  /** 'basic' (GET with Authorization), 'password' or 'refresh_token' (POST oauth2), 'anonymous' */
  kind: string
  userAgent: string
}

export interface AccessEntry {
  type: string
  name: string
  actions: string[]
}

export interface TokenIssuer {
  url: string
  /** realm to configure in the registry: `${url}/token` */
  realm: string
  port: number
  certPath: string
  keyPath: string
  requests(): TokenRequest[]
  /** number of requests to the token endpoint (all statuses) */
  count(): number
  resetRequests(): void
  /** FAULT on cue: the next `times` token requests answer `status` (logged like the others). */
  failNext(times: number, status: number): void
  stop(): Promise<void>
}

/** Generate a self-signed RSA certificate with openssl (CN=<cn>). */
export async function makeCert(dir: string, cn: string): Promise<{ certPath: string; keyPath: string }> {
  const certPath = join(dir, 'cert.pem')
  const keyPath = join(dir, 'key.pem')
  await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', keyPath, '-out', certPath], { timeoutMs: 30_000 })
  return { certPath, keyPath }
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url')

/** Parse `repository:name:pull,push` (name may contain ':' e.g. a host:port prefix). */
export function parseScope(scope: string): AccessEntry | null {
  const first = scope.indexOf(':')
  const last = scope.lastIndexOf(':')
  if (first < 0 || last <= first) return null
  const actions = scope
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean)
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions }
}

export async function startTokenIssuer(opts: TokenIssuerOptions): Promise<TokenIssuer> {
  const { certPath, keyPath } = await makeCert(opts.dir, opts.issuer)
  const certPem = await readFile(certPath, 'utf8')
  const keyPem = await readFile(keyPath, 'utf8')
  const x5c = new X509Certificate(certPem).raw.toString('base64')
  const expiresIn = opts.expiresIn ?? 60
  let log: TokenRequest[] = []
  let total = 0
  let failures: { times: number; status: number } = { times: 0, status: 503 }

  const mint = (account: string | null, scopes: string[], service: string | null, anonymous: boolean): string => {
    const now = Math.floor(Date.now() / 1000)
    const access: AccessEntry[] = []
    for (const s of scopes) {
      const e = parseScope(s)
      if (e === null) continue
      let actions = e.actions
      if (anonymous) actions = actions.filter((a) => a === 'pull')
      if (actions.length === 0) continue
      access.push({ type: e.type, name: e.name, actions })
    }
    const header = { typ: 'JWT', alg: 'RS256', x5c: [x5c] }
    const claims = {
      iss: opts.issuer,
      sub: account ?? '',
      aud: service ?? opts.service,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    }
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`
    const sig = sign('RSA-SHA256', Buffer.from(signingInput), keyPem)
    return `${signingInput}.${b64url(sig)}`
  }

  const checkBasic = (req: IncomingMessage): string | null | false => {
    const h = req.headers.authorization
    if (!h) return null
    const m = /^Basic\s+(.+)$/i.exec(h)
    if (!m?.[1]) return false
    const dec = Buffer.from(m[1], 'base64').toString('utf8')
    const i = dec.indexOf(':')
    if (i < 0) return false
    return checkPassword(dec.slice(0, i), dec.slice(i + 1))
  }
  const checkPassword = (user: string, pass: string): string | false => {
    // constant-time-ish comparison is pointless in a test; keep it simple
    const ok = user === opts.username && createHash('sha256').update(pass).digest('hex') === createHash('sha256').update(opts.password).digest('hex')
    return ok ? user : false
  }

  const readBody = async (req: IncomingMessage): Promise<string> => {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname !== '/token') {
      res.writeHead(404).end()
      return
    }
    total++
    let params: URLSearchParams
    let account: string | null | false
    let kind: string
    if (req.method === 'POST') {
      params = new URLSearchParams(await readBody(req))
      const grant = params.get('grant_type') ?? ''
      kind = grant
      if (grant === 'password') {
        account = checkPassword(params.get('username') ?? '', params.get('password') ?? '')
      } else if (grant === 'refresh_token') {
        // refresh tokens are "robot:<password>" base64: simple and verifiable
        const rt = Buffer.from(params.get('refresh_token') ?? '', 'base64url').toString('utf8')
        const i = rt.indexOf(':')
        account = i < 0 ? false : checkPassword(rt.slice(0, i), rt.slice(i + 1))
      } else {
        account = false
      }
    } else if (req.method === 'GET') {
      params = url.searchParams
      account = checkBasic(req)
      kind = account === null ? 'anonymous' : 'basic'
    } else {
      res.writeHead(405).end()
      return
    }
    const scopes = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean)
    const service = params.get('service')
    const entry: TokenRequest = {
      method: req.method,
      scopes,
      service,
      account: account === null || account === false ? null : account,
      status: 200,
      kind,
      userAgent: req.headers['user-agent'] ?? '',
    }
    log.push(entry)
    if (failures.times > 0) {
      failures.times--
      entry.status = failures.status
      res.writeHead(failures.status, { 'content-type': 'text/plain' }).end('injected failure')
      return
    }
    const anonymous = account === null
    if (account === false || (anonymous && !opts.allowAnonymous)) {
      entry.status = 401
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': 'Basic realm="test-token-issuer"',
      })
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'credentials required' }] }))
      return
    }
    const token = mint(anonymous ? null : account, scopes, service, anonymous)
    const body: Record<string, unknown> = {
      token,
      access_token: token,
      expires_in: expiresIn,
      issued_at: new Date().toISOString(),
    }
    if (req.method === 'POST' && !anonymous && account) {
      body.refresh_token = b64url(`${account}:${opts.password}`)
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500)
      res.end(String(err))
    })
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: opts.port ?? 0 }, () => resolve())
  })
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('token issuer: no address')
  const url = `http://127.0.0.1:${addr.port}`
  let stopped = false
  return {
    url,
    realm: `${url}/token`,
    port: addr.port,
    certPath,
    keyPath,
    requests: () => log.slice(),
    count: () => total,
    resetRequests: () => {
      log = []
      total = 0
    },
    failNext: (times, status) => {
      failures = { times, status }
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** Random password for test users. */
export function randomPassword(): string {
  return randomBytes(12).toString('base64url')
}
