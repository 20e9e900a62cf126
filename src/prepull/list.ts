import { Agent, errors as undiciErrors, request } from 'undici'

/** The pre-pull list could not be had: one line saying why, for the log. */
export class ListError extends Error {
  override name = 'ListError'
}

export interface MirrorListOptions {
  /** The mirror's origin, as --mirror gives it. */
  readonly mirror: URL
  /** `Basic …` for a mirror with client auth on (auth.htpasswd). */
  readonly authorization?: string
  /** PEM of a private CA to trust for an https mirror. */
  readonly caPem?: string
  /** For connecting, the headers and the body each. */
  readonly timeoutMs: number
}

/** The list is a few hundred references at most; anything far larger is not one. */
const MAX_BODY = 4 * 1024 * 1024

export interface MirrorList {
  /** GET /api/v1/prepull: the images; rejects with a ListError. */
  fetch(signal: AbortSignal): Promise<string[]>
  /** Closes the connections. */
  close(): Promise<void>
}

function refusal(status: number, headers: Record<string, string | string[] | undefined>, withCredentials: boolean): string {
  switch (status) {
    case 401:
      return withCredentials
        ? 'the mirror refused the credentials of --user / STEVEDORE_AUTH (401)'
        : 'the mirror asks for credentials (401: client auth is on): give --user USER:PASS or set STEVEDORE_AUTH'
    case 429:
      return `the mirror refuses this address after too many failed logins (429); retry after ${String(headers['retry-after'] ?? '?')} s`
    case 404:
      return 'the mirror has no /api/v1/prepull (404): is --mirror a Stevedore mirror of this version?'
    default:
      return `the mirror answered ${status}`
  }
}

function unreachable(url: string, err: unknown): string {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
  const code = e.code ?? e.cause?.code
  const text = e.cause?.message ?? e.message
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError || e.name === 'TimeoutError') {
    return `${url}: no answer in time`
  }
  // Certificate problems name the flag that fixes them.
  if (code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) return `${url}: ${text} (a private CA? give it with --ca FILE)`
  return `${url}: ${text}`
}

/** The mirror's pre-pull list over undici, with one connection pool for every round. */
export function mirrorList(o: MirrorListOptions): MirrorList {
  const url = new URL('/api/v1/prepull', o.mirror).toString()
  const agent = new Agent({
    connectTimeout: o.timeoutMs,
    ...(o.caPem !== undefined ? { connect: { ca: o.caPem } } : {}),
  })
  const headers: Record<string, string> = { accept: 'application/json' }
  if (o.authorization !== undefined) headers['authorization'] = o.authorization

  return {
    async fetch(stop) {
      // Either ends the request: the process stopping, or the mirror taking too long.
      const signal = AbortSignal.any([stop, AbortSignal.timeout(o.timeoutMs)])
      let res: Awaited<ReturnType<typeof request>>
      try {
        res = await request(url, { dispatcher: agent, method: 'GET', headers, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs, signal })
      } catch (err) {
        throw new ListError(unreachable(url, err))
      }
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => undefined)
        throw new ListError(`${url}: ${refusal(res.statusCode, res.headers, o.authorization !== undefined)}`)
      }
      const declared = Number(res.headers['content-length'] ?? 0)
      if (declared > MAX_BODY) {
        res.body.destroy()
        throw new ListError(`${url}: a body of ${declared} bytes is not a pre-pull list`)
      }
      const chunks: Buffer[] = []
      let size = 0
      try {
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length
          if (size > MAX_BODY) {
            res.body.destroy()
            throw new ListError(`${url}: a body of more than ${MAX_BODY} bytes is not a pre-pull list`)
          }
          chunks.push(chunk as Buffer)
        }
      } catch (err) {
        if (err instanceof ListError) throw err
        throw new ListError(unreachable(url, err))
      }
      let doc: unknown
      try {
        doc = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      } catch {
        throw new ListError(`${url}: the answer is not JSON`)
      }
      const images = (doc as { images?: unknown } | null)?.images
      if (!Array.isArray(images) || !images.every((i): i is string => typeof i === 'string')) {
        throw new ListError(`${url}: the answer is not {"images": [...]} with strings`)
      }
      return images
    },
    close: () => agent.close(),
  }
}
