// Field selectors as the API server applies them to lists and watches:
// `a=b`, `a==b`, `a!=b`, joined by commas, on the fields a kind declares
// selectable (metadata.name and metadata.namespace for every kind). A field
// it does not declare is an error, as the real server answers 400 for it.
import type { KubeObject } from './kube-api.js'

export type FieldReader = (obj: KubeObject) => unknown

export interface FieldSelector {
  matches(obj: KubeObject): boolean
}

const at = (o: unknown, ...path: string[]): unknown => path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o)

/** A core/v1 Event's selectable fields (pkg/registry/core/event/strategy.go). */
export const EVENT_FIELDS: Readonly<Record<string, FieldReader>> = {
  ...Object.fromEntries(['kind', 'namespace', 'name', 'uid', 'apiVersion', 'resourceVersion', 'fieldPath'].map((k) => [`involvedObject.${k}`, (o: KubeObject) => at(o, 'involvedObject', k)])),
  reason: (o) => at(o, 'reason'),
  type: (o) => at(o, 'type'),
  reportingComponent: (o) => at(o, 'reportingComponent'),
  // source.component, or the reporting controller when the event has none
  source: (o) => at(o, 'source', 'component') ?? at(o, 'reportingComponent'),
}

const COMMON: Readonly<Record<string, FieldReader>> = {
  'metadata.name': (o) => o.metadata.name,
  'metadata.namespace': (o) => o.metadata.namespace,
}

/** Throws with the API server's message for a term it cannot read or a field it does not select on. */
export function parseFieldSelector(selector: string | undefined, fields: Readonly<Record<string, FieldReader>> = {}): FieldSelector {
  const known = { ...COMMON, ...fields }
  const terms = selector === undefined || selector.trim() === '' ? [] : selector.split(',')
  const requirements = terms.map((term) => {
    const m = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(term)
    if (m === null) throw new Error(`invalid selector: '${selector ?? ''}'; can't understand '${term}'`)
    const [, field = '', op, value = ''] = m
    const read = known[field]
    if (read === undefined) throw new Error(`field label not supported: ${field}`)
    return { read, equals: op !== '!=', value }
  })
  return {
    matches: (obj) => requirements.every((r) => {
      const v = r.read(obj)
      return ((v === undefined || v === null ? '' : String(v)) === r.value) === r.equals
    }),
  }
}
