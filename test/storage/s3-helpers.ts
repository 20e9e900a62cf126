// A real S3 endpoint for tests (s3rver on a loopback port, its own temp dir,
// closed at t.teardown) and a small HTTP proxy in front of it that records
// requests and injects faults.
import { readdir } from 'node:fs/promises'
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { pino, type Logger } from 'pino'
import S3rver from 's3rver'
import type { Test } from 'tap'
import type { S3StorageConfig } from '../../src/config/schema.js'
import { S3BlobStore, type S3BlobStoreOptions } from '../../src/storage/s3-store.js'
import { freePort, tempDir } from '../harness/tools.js'

export const S3_KEY = 'S3RVER'

export interface S3Server {
  readonly endpoint: string
  readonly port: number
  readonly bucket: string
  /** s3rver's own folder: objects and unfinished multipart parts live here. */
  readonly directory: string
  /** A store config for this bucket (forcePathStyle, test credentials). */
  config(overrides?: Partial<S3StorageConfig>): S3StorageConfig
  /** Every object key in the bucket (under a key prefix), with sizes. */
  objects(keyPrefix?: string): Promise<Map<string, number>>
  /** Part files of multipart uploads s3rver holds (never completed, never aborted: s3rver cannot abort). */
  pendingParts(): Promise<number>
  /** Stops listening (S3 "unreachable"); start() again on the same port and data. */
  stop(): Promise<void>
  start(): Promise<void>
}

export async function startS3(t: Test, options: { bucket?: string; port?: number } = {}): Promise<S3Server> {
  const bucket = options.bucket ?? 'stevedore-test'
  const directory = await tempDir(t, 'stevedore-s3rver')
  const port = options.port ?? (await freePort())
  const spoolDir = await tempDir(t, 'stevedore-spool')
  let server: S3rver | undefined
  const start = async (): Promise<void> => {
    const s = new S3rver({ port, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: bucket }] })
    await s.run()
    server = s
  }
  const stop = async (): Promise<void> => {
    const s = server
    server = undefined
    await s?.close()
  }
  await start()
  t.teardown(stop)
  const endpoint = `http://127.0.0.1:${port}`
  const lister = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_KEY } })
  t.teardown(() => lister.destroy())
  return {
    endpoint,
    port,
    bucket,
    directory,
    config: (overrides = {}) => ({
      kind: 's3',
      bucket,
      prefix: '',
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      redirect: false,
      accessKeyId: S3_KEY,
      secretAccessKey: S3_KEY,
      spoolDir,
      staleUploadAgeMs: 30 * 60_000,
      ...overrides,
    }),
    objects: async (keyPrefix = '') => {
      const out = new Map<string, number>()
      let token: string | undefined
      for (;;) {
        const page = await lister.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: keyPrefix, ...(token !== undefined ? { ContinuationToken: token } : {}) }))
        for (const o of page.Contents ?? []) if (o.Key !== undefined) out.set(o.Key, o.Size ?? 0)
        if (page.IsTruncated !== true || page.NextContinuationToken === undefined) return out
        token = page.NextContinuationToken
      }
    },
    pendingParts: async () => {
      const uploads = join(directory, bucket, '._S3rver_uploads')
      let n = 0
      for (const id of await readdir(uploads).catch(() => [] as string[])) {
        n += (await readdir(join(uploads, id))).filter((f) => /^\d+$/.test(f)).length
      }
      return n
    },
    stop,
    start,
  }
}

export interface ProxiedRequest {
  readonly method: string
  /** path and query, as sent */
  readonly url: string
  /** what the proxy did: 'pass' or the fault's name */
  readonly action: string
}

/**
 * What to do with a request: `reset` destroys the connection before any
 * answer; `error` answers an S3 XML error; `truncate` forwards the answer
 * but cuts the connection halfway through the body (`clean` ends it with a
 * FIN instead of a reset); `short` drops Content-Length and ends the body
 * cleanly (chunked) after half of it; `respond` answers with the handler.
 */
export type Fault =
  | { kind: 'reset' }
  | { kind: 'error'; status: number; code: string }
  | { kind: 'truncate'; clean?: boolean }
  | { kind: 'short' }
  | { kind: 'respond'; handler: (req: IncomingMessage, res: ServerResponse) => void }

export interface FaultRule {
  readonly match: (method: string, url: string) => boolean
  readonly fault: Fault
  /** How many matching requests get the fault; default every one. */
  times?: number
}

export interface S3Proxy {
  readonly endpoint: string
  readonly requests: ProxiedRequest[]
  readonly rules: FaultRule[]
  count(method: string, urlIncludes: string): number
}

/** An HTTP proxy to an S3 endpoint that records requests and applies the first matching fault rule. */
export async function startS3Proxy(t: Test, target: string): Promise<S3Proxy> {
  const targetUrl = new URL(target)
  const requests: ProxiedRequest[] = []
  const rules: FaultRule[] = []
  const server: Server = createServer((req, res) => {
    const method = req.method ?? 'GET'
    const url = req.url ?? '/'
    const rule = rules.find((r) => (r.times === undefined || r.times > 0) && r.match(method, url))
    if (rule !== undefined && rule.times !== undefined) rule.times--
    const fault = rule?.fault
    requests.push({ method, url, action: fault?.kind ?? 'pass' })
    if (fault?.kind === 'reset') {
      req.socket.destroy()
      return
    }
    if (fault?.kind === 'error') {
      req.resume()
      const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>injected</Message></Error>`
      res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) }).end(body)
      return
    }
    if (fault?.kind === 'respond') {
      fault.handler(req, res)
      return
    }
    const upstream = httpRequest({ host: targetUrl.hostname, port: targetUrl.port, method, path: url, headers: req.headers }, (up) => {
      if (fault?.kind === 'short') {
        const length = Number(up.headers['content-length'] ?? 0)
        const headers = { ...up.headers }
        delete headers['content-length']
        res.writeHead(up.statusCode ?? 502, headers)
        const chunks: Buffer[] = []
        up.on('data', (chunk: Buffer) => chunks.push(chunk))
        up.on('end', () => res.end(Buffer.concat(chunks).subarray(0, Math.floor(length / 2))))
        return
      }
      res.writeHead(up.statusCode ?? 502, up.headers)
      if (fault?.kind !== 'truncate') {
        up.pipe(res)
        return
      }
      const length = Number(up.headers['content-length'] ?? 0)
      let sent = 0
      up.on('data', (chunk: Buffer) => {
        if (sent >= length / 2) return
        const take = chunk.subarray(0, Math.max(0, Math.ceil(length / 2) - sent))
        sent += take.byteLength
        res.write(take)
        if (sent >= length / 2) {
          up.destroy()
          // Let the half body leave before the connection goes.
          setTimeout(() => (fault.clean === true ? res.socket?.end() : res.socket?.destroy()), 50)
        }
      })
    })
    upstream.on('error', () => res.socket?.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const { port } = server.address() as AddressInfo
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    rules,
    count: (method, urlIncludes) => requests.filter((r) => r.method === method && r.url.includes(urlIncludes)).length,
  }
}

/** A pino logger whose JSON lines land in an array. */
export function captureLogger(level = 'debug'): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const log = pino({ level }, {
    write(line: string) {
      lines.push(JSON.parse(line) as Record<string, unknown>)
    },
  })
  return { log, lines }
}

/** The `storage.s3` mapping of a mirror config file for this server. */
export function s3StorageDocument(server: S3Server, overrides: Partial<S3StorageConfig> = {}): Record<string, unknown> {
  const c = server.config(overrides)
  return {
    bucket: c.bucket,
    prefix: c.prefix,
    region: c.region,
    endpoint: c.endpoint,
    forcePathStyle: c.forcePathStyle,
    redirect: c.redirect,
    accessKeyId: c.accessKeyId,
    secretAccessKey: c.secretAccessKey,
    spoolDir: c.spoolDir,
    ...(c.publicEndpoint !== undefined ? { publicEndpoint: c.publicEndpoint } : {}),
  }
}

/**
 * Opens initialised stores with small parts (s3rver takes parts of any size,
 * so multipart paths run on small blobs), quiet, closed at teardown.
 */
export function openS3Store(partSize: number): (t: Test, config: S3StorageConfig, options?: Partial<S3BlobStoreOptions>) => Promise<S3BlobStore> {
  const quiet = pino({ level: 'silent' })
  return async (t, config, options = {}) => {
    const store = new S3BlobStore(config, { log: quiet, partSize, ...options })
    t.teardown(() => store.destroy())
    await store.init()
    return store
  }
}
