// The node DaemonSet, run here: its containers' arguments are taken from the
// rendered k8s/base, run with the image's ENTRYPOINT (from docker/Dockerfile)
// against this checkout's dist/, with each volume swapped for a temp folder
// and the mirror address (the Service's clusterIP, never dialled) swapped for
// the test mirror on 127.0.0.1. containerd 1.6 then pulls through the mirror
// with the certs.d it wrote.
import { spawn } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import type { IService } from 'kubernetes-models/v1/Service'
import t from 'tap'
import { parse as parseYaml, parseAllDocuments, stringify } from 'yaml'
import { startContainerd } from '../harness/containerd.js'
import { buildImage, pushImage } from '../harness/images.js'
import { cleanEnv, REPO_ROOT, startMirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { requireTools, run, tempDir } from '../harness/tools.js'

type Container = IPodSpec['containers'][number]
interface K8sObject {
  readonly kind: string
  readonly metadata: { readonly name: string; readonly namespace?: string }
}

async function render(dir: string): Promise<K8sObject[]> {
  const r = await run('kubectl', ['kustomize', dir], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`kubectl kustomize ${dir} exited ${r.code}: ${r.stderr}`)
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as K8sObject).filter((o) => o !== null)
}

function find<T>(objs: K8sObject[], kind: string, name: string, namespace?: string): T {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name && (namespace === undefined || x.metadata.namespace === namespace))
  if (o === undefined) throw new Error(`no ${kind} ${namespace ?? ''}/${name} rendered`)
  return o as unknown as T
}

/** `$(VAR)` as the kubelet expands it, from the container's env. */
function expand(c: Container, values: readonly string[]): string[] {
  const env = new Map((c.env ?? []).map((e) => [e.name, e.value ?? '']))
  return values.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env.get(name) ?? whole))
}

/** The image's ENTRYPOINT, from docker/Dockerfile's last stage. */
async function entrypoint(): Promise<string[]> {
  const text = await readFile(join(REPO_ROOT, 'docker', 'Dockerfile'), 'utf8')
  const lines = text.split('\n').filter((l) => /^ENTRYPOINT\s+\[/.test(l))
  const last = lines.at(-1)
  if (last === undefined) throw new Error('docker/Dockerfile has no exec-form ENTRYPOINT')
  return JSON.parse(last.replace(/^ENTRYPOINT\s+/, '')) as string[]
}

/**
 * The container's argv as it would run in the pod, then moved here: the
 * image's /app is this checkout, each volume mount a temp folder, the mirror
 * URL the test mirror's.
 */
function localArgv(image: string[], c: Container, mounts: Map<string, string>, mirror: { from: string; to: string }): string[] {
  const argv = [...image, ...expand(c, c.args ?? [])]
  const relocate = (value: string): string => {
    if (value === mirror.from) return mirror.to
    for (const [inPod, here] of [['/app', REPO_ROOT] as const, ...mounts]) {
      if (value === inPod || value.startsWith(`${inPod}/`)) return here + value.slice(inPod.length)
    }
    return value
  }
  return argv.map((a) => {
    const m = /^(--[\w-]+=)(.*)$/.exec(a)
    return m !== null ? `${m[1] ?? ''}${relocate(m[2] ?? '')}` : relocate(a)
  })
}

t.test('the DaemonSet\'s own command writes a certs.d that containerd pulls through', async (t) => {
  if (!requireTools(t, 'kubectl', 'containerd', 'ctr', 'docker-registry')) return
  const objs = await render(join(REPO_ROOT, 'k8s', 'base'))
  const ds = find<IDaemonSet>(objs, 'DaemonSet', 'stevedore-node')
  const service = find<IService>(objs, 'Service', 'stevedore', 'stevedore')
  const pod = ds.spec?.template.spec as IPodSpec
  const init = (pod.initContainers ?? [])[0] as Container
  const main = pod.containers[0] as Container
  t.ok(init !== undefined && main !== undefined, 'an init container and a long-running one')
  const clusterMirror = `http://${service.spec?.clusterIP ?? ''}:${service.spec?.ports?.[0]?.port ?? ''}`

  // The upstream, the mirror, and a config like the ConfigMap's with the local registry added.
  const work = await tempDir(t, 'stevedore-node-agent')
  const registry = await startRegistry(t)
  const image = await buildImage(join(work, 'image'), { layers: [250_000] })
  await pushImage(registry, 'team/app', 'v1', image)

  const configVolume = (pod.volumes ?? []).find((v) => v.configMap !== undefined)
  const cm = find<IConfigMap>(objs, 'ConfigMap', configVolume?.configMap?.name ?? '', ds.metadata?.namespace)
  const doc = parseYaml(cm.data?.['config.yaml'] ?? '') as { upstreams: Record<string, unknown>; storage: unknown }
  doc.upstreams = { ...doc.upstreams, [registry.host]: { url: registry.url } }
  doc.storage = { filesystem: { root: join(work, 'cache') } }
  const mirror = await startMirror(t, { config: doc })

  // The pod's volumes, here: the hostPath and the ConfigMap as temp folders.
  const mounts = new Map<string, string>()
  for (const v of pod.volumes ?? []) {
    const mount = (init.volumeMounts ?? []).find((m) => m.name === v.name)
    if (mount === undefined) continue
    const here = join(work, 'volumes', v.name)
    await mkdir(here, { recursive: true }) // hostPath type DirectoryOrCreate; a ConfigMap volume is a folder of its keys
    if (v.configMap !== undefined) await writeFile(join(here, 'config.yaml'), stringify(doc))
    mounts.set(mount.mountPath, here)
  }
  const hostPath = (pod.volumes ?? []).find((v) => v.hostPath !== undefined)
  const certs = mounts.get((init.volumeMounts ?? []).find((m) => m.name === hostPath?.name)?.mountPath ?? '') as string
  t.ok(certs, 'the hostPath maps to a temp folder')

  const ep = await entrypoint()
  const swap = { from: clusterMirror, to: mirror.url }
  const initArgv = localArgv(ep, init, mounts, swap)
  t.ok(initArgv.includes(`--mirror=${mirror.url}`) || initArgv.includes(mirror.url), `the clusterIP ${clusterMirror} was swapped for ${mirror.url}`)
  t.notOk(initArgv.some((a) => a.includes(service.spec?.clusterIP ?? '?')), 'nothing left that would dial the clusterIP')
  t.equal(initArgv[0], 'node', 'the image runs node directly')
  t.comment(`init container: ${initArgv.join(' ')}`)
  const r = await run(process.execPath, initArgv.slice(1), { env: cleanEnv(), timeoutMs: 30_000 })
  t.equal(r.code, 0, `the init container succeeds${r.code === 0 ? '' : `: ${r.stderr}`}`)
  const written = (await readdir(certs)).sort()
  t.same(written, Object.keys(doc.upstreams).sort(), 'one folder per upstream of the ConfigMap')

  const containerd = await startContainerd(t)
  const ref = `${registry.host}/team/app:v1`
  registry.resetRequests()
  const pulled = await containerd.pull(ref, { hostsDir: certs })
  t.equal(pulled.code, 0, `containerd pulls${pulled.code === 0 ? '' : `: ${pulled.stderr}`}`)
  t.same(registry.requests().filter((q) => q.userAgent.startsWith('containerd')), [], 'containerd did not go to the registry itself')
  t.ok(mirror.logs().some((l) => Object.values(l).some((v) => typeof v === 'string' && v.startsWith('containerd/')) && JSON.stringify(l).includes(image.layers[0]?.digest ?? '?')), 'the mirror served the layer to containerd')

  // The long-running container: re-applies (its files are already there), then removes them on SIGTERM.
  const mainArgv = localArgv(ep, main, mounts, swap)
  t.ok(mainArgv.includes('--watch'), 'the long-running container watches')
  const child = spawn(process.execPath, mainArgv.slice(1), { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr.on('data', (b: Buffer) => (out += b.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const deadline = Date.now() + 15_000
  while (!out.includes('unchanged')) {
    if (Date.now() > deadline) throw new Error(`the watch container said nothing: ${out}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.notMatch(out, /^written/m, 'the init container\'s files are left as they are')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
  t.same(await readdir(certs), [], 'and takes its files away (the hostPath folder stays)')
})
