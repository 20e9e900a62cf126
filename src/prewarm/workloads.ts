// What pre-warming keeps of a workload: the image references of its pod
// template, as written, and whether it asks nodes to pre-pull them. Pure: the
// objects come from the API (typed list pages or raw watch events, which share
// their field names) and are dropped right after this.

/** The workload kinds watched. */
export type WorkloadKind = 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'Job' | 'CronJob'

export const WORKLOAD_KINDS: readonly WorkloadKind[] = ['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob']

/** The annotation that puts a workload's images on `GET /api/v1/prepull`. */
export const PREPULL_ANNOTATION = 'stevedore.io/prepull'

/** One workload as kept in memory. */
export interface WorkloadImages {
  /** Distinct references of its containers and init containers, in template order. */
  readonly images: readonly string[]
  readonly prepull: boolean
}

/** `namespace/name` of an object, undefined when it has no name. */
export function objectKey(obj: unknown): string | undefined {
  const meta = field(obj, 'metadata')
  const name = field(meta, 'name')
  if (typeof name !== 'string' || name === '') return undefined
  const namespace = field(meta, 'namespace')
  return `${typeof namespace === 'string' ? namespace : ''}/${name}`
}

/** The namespace of an object ('' for cluster-scoped ones). */
export function namespaceOf(obj: unknown): string {
  const namespace = field(field(obj, 'metadata'), 'namespace')
  return typeof namespace === 'string' ? namespace : ''
}

/**
 * The pod spec a workload creates pods from. A CronJob's is one level deeper
 * (spec.jobTemplate.spec.template). Ephemeral containers are never part of a
 * template: they are added to running pods only.
 */
export function podSpecOf(kind: WorkloadKind, obj: unknown): unknown {
  const spec = field(obj, 'spec')
  const template = kind === 'CronJob' ? field(field(field(spec, 'jobTemplate'), 'spec'), 'template') : field(spec, 'template')
  return field(template, 'spec')
}

export function workloadImages(kind: WorkloadKind, obj: unknown): WorkloadImages {
  const pod = podSpecOf(kind, obj)
  const images = new Set<string>()
  for (const list of [field(pod, 'initContainers'), field(pod, 'containers')]) {
    if (!Array.isArray(list)) continue
    for (const c of list) {
      const image = field(c, 'image')
      // The API server requires an image for workload containers; a blank one cannot be prefetched anyway.
      if (typeof image === 'string' && image.trim() !== '') images.add(image.trim())
    }
  }
  const annotations = field(field(obj, 'metadata'), 'annotations')
  return { images: [...images], prepull: field(annotations, PREPULL_ANNOTATION) === 'true' }
}

/** A property of something that may not be an object: what arrives on the wire is checked, not trusted. */
export function field(v: unknown, key: string): unknown {
  return v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined
}
