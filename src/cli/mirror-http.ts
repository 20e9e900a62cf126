// What the commands that ask a running mirror's API share: one connection
// pool, why a call got no answer, a bounded JSON read, and what a refusal of
// the client's credentials means. Each command keeps its own retry rules.
import { Agent, errors as undiciErrors, type Dispatcher } from 'undici'

/** Connections to one mirror: `timeoutMs` to connect, `caPem` trusted for https. */
export function mirrorAgent(timeoutMs: number, caPem?: string): Agent {
  return new Agent({ connect: { timeout: timeoutMs, ...(caPem !== undefined ? { ca: caPem } : {}) } })
}

/** Why nothing was answered, and whether asking again may help (a certificate problem is not cured that way). */
export function unanswered(url: string, err: unknown): { readonly message: string; readonly retry: boolean } {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
  const code = e.code ?? e.cause?.code
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError) return { message: `${url}: no answer in time`, retry: true }
  // Certificate problems name the flag that fixes them.
  if (code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) return { message: `${url}: ${e.cause?.message ?? e.message} (a private CA? give it with --ca FILE)`, retry: false }
  return { message: `${url}: ${code ?? e.cause?.message ?? e.message}`, retry: true }
}

/** The `message` of the spec's `{"errors": [...]}` body, when there is one. */
export function errorMessage(body: unknown): string | undefined {
  const first = (body as { errors?: Array<{ message?: unknown }> } | null)?.errors?.[0]
  return typeof first?.message === 'string' ? first.message : undefined
}

/**
 * The body parsed as JSON: undefined when it is empty or not JSON. Past
 * `maxBytes` the body is destroyed and `tooLarge()` is thrown.
 */
export async function readJsonBody(res: Dispatcher.ResponseData, maxBytes: number, tooLarge: () => Error): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length
    if (size > maxBytes) {
      res.body.destroy()
      throw tooLarge()
    }
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
  } catch {
    return undefined
  }
}

/** What a 401 from the mirror tells the operator: the credentials given are wrong, or some are needed. */
export function credentialsRefused(url: string, withCredentials: boolean): string {
  return withCredentials
    ? `${url}: authentication failed: the mirror refused the credentials of --user / STEVEDORE_AUTH (401)`
    : `${url}: authentication required: the mirror asks for credentials (401); give --user USER:PASS or set STEVEDORE_AUTH`
}
