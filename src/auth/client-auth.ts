import { createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { readNamedFile } from '../config/errors.js'
import { SingleFlight } from '../lib/single-flight.js'
import { parseHtpasswd } from './htpasswd.js'
import { watchFiles, type FileWatch } from '../lib/file-watch.js'

export type AuthOutcome =
  | { readonly kind: 'ok'; readonly user: string }
  | { readonly kind: 'denied' }
  /** Too many failed attempts from this address: refused before any hashing. */
  | { readonly kind: 'limited'; readonly retryAfterS: number }

export interface ClientAuthOptions {
  readonly htpasswd: string
  readonly log: Logger
  /** bcrypt comparison, off the main thread. */
  readonly compare: (password: string, hash: string) => Promise<boolean>
  /** How long a verified Authorization header is taken without hashing again. */
  readonly verifiedTtlMs?: number
  /** Failed attempts per address per window before the address is refused for the rest of it. */
  readonly failures?: { readonly max: number; readonly windowMs: number }
  readonly pollMs?: number
}

// Compared for an unknown user when the file has no entries to stand in.
const DUMMY_HASH = '$2b$10$cY2I09ytE6fE0Y7D0IuMjO0qdRTDc6mjeLIT/daH4HMXb6/Lzzdna'

/**
 * HTTP Basic authentication of clients against an htpasswd file (bcrypt
 * entries). containerd sends the header on every request of a pull, so a
 * verified header is remembered briefly, keyed by an HMAC of it under a key
 * of this process (the cache never holds a password). The file is re-read
 * when it changes, and what was verified under the old one is forgotten.
 */
export class ClientAuth {
  private users: ReadonlyMap<string, string> = new Map()
  private readonly hmacKey = randomBytes(32)
  private readonly verified: LRUCache<string, string>
  private readonly failed: LRUCache<string, { count: number; since: number }>
  private readonly verifying = new SingleFlight<string, Promise<AuthOutcome>>()
  private readonly maxFailures: number
  private readonly windowMs: number
  private watch: FileWatch | undefined
  private generation = 0
  private reads = 0
  private applied = 0
  private standIn = DUMMY_HASH

  constructor(private readonly options: ClientAuthOptions) {
    this.verified = new LRUCache({ max: 10_000, ttl: options.verifiedTtlMs ?? 60_000 })
    this.maxFailures = options.failures?.max ?? 10
    this.windowMs = options.failures?.windowMs ?? 60_000
    this.failed = new LRUCache({ max: 10_000, ttl: this.windowMs })
  }

  /** Reads the file (start-up fails if it cannot) and watches it. */
  async start(): Promise<void> {
    await this.load()
    this.watch = watchFiles([this.options.htpasswd], () => void this.reload(), this.options.pollMs)
  }

  close(): void {
    this.watch?.close()
  }

  get userCount(): number {
    return this.users.size
  }

  async check(authorization: string | undefined, address: string): Promise<AuthOutcome> {
    // No header is how every client starts: it is told the realm, not counted as a failure.
    if (authorization === undefined || authorization === '') return { kind: 'denied' }
    const key = createHmac('sha256', this.hmacKey).update(authorization).digest('base64')
    const user = this.verified.get(key)
    if (user !== undefined) return { kind: 'ok', user }
    const failures = this.failed.get(address)
    if (failures !== undefined && failures.count >= this.maxFailures) {
      return { kind: 'limited', retryAfterS: Math.max(1, Math.ceil((failures.since + this.windowMs - Date.now()) / 1000)) }
    }
    return this.verifying.run(key, () => this.verify(key, authorization, address)).value
  }

  private async verify(key: string, authorization: string, address: string): Promise<AuthOutcome> {
    // Counted before hashing, so that attempts sent at once count too; given back if it matches.
    const attempts = this.countAttempt(address)
    const generation = this.generation
    const credentials = parseBasic(authorization)
    if (credentials === undefined) return { kind: 'denied' }
    const hash = this.users.get(credentials.user)
    // An unknown user is hashed against a real entry (so it costs what a wrong password does); a match there means nothing.
    const match = await this.options.compare(credentials.password, hash ?? this.standIn)
    if (!match || hash === undefined) return { kind: 'denied' }
    attempts.count = Math.max(0, attempts.count - 1)
    // Verified against a file that has since changed: not remembered.
    if (generation === this.generation) this.verified.set(key, credentials.user)
    return { kind: 'ok', user: credentials.user }
  }

  private countAttempt(address: string): { count: number; since: number } {
    let attempts = this.failed.get(address)
    if (attempts === undefined) this.failed.set(address, (attempts = { count: 0, since: Date.now() }))
    attempts.count++
    return attempts
  }

  private async load(): Promise<void> {
    const reading = ++this.reads
    const { users, skipped } = parseHtpasswd(await readNamedFile('auth.htpasswd', this.options.htpasswd))
    // Two reloads that overlap: the later read wins, whichever finishes last.
    if (reading < this.applied) return
    this.applied = reading
    for (const s of skipped) this.options.log.warn({ file: this.options.htpasswd, line: s.line }, `htpasswd: line skipped: ${s.why}`)
    this.users = users
    this.standIn = highestCost(users) ?? DUMMY_HASH
    this.generation++
    this.verified.clear()
  }

  private async reload(): Promise<void> {
    try {
      await this.load()
      this.options.log.info({ file: this.options.htpasswd, users: this.users.size }, 'htpasswd reloaded')
    } catch (err) {
      // A file being replaced may be missing for a moment: keep the users we have.
      this.options.log.warn({ err, file: this.options.htpasswd }, 'htpasswd could not be read: keeping the users loaded before')
    }
  }
}

/** The entry with the highest bcrypt cost: what an unknown user is hashed against, so it takes as long as a known one. */
function highestCost(users: ReadonlyMap<string, string>): string | undefined {
  let best: string | undefined
  for (const hash of users.values()) if (best === undefined || hash.slice(4, 6) > best.slice(4, 6)) best = hash
  return best
}

function parseBasic(header: string): { user: string; password: string } | undefined {
  const m = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header)
  if (m?.[1] === undefined) return undefined
  const decoded = Buffer.from(m[1], 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  return colon <= 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}
