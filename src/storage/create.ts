import type { Logger } from 'pino'
import type { StorageConfig } from '../config/schema.js'
import type { BlobStore } from './blob-store.js'
import { FilesystemBlobStore } from './filesystem.js'

export interface CreateStoreOptions {
  /** The fill timeout: S3 multipart uploads older than this are crash leftovers, aborted by init. */
  readonly fillTimeoutMs?: number
}

/** The store the configuration names, not yet initialised. */
export async function createBlobStore(config: StorageConfig, log: Logger, options: CreateStoreOptions = {}): Promise<BlobStore> {
  const backend = config.backend
  if (backend.kind === 'filesystem') return new FilesystemBlobStore(backend.root)
  // Loaded only when configured: the AWS SDK is heavy.
  const { createS3BlobStore } = await import('./s3.js')
  return createS3BlobStore(backend, log, options.fillTimeoutMs !== undefined ? { staleUploadMs: options.fillTimeoutMs } : {})
}
