// Build test images on disk (random-byte layers, real gzip'ed tars, real
// diff_ids) and push them over the registry HTTP API, so tests control every
// byte of every manifest type.
//
// Files are written in OCI-layout style under `dir/blobs/sha256/<hex>` (so a
// dir can also be used with `writeOciLayout` + skopeo `oci:dir`).
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, readFileSync } from 'node:fs'
import { mkdir, rename, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { request, type Dispatcher } from 'undici'
import { agentFor, sha256 } from './tools.js'

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const

export type ImageFormat = 'oci' | 'docker'

export interface Platform {
  os: string
  architecture: string
  variant?: string
}

export interface BlobFile {
  digest: string
  size: number
  path: string
}

export interface BuiltImage {
  manifest: Buffer
  mediaType: string
  digest: string
  config: BlobFile
  layers: BlobFile[]
  /** sha256 of each uncompressed layer tar (config rootfs.diff_ids) */
  diffIds: string[]
  platform: Platform
  format: ImageFormat
}

export interface BuiltIndex {
  manifest: Buffer
  mediaType: string
  digest: string
  size: number
}

export interface BuildImageOptions {
  /** approximate compressed size of each layer, bytes */
  layers: number[]
  format?: ImageFormat
  /** default: linux / GOARCH of this host */
  platform?: Platform
  /** zlib level for the layers: 0 (default, stored blocks, fastest) or 1-9 */
  gzipLevel?: number
}

/** process.arch → GOARCH */
export function goArch(arch: string = process.arch): string {
  switch (arch) {
    case 'x64':
      return 'amd64'
    case 'ia32':
      return '386'
    case 'arm64':
      return 'arm64'
    case 'arm':
      return 'arm'
    case 'ppc64':
      return 'ppc64le'
    default:
      return arch
  }
}

export function hostPlatform(): Platform {
  return { os: 'linux', architecture: goArch() }
}

// ------------------------------------------------------------------ random bytes

/** Fast pseudo-random stream (AES-CTR keystream), `size` bytes in 1 MiB chunks. */
function* randomChunks(size: number): Generator<Buffer> {
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16))
  const zeros = Buffer.alloc(1 << 20)
  let left = size
  while (left > 0) {
    const n = Math.min(left, zeros.length)
    yield cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n))
    left -= n
  }
}

class HashCount extends Transform {
  readonly hash = createHash('sha256')
  bytes = 0
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    cb(null, chunk)
  }
}

async function blobsDir(dir: string): Promise<string> {
  const d = join(dir, 'blobs', 'sha256')
  await mkdir(d, { recursive: true })
  return d
}

/** Move a finished temp file to blobs/sha256/<hex>. */
async function settle(dir: string, tmp: string, digest: string): Promise<string> {
  const final = join(await blobsDir(dir), digest.slice('sha256:'.length))
  await rename(tmp, final)
  return final
}

let tmpSeq = 0
const tmpName = (dir: string): string => join(dir, `.tmp-${process.pid}-${++tmpSeq}-${randomBytes(4).toString('hex')}`)

async function writeBytes(dir: string, data: Buffer): Promise<BlobFile> {
  const digest = sha256(data)
  const path = join(await blobsDir(dir), digest.slice('sha256:'.length))
  await writeFile(path, data)
  return { digest, size: data.length, path }
}

/** A plain random blob of exactly `size` bytes at `path`; returns its digest. */
export async function randomBytesFile(path: string, size: number): Promise<string> {
  const h = new HashCount()
  await pipeline(Readable.from(randomChunks(size)), h, createWriteStream(path, { highWaterMark: 1 << 20 }))
  return `sha256:${h.hash.digest('hex')}`
}

// ------------------------------------------------------------------ tar

function octal(n: number, width: number): string {
  // width includes the trailing NUL
  return n.toString(8).padStart(width - 1, '0') + '\0'
}

/** 512-byte ustar header for a regular file. */
export function tarHeader(name: string, size: number, mode = 0o755, mtime = Math.floor(Date.now() / 1000)): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error('tar name too long')
  const h = Buffer.alloc(512)
  h.write(name, 0, 100, 'utf8')
  h.write(octal(mode, 8), 100, 8, 'ascii')
  h.write(octal(0, 8), 108, 8, 'ascii') // uid
  h.write(octal(0, 8), 116, 8, 'ascii') // gid
  h.write(octal(size, 12), 124, 12, 'ascii')
  h.write(octal(mtime, 12), 136, 12, 'ascii')
  h.write('        ', 148, 8, 'ascii') // checksum placeholder
  h.write('0', 156, 1, 'ascii') // regular file
  h.write('ustar\0', 257, 6, 'ascii')
  h.write('00', 263, 2, 'ascii')
  h.write('root', 265, 32, 'ascii')
  h.write('root', 297, 32, 'ascii')
  h.write(octal(0, 8), 329, 8, 'ascii') // devmajor
  h.write(octal(0, 8), 337, 8, 'ascii') // devminor
  let sum = 0
  for (const b of h) sum += b
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return h
}

function* tarOneFile(name: string, size: number): Generator<Buffer> {
  yield tarHeader(name, size)
  yield* randomChunks(size)
  const pad = (512 - (size % 512)) % 512
  yield Buffer.alloc(pad + 1024) // padding + end-of-archive (two zero blocks)
}

/**
 * Write a gzip'ed tar holding one random file; ~`approxSize` bytes
 * compressed. gzipLevel 0 (default) writes stored deflate blocks: a valid
 * gzip like any other to every reader, and 16x faster than level 1 on random
 * data (~0.3 s vs 4.3 s per 200 MB here), which compresses nothing anyway.
 */
export async function writeLayer(dir: string, approxSize: number, fileName = 'x', gzipLevel = 0): Promise<BlobFile & { diffId: string }> {
  // stored blocks cost 5 bytes per 64 KiB; level 1 on random data ~0.03%
  const ratio = gzipLevel === 0 ? 1 + 5 / 65535 : 1.0003
  const content = Math.max(0, Math.floor((approxSize - 1536 - 32) / ratio))
  const tmp = tmpName(dir)
  const raw = new HashCount()
  const gz = new HashCount()
  await pipeline(
    Readable.from(tarOneFile(fileName, content)),
    raw,
    createGzip({ level: gzipLevel, chunkSize: 1 << 20 }),
    gz,
    createWriteStream(tmp, { highWaterMark: 1 << 20 }),
  )
  const digest = `sha256:${gz.hash.digest('hex')}`
  const path = await settle(dir, tmp, digest)
  return { digest, size: gz.bytes, path, diffId: `sha256:${raw.hash.digest('hex')}` }
}

// ------------------------------------------------------------------ images

/** Build an image (layers, config, manifest) in `dir`. */
export async function buildImage(dir: string, opts: BuildImageOptions): Promise<BuiltImage> {
  await blobsDir(dir)
  const format = opts.format ?? 'oci'
  const platform = opts.platform ?? hostPlatform()
  const layers: Array<BlobFile & { diffId: string }> = []
  for (const [i, size] of opts.layers.entries()) {
    layers.push(await writeLayer(dir, size, i === 0 ? 'x' : `f${i}`, opts.gzipLevel ?? 0))
  }
  const created = new Date().toISOString()
  const configObj = {
    created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Cmd: ['/x'], Env: ['PATH=/'], Labels: { 'stevedore.test': randomBytes(8).toString('hex') } },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created, created_by: `stevedore test layer ${i}` })),
  }
  const config = await writeBytes(dir, Buffer.from(JSON.stringify(configObj)))
  const oci = format === 'oci'
  const manifestObj = {
    schemaVersion: 2,
    mediaType: oci ? MT.ociManifest : MT.dockerManifest,
    config: { mediaType: oci ? MT.ociConfig : MT.dockerConfig, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: oci ? MT.ociLayerGzip : MT.dockerLayerGzip, digest: l.digest, size: l.size })),
  }
  const manifest = Buffer.from(JSON.stringify(manifestObj, null, 2))
  const mf = await writeBytes(dir, manifest)
  return {
    manifest,
    mediaType: manifestObj.mediaType,
    digest: mf.digest,
    config,
    layers: layers.map(({ digest, size, path }) => ({ digest, size, path })),
    diffIds: layers.map((l) => l.diffId),
    platform,
    format,
  }
}

/** OCI index or Docker manifest list over `images` (platforms default to each image's own). */
export function buildIndex(images: BuiltImage[], format: ImageFormat, platforms?: Array<Platform | undefined>): BuiltIndex {
  const oci = format === 'oci'
  const obj = {
    schemaVersion: 2,
    mediaType: oci ? MT.ociIndex : MT.dockerList,
    manifests: images.map((img, i) => ({
      mediaType: img.mediaType,
      digest: img.digest,
      size: img.manifest.length,
      platform: platforms?.[i] ?? img.platform,
    })),
  }
  const manifest = Buffer.from(JSON.stringify(obj, null, 2))
  return { manifest, mediaType: obj.mediaType, digest: sha256(manifest), size: manifest.length }
}

/** Write `oci-layout` and `index.json` so `dir` is usable as skopeo `oci:dir:tag`. */
export async function writeOciLayout(dir: string, refs: Array<{ tag: string; digest: string; mediaType: string; size: number }>): Promise<void> {
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: refs.map((r) => ({
      mediaType: r.mediaType,
      digest: r.digest,
      size: r.size,
      annotations: { 'org.opencontainers.image.ref.name': r.tag },
    })),
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify(index))
}

// ------------------------------------------------------------------ registry client

export interface RegistryTarget {
  url: string
  username?: string
  password?: string
  /** https: PEM file of the CA (or self-signed cert) to trust */
  certPath?: string
}

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

/** Parse one WWW-Authenticate challenge: `Bearer realm="...",service="...",scope="..."`. */
export function parseChallenge(header: string): Challenge {
  const sp = header.indexOf(' ')
  const scheme = (sp < 0 ? header : header.slice(0, sp)).trim().toLowerCase()
  const params: Record<string, string> = {}
  const re = /([A-Za-z0-9_-]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g
  const rest = sp < 0 ? '' : header.slice(sp + 1)
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    const key = m[1]
    if (key) params[key.toLowerCase()] = (m[2] ?? m[3] ?? '').replace(/\\(.)/g, '$1')
  }
  return { scheme, params }
}

/** user agent of the harness's own requests (pushes), to tell them apart in access logs */
export const HARNESS_USER_AGENT = 'stevedore-test-harness'

export interface ClientResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

type BodyFactory = () => Readable | Buffer | string

/**
 * Tiny registry client that answers 401s: Basic with the registry's
 * credentials, or the Bearer token flow (GET realm?service&scope, Basic
 * credentials to the realm). Tokens are cached per scope.
 */
export class RegistryClient {
  readonly target: RegistryTarget
  #scheme: 'none' | 'basic' | 'bearer' = 'none'
  #tokens = new Map<string, string>()
  #challenge: Challenge | undefined
  /** token requests this client made */
  tokenFetches = 0

  readonly #dispatcher: Dispatcher | undefined

  constructor(target: RegistryTarget) {
    this.target = target
    this.#dispatcher = target.certPath === undefined ? undefined : agentFor(readFileSync(target.certPath, 'utf8'))
  }

  #basic(): string | undefined {
    if (this.target.username === undefined) return undefined
    return `Basic ${Buffer.from(`${this.target.username}:${this.target.password ?? ''}`).toString('base64')}`
  }

  /** fetch a token for `scope`, cached under `key` (the caller's scope) */
  async #token(scope: string, key: string): Promise<string> {
    const ch = this.#challenge
    const realm = ch?.params.realm
    if (!ch || !realm) throw new Error('bearer challenge without realm')
    const u = new URL(realm)
    if (ch.params.service) u.searchParams.set('service', ch.params.service)
    u.searchParams.set('scope', scope)
    const headers: Record<string, string> = { 'user-agent': HARNESS_USER_AGENT }
    const basic = this.#basic()
    if (basic) headers.authorization = basic
    this.tokenFetches++
    const res = await request(u, { method: 'GET', headers, reset: true, ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}) })
    const text = await res.body.text()
    if (res.statusCode !== 200) throw new Error(`token request ${u.href} → ${res.statusCode}: ${text}`)
    const json = JSON.parse(text) as { token?: string; access_token?: string }
    const tok = json.token ?? json.access_token
    if (!tok) throw new Error(`token response without token: ${text}`)
    this.#tokens.set(key, tok)
    return tok
  }

  #authHeader(scope: string): string | undefined {
    if (this.#scheme === 'basic') return this.#basic()
    if (this.#scheme === 'bearer') {
      const tok = this.#tokens.get(scope)
      return tok ? `Bearer ${tok}` : undefined
    }
    return undefined
  }

  /**
   * Send a request (path relative to the registry url, or absolute), with
   * auth for `scope` (e.g. `repository:foo:pull,push`). `body` is a factory
   * so the request can be replayed after a 401.
   */
  async request(method: string, pathOrUrl: string, opts: { scope: string; headers?: Record<string, string>; body?: BodyFactory } = { scope: '' }): Promise<ClientResponse> {
    const url = new URL(pathOrUrl, this.target.url)
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': HARNESS_USER_AGENT, ...(opts.headers ?? {}) }
      const auth = this.#authHeader(opts.scope)
      if (auth) headers.authorization = auth
      const reqOpts: { method: Dispatcher.HttpMethod; headers: Record<string, string>; reset: boolean; body?: Readable | Buffer | string; dispatcher?: Dispatcher } = {
        method: method as Dispatcher.HttpMethod,
        headers,
        reset: true,
      }
      if (this.#dispatcher) reqOpts.dispatcher = this.#dispatcher
      if (opts.body) reqOpts.body = opts.body()
      const res = await request(url, reqOpts)
      const body = Buffer.from(await res.body.arrayBuffer())
      if (res.statusCode === 401 && attempt < 2) {
        const wa = res.headers['www-authenticate']
        const h = Array.isArray(wa) ? wa[0] : wa
        if (!h) throw new Error(`${method} ${url.href}: 401 without WWW-Authenticate`)
        const ch = parseChallenge(h)
        if (ch.scheme === 'basic') {
          if (this.target.username === undefined) throw new Error(`${method} ${url.href}: 401 Basic and no credentials`)
          if (this.#scheme === 'basic') throw new Error(`${method} ${url.href}: credentials rejected: ${body.toString()}`)
          this.#scheme = 'basic'
        } else if (ch.scheme === 'bearer') {
          this.#scheme = 'bearer'
          this.#challenge = ch
          await this.#token(opts.scope || ch.params.scope || '', opts.scope)
        } else {
          throw new Error(`${method} ${url.href}: unknown auth scheme ${h}`)
        }
        continue
      }
      return { status: res.statusCode, headers: res.headers, body }
    }
  }
}

const clients = new WeakMap<RegistryTarget, RegistryClient>()

/** One cached client per registry object (keeps tokens between calls). */
export function clientFor(reg: RegistryTarget): RegistryClient {
  let c = clients.get(reg)
  if (!c) {
    c = new RegistryClient(reg)
    clients.set(reg, c)
  }
  return c
}

const pushScope = (repo: string): string => `repository:${repo}:pull,push`

function expect(res: ClientResponse, ok: number[], what: string): void {
  if (!ok.includes(res.status)) {
    throw new Error(`${what}: HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 2000)}`)
  }
}

/** Push a blob file (skips it if the registry has it): POST upload, then one monolithic PUT ?digest=. */
export async function pushBlob(reg: RegistryTarget, repo: string, path: string, digest: string): Promise<void> {
  const c = clientFor(reg)
  const scope = pushScope(repo)
  const head = await c.request('HEAD', `/v2/${repo}/blobs/${digest}`, { scope })
  if (head.status === 200) return
  const size = (await stat(path)).size
  const post = await c.request('POST', `/v2/${repo}/blobs/uploads/`, { scope, headers: { 'content-length': '0' } })
  expect(post, [202], `POST /v2/${repo}/blobs/uploads/`)
  const loc = post.headers.location
  const location = Array.isArray(loc) ? loc[0] : loc
  if (!location) throw new Error('upload POST without Location')
  const u = new URL(location, reg.url)
  u.searchParams.set('digest', digest)
  const put = await c.request('PUT', u.href, {
    scope,
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: () => createReadStream(path, { highWaterMark: 1 << 20 }),
  })
  expect(put, [201], `PUT blob ${digest} to ${repo}`)
}

/** PUT a manifest (or index) under `ref` (tag or digest). */
export async function pushManifest(reg: RegistryTarget, repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
  const res = await clientFor(reg).request('PUT', `/v2/${repo}/manifests/${ref}`, {
    scope: pushScope(repo),
    headers: { 'content-type': mediaType },
    body: () => bytes,
  })
  expect(res, [201], `PUT manifest ${repo}:${ref}`)
  const dcd = res.headers['docker-content-digest']
  const want = sha256(bytes)
  if (typeof dcd === 'string' && dcd !== want) throw new Error(`registry says manifest digest ${dcd}, expected ${want}`)
}

/** Push config, layers, then the manifest under `tag` (or by digest if tag is undefined). */
export async function pushImage(reg: RegistryTarget, repo: string, tag: string | undefined, img: BuiltImage): Promise<void> {
  await pushBlob(reg, repo, img.config.path, img.config.digest)
  for (const l of img.layers) await pushBlob(reg, repo, l.path, l.digest)
  await pushManifest(reg, repo, tag ?? img.digest, img.manifest, img.mediaType)
}

/** Push every image by digest, then the index under `tag`. */
export async function pushIndex(reg: RegistryTarget, repo: string, tag: string, index: BuiltIndex, images: BuiltImage[]): Promise<void> {
  for (const img of images) await pushImage(reg, repo, undefined, img)
  await pushManifest(reg, repo, tag, index.manifest, index.mediaType)
}
