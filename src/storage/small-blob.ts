import type { BlobStore } from './blob-store.js'

/** A stored blob's bytes when it is at most maxBytes (an image config); undefined when absent or larger. */
export async function readSmallBlob(store: BlobStore, digest: string, maxBytes: number): Promise<Buffer | undefined> {
  const info = await store.stat(digest)
  if (info === undefined || info.size > maxBytes) return undefined
  const chunks: Buffer[] = []
  for await (const chunk of await store.read(digest)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}
