import type { Logger } from 'pino'
import type { StorageConfig } from '../config/schema.js'
import type { BlobStore } from './blob-store.js'
import { FilesystemBlobStore } from './filesystem.js'

/** The store the configuration names, not yet initialised. */
export async function createBlobStore(config: StorageConfig, log: Logger): Promise<BlobStore> {
  const backend = config.backend
  if (backend.kind === 'filesystem') return new FilesystemBlobStore(backend.root)
  // Loaded only when configured: the AWS SDK is heavy.
  const { createS3BlobStore } = await import('./s3-store.js')
  return createS3BlobStore(backend, log, { staleUploadMs: backend.staleUploadAgeMs })
}
