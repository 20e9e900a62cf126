import { randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import { newHash, parseDigest, type DigestAlgorithm } from '../oci/digest.js'
import { BlobNotFoundError, DigestMismatchError, LAYOUT_VERSION, type BlobInfo, type BlobStore, type BlobWriter, type ByteRange } from './blob-store.js'
import { writeFully } from './write-fully.js'

const MARKER = 'stevedore-layout.json'
// Measured: 1 MiB reads serve cached blobs about twice as fast as Node's 64 KiB default.
const READ_CHUNK = 1024 * 1024
const DOCUMENT_KEY = /^[A-Za-z0-9._:@+-]+(?:\/[A-Za-z0-9._:@+-]+)*$/

export class LayoutError extends Error {
  override name = 'LayoutError'
}

function checkKey(key: string): string {
  if (!DOCUMENT_KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
    throw new Error(`invalid document key ${JSON.stringify(key)}`)
  }
  return key
}

const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException | null)?.code === 'ENOENT'

/** Blobs and documents under one local folder; writes land in tmp/ and are renamed into place. */
export class FilesystemBlobStore implements BlobStore {
  readonly kind = 'filesystem'
  readonly root: string
  private readonly tmpDir: string

  constructor(root: string) {
    this.root = resolve(root)
    this.tmpDir = join(this.root, 'tmp')
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true })
    const markerPath = join(this.root, MARKER)
    let marker: string | undefined
    try {
      marker = await readFile(markerPath, 'utf8')
    } catch (err) {
      if (!isNotFound(err)) throw err
    }
    if (marker !== undefined) {
      let version: unknown
      try {
        version = (JSON.parse(marker) as { version?: unknown }).version
      } catch {
        throw new LayoutError(`${markerPath} is not valid JSON: refusing to use this cache folder`)
      }
      if (version !== LAYOUT_VERSION) {
        throw new LayoutError(`${markerPath} says layout version ${String(version)}; this Stevedore reads version ${LAYOUT_VERSION} only`)
      }
    } else {
      await writeFile(markerPath, `${JSON.stringify({ version: LAYOUT_VERSION })}\n`)
    }
    // Whatever is in tmp/ was being written when a previous process died.
    await rm(this.tmpDir, { recursive: true, force: true })
    await mkdir(this.tmpDir, { recursive: true })
    await mkdir(join(this.root, 'blobs'), { recursive: true })
    await mkdir(join(this.root, 'docs'), { recursive: true })
  }

  private blobPath(digest: string): string {
    const d = parseDigest(digest)
    if (d === undefined) throw new Error(`invalid digest ${JSON.stringify(digest)}`)
    return join(this.root, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex)
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    try {
      const s = await stat(this.blobPath(digest))
      return { digest, size: s.size }
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async open(digest: string): Promise<{ handle: FileHandle; size: number } | undefined> {
    let handle: FileHandle
    try {
      handle = await open(this.blobPath(digest), 'r')
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
    try {
      return { handle, size: (await handle.stat()).size }
    } catch (err) {
      await handle.close()
      throw err
    }
  }

  async read(digest: string, range?: ByteRange): Promise<Readable> {
    let handle: FileHandle
    try {
      handle = await open(this.blobPath(digest), 'r')
    } catch (err) {
      if (isNotFound(err)) throw new BlobNotFoundError(digest)
      throw err
    }
    // The open handle keeps the bytes readable even if eviction unlinks the file meanwhile.
    return createReadStream('', {
      fd: handle,
      highWaterMark: READ_CHUNK,
      ...(range !== undefined ? { start: range.start, end: range.end } : {}),
    })
  }

  async createWriter(algorithm: DigestAlgorithm = 'sha256'): Promise<BlobWriter> {
    const path = join(this.tmpDir, randomUUID())
    const handle = await open(path, 'wx')
    return new FilesystemBlobWriter(path, handle, algorithm, (digest) => this.blobPath(digest))
  }

  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.blobPath(digest))
      return true
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    const blobs = join(this.root, 'blobs')
    for (const algorithm of await readdirOrEmpty(blobs)) {
      for (const prefix of await readdirOrEmpty(join(blobs, algorithm))) {
        for (const hex of await readdirOrEmpty(join(blobs, algorithm, prefix))) {
          const digest = `${algorithm}:${hex}`
          if (parseDigest(digest) === undefined) continue
          const info = await this.stat(digest)
          if (info !== undefined) yield info
        }
      }
    }
  }

  private documentPath(key: string): string {
    return join(this.root, 'docs', checkKey(key))
  }

  async getDocument(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.documentPath(key))
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
      throw err
    }
  }

  async putDocument(key: string, bytes: Uint8Array): Promise<void> {
    const path = this.documentPath(key)
    const tmp = join(this.tmpDir, randomUUID())
    try {
      await writeFile(tmp, bytes)
      await mkdir(dirname(path), { recursive: true })
      await rename(tmp, path)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
  }

  async deleteDocument(key: string): Promise<void> {
    await rm(this.documentPath(key), { force: true })
  }

  async *listDocuments(prefix: string): AsyncIterable<string> {
    const base = join(this.root, 'docs')
    const start = prefix.replace(/\/+$/, '')
    const walk = async function* (rel: string): AsyncIterable<string> {
      let entries
      try {
        entries = await readdir(join(base, rel), { withFileTypes: true })
      } catch (err) {
        if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return
        throw err
      }
      for (const e of entries) {
        const child = rel === '' ? e.name : `${rel}/${e.name}`
        if (e.isDirectory()) yield* walk(child)
        else yield child
      }
    }
    yield* walk(start === '' ? '' : checkKey(start))
  }

  async writable(): Promise<boolean> {
    const probe = join(this.tmpDir, `.probe-${randomUUID()}`)
    try {
      await writeFile(probe, 'ok')
      await unlink(probe)
      return true
    } catch {
      return false
    }
  }
}

async function readdirOrEmpty(path: string): Promise<string[]> {
  try {
    return await readdir(path)
  } catch (err) {
    if (isNotFound(err)) return []
    throw err
  }
}

class FilesystemBlobWriter implements BlobWriter {
  written = 0
  private readonly hash
  private done = false

  constructor(
    readonly localPath: string,
    private readonly handle: FileHandle,
    private readonly algorithm: DigestAlgorithm,
    private readonly finalPath: (digest: string) => string,
  ) {
    this.hash = newHash(algorithm)
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.writev([chunk])
  }

  async writev(chunks: readonly Uint8Array[]): Promise<void> {
    if (this.done) throw new Error('write after commit or cancel')
    for (const chunk of chunks) this.hash.update(chunk)
    this.written += await writeFully(this.handle, chunks, this.written)
  }

  async commit(digest: string, size: number, onVerified?: () => void): Promise<void> {
    if (this.done) throw new Error('commit after commit or cancel')
    this.done = true
    try {
      const actual = `${this.algorithm}:${this.hash.digest('hex')}`
      if (actual !== digest || this.written !== size) throw new DigestMismatchError(digest, actual, size, this.written)
      onVerified?.()
      // A rename of unsynced data can surface as a zero-filled "good" blob after a power loss.
      await this.handle.datasync()
      await this.handle.close()
      const dest = this.finalPath(digest)
      await mkdir(dirname(dest), { recursive: true })
      await rename(this.localPath, dest)
    } catch (err) {
      await this.discard()
      throw err
    }
  }

  async cancel(): Promise<void> {
    if (this.done) return
    this.done = true
    await this.discard()
  }

  private async discard(): Promise<void> {
    await this.handle.close().catch(() => undefined)
    await rm(this.localPath, { force: true })
  }
}
