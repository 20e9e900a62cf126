import type { Logger } from 'pino'
import type { S3StorageConfig } from '../config/schema.js'
import { ConfigError } from '../config/schema.js'
import type { BlobStore } from './blob-store.js'

/** Placeholder until the S3 backend lands: refuse the configuration clearly. */
export function createS3BlobStore(_config: S3StorageConfig, _log: Logger): BlobStore {
  throw new ConfigError('storage.s3', 'the S3 backend is not available in this build')
}
