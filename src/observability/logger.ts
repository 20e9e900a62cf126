import { pino, type Logger } from 'pino'

/** JSON logs to stdout. Anything that could carry a credential is redacted by path. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'stevedore' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['password', '*.password', 'headers.authorization', '*.headers.authorization', 'authorization', 'token'],
      censor: '[redacted]',
    },
  })
}
