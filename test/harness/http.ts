// Small HTTP client helpers for tests: whole answers, streamed hashes, and
// reads that tell a clean end from an aborted one.
import { createHash } from 'node:crypto'
import { request } from 'undici'

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

export async function fetchAll(url: string, opts: { method?: 'GET' | 'HEAD'; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await request(url, { method: opts.method ?? 'GET', headers: opts.headers ?? {} })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

export interface StreamedAnswer {
  status: number
  bytes: number
  digest: string
  /** set when the body ended in an error (connection aborted) instead of cleanly */
  error?: string
  /** ms to the first body byte */
  firstByteMs?: number
}

/** GETs url and hashes the body as it streams; never holds it in memory. */
export async function fetchHashed(url: string, opts: { headers?: Record<string, string>; abortAfterBytes?: number } = {}): Promise<StreamedAnswer> {
  const started = Date.now()
  const controller = new AbortController()
  const res = await request(url, { headers: opts.headers ?? {}, signal: controller.signal })
  const hash = createHash('sha256')
  let bytes = 0
  let firstByteMs: number | undefined
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      firstByteMs ??= Date.now() - started
      hash.update(chunk)
      bytes += chunk.byteLength
      if (opts.abortAfterBytes !== undefined && bytes >= opts.abortAfterBytes) {
        controller.abort()
        break
      }
    }
  } catch (err) {
    return { status: res.statusCode, bytes, digest: `sha256:${hash.digest('hex')}`, error: String(err), ...(firstByteMs !== undefined ? { firstByteMs } : {}) }
  }
  return { status: res.statusCode, bytes, digest: `sha256:${hash.digest('hex')}`, ...(firstByteMs !== undefined ? { firstByteMs } : {}) }
}
