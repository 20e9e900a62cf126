// Renders the kustomizations in k8s/ with `kubectl kustomize` (kustomize 5)
// and reads the rendered objects as the cluster would: which pods a selector
// picks, which config file and secret a container sees, what its args expand
// to. No cluster is needed.
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import type { Test } from 'tap'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { validateConfig, type Config } from '../../src/config/schema.js'
import { REPO_ROOT } from './mirror.js'
import { requireTools, run, tempDir } from './tools.js'

export const K8S = join(REPO_ROOT, 'k8s')

export interface K8sObject {
  readonly apiVersion: string
  readonly kind: string
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> }
}

export type Container = IPodSpec['containers'][number]
export type Workload = IDeployment | IDaemonSet

/** What the downward API's status.podIP gives a container here: any pod address will do. */
export const EXAMPLE_POD_IP = '10.244.1.23'

// ------------------------------------------------------------ rendering

/** True when kubectl ships kustomize 5 (components); otherwise skips, or fails under REQUIRE_E2E=1. */
export async function kubectlReady(t: Test): Promise<boolean> {
  if (!requireTools(t, 'kubectl')) return false
  const v = await run('kubectl', ['version', '--client'], { timeoutMs: 30_000 })
  const m = /Kustomize Version: v(\d+)/.exec(v.stdout)
  if (m !== null && Number(m[1]) >= 5) return true
  const why = `kubectl ships no kustomize 5 (${v.stdout.trim() || v.stderr.trim()}); Debian's kubectl is too old for components`
  if (process.env['REQUIRE_E2E'] === '1') t.fail(why)
  else void t.skip(why, () => undefined)
  return false
}

/** The objects `kubectl kustomize dir` renders. Throws with kustomize's stderr when it fails. */
export async function kustomize(dir: string): Promise<K8sObject[]> {
  const r = await run('kubectl', ['kustomize', dir], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`kubectl kustomize ${dir} exited ${r.code}: ${r.stderr}`)
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as K8sObject).filter((o) => o !== null)
}

/** Every folder under dir that holds a kustomization, sorted. */
export async function kustomizations(dir: string): Promise<string[]> {
  const found: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) found.push(...(await kustomizations(p)))
    else if (e.name === 'kustomization.yaml' || e.name === 'kustomization.yml' || e.name === 'Kustomization') found.push(dir)
  }
  return found.sort()
}

/** A throw-away overlay (beside nothing of ours) that takes `base` and adds `components`. */
export async function withComponents(t: Test, base: string, components: string[]): Promise<string> {
  const dir = join(await tempDir(t, 'stevedore-kustomize'), 'overlay')
  await mkdir(dir)
  const rel = (p: string): string => relative(dir, p)
  await writeFile(join(dir, 'kustomization.yaml'), [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel(base)}`,
    'components:',
    ...components.map((c) => `  - ${rel(c)}`),
    '',
  ].join('\n'))
  return dir
}

// ------------------------------------------------------------ lookups

export const id = (o: K8sObject): string => `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`

export function all<T>(objs: K8sObject[], kind: string): T[] {
  return objs.filter((o) => o.kind === kind) as unknown as T[]
}

export function one<T>(objs: K8sObject[], kind: string, name: string): T {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name)
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`)
  return found[0] as unknown as T
}

export const podSpec = (w: Workload): IPodSpec => {
  const spec = w.spec?.template.spec
  if (spec === undefined) throw new Error(`${w.kind ?? ''} ${w.metadata?.name ?? ''} has no pod spec`)
  return spec
}

export const allContainers = (spec: IPodSpec): Container[] => [...(spec.initContainers ?? []), ...spec.containers]

/** A label selector's matchLabels against a pod's labels; an empty or missing selector matches nothing here. */
export const matches = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v)

/** A literal env value of the container (not one from valueFrom). */
export const envOf = (c: Container, name: string): string | undefined => (c.env ?? []).find((e) => e.name === name)?.value

/**
 * The environment the kubelet gives the container, as far as it can be known
 * without a cluster: literal values, and status.podIP from the downward API
 * as EXAMPLE_POD_IP.
 */
export function containerEnv(c: Container): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = EXAMPLE_POD_IP
  }
  return env
}

/** The mount a file in the container lives under (the deepest one, as nested mounts shadow their parents). */
export function mountOf(w: Workload, c: Container, file: string): { mount: NonNullable<Container['volumeMounts']>[number]; volume: NonNullable<IPodSpec['volumes']>[number]; inside: string } | undefined {
  const under = (c.volumeMounts ?? []).filter((m) => file.startsWith(`${m.mountPath.replace(/\/$/, '')}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)
  const mount = under[0]
  if (mount === undefined) return undefined
  const volume = (podSpec(w).volumes ?? []).find((v) => v.name === mount.name)
  if (volume === undefined) return undefined
  return { mount, volume, inside: file.slice(mount.mountPath.replace(/\/$/, '').length + 1) }
}

/** The Secret key a file in the container is, or undefined when no Secret volume holds it. */
export function secretKeyOf(w: Workload, c: Container, file: string): { secretName: string; key: string; readOnly: boolean } | undefined {
  const m = mountOf(w, c, file)
  const secret = m?.volume.secret
  if (m === undefined || secret?.secretName === undefined) return undefined
  // With items, only the listed keys exist, each at its path; without, every key at its own name.
  const key = secret.items === undefined ? m.inside : secret.items.find((i) => i.path === m.inside)?.key
  if (key === undefined) return undefined
  return { secretName: secret.secretName, key, readOnly: m.mount.readOnly === true }
}

/** The config file a workload reads, unvalidated: the ConfigMap entry mounted at the path of its --config. */
export function configTextOf(objs: K8sObject[], w: Workload, c: Container): { text: string; configMap: string } {
  const args = c.args ?? []
  const flag = args.findIndex((a) => a === '--config' || a.startsWith('--config='))
  if (flag < 0) throw new Error(`${c.name}: no --config`)
  const file = args[flag]?.includes('=') ? (args[flag] as string).split('=')[1] as string : (args[flag + 1] as string)
  const dir = file.slice(0, file.lastIndexOf('/'))
  const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === dir)
  if (mount === undefined) throw new Error(`${c.name}: nothing mounted at ${dir}`)
  const volume = (podSpec(w).volumes ?? []).find((v) => v.name === mount.name)
  const cmName = volume?.configMap?.name
  if (cmName === undefined) throw new Error(`${c.name}: ${dir} is not a ConfigMap`)
  const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === cmName && o.metadata.namespace === w.metadata?.namespace) as IConfigMap | undefined
  if (cm === undefined) throw new Error(`${c.name}: ConfigMap ${cmName} is not in namespace ${w.metadata?.namespace ?? ''}`)
  const text = cm.data?.[file.slice(dir.length + 1)]
  if (text === undefined) throw new Error(`${c.name}: ConfigMap ${cmName} has no ${file.slice(dir.length + 1)}`)
  return { text, configMap: cmName }
}

/**
 * The config a workload reads (configTextOf), validated with the container's
 * own environment. A file the config names inside a mounted Secret reads as a
 * placeholder (the Secret is created by hand, never rendered); any other file
 * read is an error.
 */
export function configOf(objs: K8sObject[], w: Workload, c: Container): { text: string; config: Config; configMap: string } {
  const { text, configMap } = configTextOf(objs, w, c)
  const readSecret = (path: string): string => {
    const s = secretKeyOf(w, c, path)
    if (s === undefined) throw new Error(`${c.name}: ${path} is in no mounted Secret`)
    return '0123456789abcdef'.repeat(4) // as long as `openssl rand -hex 32`
  }
  return { text, config: validateConfig(parseYaml(text), { env: containerEnv(c), readSecret }), configMap }
}

/** `$(VAR)` as the kubelet expands it in command and args, from the container's own env. */
export function expandArgs(c: Container): string[] {
  const env = new Map((c.env ?? []).map((e) => [e.name, e.value ?? '']))
  return (c.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env.get(name) ?? whole))
}

/** The value of `--name VALUE` or `--name=VALUE` in args. */
export const flagValue = (args: string[], name: string): string | undefined => {
  const i = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  if (i < 0) return undefined
  return args[i]?.includes('=') ? args[i]?.slice(name.length + 3) : args[i + 1]
}
