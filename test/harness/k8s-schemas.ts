// Checks a rendered Kubernetes object as the API server would: against the
// OpenAPI schemas (kubernetes-models; unknown fields count as errors), and by
// the rules the server enforces that the schemas do not carry.
import { join } from 'node:path'
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import { REPO_ROOT } from './mirror.js'
import { matches, type K8sObject } from './kustomize.js'

type ValidateFn = ((data: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string; keyword: string; params?: unknown }> | null }

const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1)

async function validatorFor(apiVersion: string, kind: string): Promise<ValidateFn> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') as [string, string] : ['core', apiVersion]
  if (group === 'monitoring.coreos.com') {
    const file = join(REPO_ROOT, 'node_modules', '@kubernetes-models', 'prometheus-operator', '_schemas', `ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoring${cap(version)}${kind}.js`)
    return ((await import(file)) as { validate: ValidateFn }).validate
  }
  const name = `IoK8sApi${cap(group.split('.')[0] as string)}${cap(version)}${kind}`
  return ((await import(`kubernetes-models/_schemas/${name}`)) as { validate: ValidateFn }).validate
}

/**
 * Validates against the schema and, since the generated validators let
 * unknown fields through (a typo such as `readOnlyRootFileSystem` would pass),
 * also reports every field the validator never looked at: it runs on a proxy
 * that records which keys the schema asked for. Maps (labels, data, limits)
 * are enumerated by the validator and so count as known.
 */
export async function validateStrictly(obj: K8sObject): Promise<string[]> {
  const validate = await validatorFor(obj.apiVersion, obj.kind)
  const read = new Map<object, Set<PropertyKey>>()
  const enumerated = new Set<object>()
  const proxies = new WeakMap<object, object>()
  const note = (target: object, key: PropertyKey): void => {
    let keys = read.get(target)
    if (keys === undefined) read.set(target, (keys = new Set()))
    keys.add(key)
  }
  const wrap = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v
    const existing = proxies.get(v)
    if (existing !== undefined) return existing
    const p = new Proxy(v, {
      get: (target, key, receiver) => {
        note(target, key)
        return wrap(Reflect.get(target, key, receiver))
      },
      has: (target, key) => {
        note(target, key)
        return Reflect.has(target, key)
      },
      getOwnPropertyDescriptor: (target, key) => {
        note(target, key)
        return Reflect.getOwnPropertyDescriptor(target, key)
      },
      ownKeys: (target) => {
        enumerated.add(target)
        return Reflect.ownKeys(target)
      },
    })
    proxies.set(v, p)
    return p
  }
  if (!validate(wrap(obj))) {
    return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword} ${e.params !== undefined ? JSON.stringify(e.params) : ''}`)
  }
  const unknown: string[] = []
  const walk = (v: unknown, path: string): void => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${path}/${i}`))
    else if (v !== null && typeof v === 'object') {
      const keys = read.get(v) ?? new Set<PropertyKey>()
      for (const [k, x] of Object.entries(v)) {
        if (!enumerated.has(v) && !keys.has(k)) unknown.push(`${path}/${k}: unknown field`)
        else walk(x, `${path}/${k}`)
      }
    }
  }
  walk(obj, '')
  return unknown
}

/**
 * Rules the API server enforces that the OpenAPI schemas do not carry, for
 * the workloads here: unique container, volume and port names; mounts of
 * existing volumes; a selector that matches the pod template; ConfigMaps and
 * ServiceAccounts that exist in the namespace.
 */
export function apiServerRules(o: K8sObject, objs: K8sObject[]): string[] {
  if (o.kind !== 'Deployment' && o.kind !== 'DaemonSet') return []
  const w = o as unknown as IDeployment | IDaemonSet
  const problems: string[] = []
  const spec = w.spec?.template.spec
  if (spec === undefined) return ['no pod spec']
  const dupes = (names: string[]): string[] => names.filter((n, i) => names.indexOf(n) !== i)
  const containers = [...(spec.initContainers ?? []), ...spec.containers]
  for (const n of dupes(containers.map((c) => c.name))) problems.push(`container name ${n} used twice (init containers included)`)
  const volumes = (spec.volumes ?? []).map((v) => v.name)
  for (const n of dupes(volumes)) problems.push(`volume ${n} defined twice`)
  for (const c of containers) {
    for (const m of c.volumeMounts ?? []) if (!volumes.includes(m.name)) problems.push(`${c.name} mounts volume ${m.name}, which is not defined`)
    const ports = (c.ports ?? []).map((p) => p.name ?? '')
    for (const p of ports) if (p.length > 15) problems.push(`${c.name}: port name ${p} is longer than 15 characters`)
    for (const n of dupes(ports.filter(Boolean))) problems.push(`${c.name}: port name ${n} used twice`)
    for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
      const port = probe?.httpGet?.port
      if (typeof port === 'string' && !ports.includes(port)) problems.push(`${c.name}: a probe uses port ${port}, which the container does not name`)
    }
  }
  if (!matches(w.spec?.selector.matchLabels, w.spec?.template.metadata?.labels)) problems.push('the selector does not match the pod template labels')
  const ns = o.metadata.namespace
  for (const v of spec.volumes ?? []) {
    const cm = v.configMap?.name
    if (cm !== undefined && !objs.some((x) => x.kind === 'ConfigMap' && x.metadata.name === cm && x.metadata.namespace === ns)) problems.push(`ConfigMap ${cm} is not in namespace ${ns ?? ''}`)
    const claim = v.persistentVolumeClaim?.claimName
    if (claim !== undefined && !objs.some((x) => x.kind === 'PersistentVolumeClaim' && x.metadata.name === claim && x.metadata.namespace === ns)) problems.push(`PVC ${claim} is not in namespace ${ns ?? ''}`)
  }
  const sa = spec.serviceAccountName
  if (sa !== undefined && !objs.some((x) => x.kind === 'ServiceAccount' && x.metadata.name === sa && x.metadata.namespace === ns)) problems.push(`ServiceAccount ${sa} is not in namespace ${ns ?? ''}`)
  return problems
}
