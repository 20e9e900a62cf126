import { readFile } from 'node:fs/promises'
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors'

/** An invalid configuration: one line naming the key and what is wrong. */
export class ConfigError extends Error {
  constructor(readonly key: string, problem: string) {
    super(`config: ${key}: ${problem}`)
    this.name = 'ConfigError'
  }
}

/** The text of a file a setting names; one that cannot be read is a ConfigError naming the setting and the file. */
export async function readNamedFile(key: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(key, `${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
}

/**
 * Thrown by a schema's decode step: `key` is relative to the value being
 * decoded ('' for the value itself), because a decode does not know where in
 * the document its value sits; the error's path does.
 */
export class Invalid extends Error {
  constructor(readonly key: string, readonly problem: string) {
    super(problem)
    this.name = 'Invalid'
  }
}

/** What a schema in this folder may carry so that its failures read well. */
export interface Messages {
  /** Said of any failure of the value itself (wrong type, pattern, bounds). */
  readonly problem?: string
  /** For a mapping: said of a key it does not accept, instead of "is not a known key". */
  readonly keyProblem?: string
  /** Appends `(got …)`; left off where the value may be a secret. */
  readonly showValue?: boolean
  /** For parsed scalars: the whole problem with a value, undefined when it is fine. */
  readonly explain?: (value: unknown) => string | undefined
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null

/** A value as a message may quote it: short, and never more than a scalar. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  return isRecord(value) ? 'a mapping' : typeof value
}

/** `/upstreams/docker.io/repositories/0` → `upstreams.docker.io.repositories[0]`, reading `doc` to tell lists from mappings. */
export function dottedKey(pointer: string, doc: unknown): string {
  if (pointer === '') return '(root)'
  let key = ''
  let at = doc
  for (const raw of pointer.slice(1).split('/')) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    // Quoted when it could break the one line or hide in it: an unknown key may be anything.
    const shownSegment = segment === '' || /[\s"\\\p{C}]/u.test(segment) ? JSON.stringify(segment) : segment
    key += Array.isArray(at) ? `[${segment}]` : key === '' ? shownSegment : `.${shownSegment}`
    at = isRecord(at) && Object.hasOwn(at, segment) ? at[segment] : undefined
  }
  return key
}

/** `base` and a key relative to it. */
export function joinKey(base: string, relative: string): string {
  if (relative === '') return base
  return base === '(root)' ? relative : `${base}.${relative}`
}

function bounds(s: { minimum?: number; maximum?: number }): string {
  if (s.minimum !== undefined && s.maximum !== undefined) return `must be an integer between ${s.minimum} and ${s.maximum}`
  if (s.minimum !== undefined) return `must be an integer of at least ${s.minimum}`
  return 'must be an integer'
}

function problemOf(error: ValueError): string {
  const schema = error.schema as Messages & { minimum?: number; maximum?: number; minLength?: number }
  switch (error.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return 'is required'
    case ValueErrorType.ObjectAdditionalProperties:
      return schema.keyProblem ?? 'is not a known key'
    case ValueErrorType.Kind:
      return schema.explain?.(error.value) ?? error.message
    default:
  }
  const got = schema.showValue === true ? ` (got ${shown(error.value)})` : ''
  if (schema.problem !== undefined) return schema.problem + got
  switch (error.type) {
    case ValueErrorType.Object:
      return 'must be a mapping'
    case ValueErrorType.ObjectMinProperties:
      return 'must not be empty'
    case ValueErrorType.Boolean:
      return 'must be true or false'
    case ValueErrorType.String:
    case ValueErrorType.StringMinLength:
      return schema.minLength === 1 ? 'must be a non-empty string' : 'must be a string'
    case ValueErrorType.Integer:
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.Number:
      return bounds(schema) + got
    case ValueErrorType.Array:
    case ValueErrorType.ArrayMinItems:
      return 'must be a non-empty list'
    default:
      return error.message + got
  }
}

/** The one-line ConfigError for a schema failure found in `doc`. */
export function configErrorOf(error: ValueError, doc: unknown): ConfigError {
  return new ConfigError(dottedKey(error.path, doc), problemOf(error))
}
