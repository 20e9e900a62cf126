import { createSecureContext } from 'node:tls'
import type { Logger } from 'pino'
import { ConfigError, readNamedFile } from '../config/errors.js'
import { watchFiles, type FileWatch } from '../lib/file-watch.js'

export interface TlsFiles {
  readonly cert: string
  readonly key: string
}

export interface Certificates {
  readonly cert: string
  readonly key: string
}

/** Reads the listener's certificate and key; throws, naming the file, when either is missing or they do not fit together. */
export async function readCertificates(files: TlsFiles): Promise<Certificates> {
  const pair = { cert: await readNamedFile('tls.cert', files.cert), key: await readNamedFile('tls.key', files.key) }
  try {
    // Fails on a key that is not the certificate's, or PEM that is not PEM.
    createSecureContext(pair)
  } catch (err) {
    throw new ConfigError('tls', `${files.cert} and ${files.key} are not a certificate and its key: ${(err as Error).message}`)
  }
  return pair
}

/**
 * Reloads the certificate and key when their files change (cert-manager
 * renewing them, a Secret's symlink swap) and hands them to `use`. A pair
 * that does not load (the two files caught half-way through an update) is
 * logged and the one in use kept; the next change tries again.
 */
export function reloadCertificates(files: TlsFiles, use: (pair: Certificates) => void, log: Logger, pollMs?: number): FileWatch {
  return watchFiles([files.cert, files.key], () => {
    readCertificates(files)
      .then((pair) => {
        use(pair)
        log.info({ cert: files.cert }, 'tls: certificate reloaded')
      })
      .catch((err: unknown) => log.warn({ err }, 'tls: certificate change not loaded: keeping the one in use'))
  }, pollMs)
}
