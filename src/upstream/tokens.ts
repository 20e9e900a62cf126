import { LRUCache } from 'lru-cache'
import { SingleFlight } from '../lib/single-flight.js'

export interface Token {
  readonly value: string
  readonly expiresAt: number
}

export type TokenFetcher = () => Promise<Token>

// Refresh this long before expiry so a token never dies mid-request.
const REFRESH_MARGIN_MS = 10_000

/**
 * Bearer tokens by realm, service, scope and credential. One fetch at a time
 * per key: a burst of requests for one repository costs one token request.
 */
export class TokenCache {
  private readonly tokens = new LRUCache<string, Token>({ max: 10_000 })
  private readonly inflight = new SingleFlight<string, Promise<Token>>()

  constructor(private readonly now: () => number = Date.now) {}

  static key(realm: string, service: string, scope: string, username: string | undefined): string {
    return JSON.stringify([realm, service, scope, username ?? ''])
  }

  /** A fresh token for key, fetching one when there is none, it is near expiry, or `stale` is the one we hold. */
  async get(key: string, fetch: TokenFetcher, stale?: string): Promise<Token> {
    const cached = this.tokens.get(key)
    if (cached !== undefined && cached.value !== stale && cached.expiresAt - REFRESH_MARGIN_MS > this.now()) return cached
    return this.inflight.run(key, async () => {
      const token = await fetch()
      this.tokens.set(key, token)
      return token
    }).value
  }
}
