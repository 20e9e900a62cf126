// The kustomize manifests in k8s/: every kustomization renders with
// `kubectl kustomize` (kustomize 5), every rendered object validates against
// the Kubernetes schemas (kubernetes-models; unknown fields count as errors),
// and the pieces agree with each other and with the mirror itself. No cluster
// is needed, and nothing here sends traffic anywhere but 127.0.0.1.
import { readFile, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import type { IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor'
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import type { IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole'
import type { IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding'
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import type { INamespace } from 'kubernetes-models/v1/Namespace'
import type { IService } from 'kubernetes-models/v1/Service'
import type { IServiceAccount } from 'kubernetes-models/v1/ServiceAccount'
import t, { type Test } from 'tap'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { apiServerRules, validateStrictly } from '../harness/k8s-schemas.js'
import { all, allContainers, configOf, configTextOf, containerEnv, envOf, expandArgs, flagValue, id, K8S, kubectlReady, kustomizations, kustomize, matches, one, podSpec, withComponents, type Container, type K8sObject } from '../harness/kustomize.js'
import { REPO_ROOT, startMirror } from '../harness/mirror.js'
import { run, tempDir } from '../harness/tools.js'
import { upstreamTargetsOf } from '../../src/hosts/upstreams.js'

// ------------------------------------------------------------ checks shared by base and overlays

function checkMirrorWorkload(t: Test, objs: K8sObject[], d: IDeployment): void {
  const spec = podSpec(d)
  const name = d.metadata?.name ?? ''
  const c = spec.containers[0] as Container
  t.equal(spec.containers.length, 1, `${name}: one container`)
  t.same(c.args, ['serve', '--config', '/etc/stevedore/config.yaml'], `${name}: serve with the mounted config`)
  const { config } = configOf(objs, d, c)
  const http = (c.ports ?? []).find((p) => p.name === 'http')
  t.equal(http?.containerPort, config.listen.port, `${name}: the container port is the config's listen port`)
  t.equal(config.listen.host, '0.0.0.0', `${name}: listens on every address of the pod`)
  for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
    const p = c[probe]
    t.equal(p?.httpGet?.path, path, `${name}: ${probe} on ${path}`)
    t.equal(p?.httpGet?.port, 'http', `${name}: ${probe} on the http port`)
  }
  // Hardening (Pod Security "restricted").
  t.equal(spec.securityContext?.runAsNonRoot, true, `${name}: runAsNonRoot`)
  t.not(spec.securityContext?.runAsUser, 0, `${name}: not uid 0`)
  t.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${name}: seccomp RuntimeDefault`)
  t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${name}: read-only root filesystem`)
  t.equal(c.securityContext?.allowPrivilegeEscalation, false, `${name}: no privilege escalation`)
  t.same(c.securityContext?.capabilities?.drop, ['ALL'], `${name}: every capability dropped`)
  t.notOk(c.securityContext?.capabilities?.add, `${name}: none added`)
  t.equal(spec.automountServiceAccountToken, false, `${name}: no API token`)
  t.ok(c.resources?.requests?.['cpu'] !== undefined && c.resources.requests['memory'] !== undefined, `${name}: resource requests`)
  t.ok(c.resources?.limits?.['memory'] !== undefined, `${name}: a memory limit`)
  const mounts = new Map((c.volumeMounts ?? []).map((m) => [m.mountPath, m]))
  t.ok(mounts.has('/tmp'), `${name}: a writable /tmp beside the read-only root`)
  t.ok(mounts.has('/var/lib/stevedore'), `${name}: the cache folder is a volume`)
  if (config.storage.backend.kind === 'filesystem') t.equal(config.storage.backend.root, '/var/lib/stevedore', `${name}: the config's storage root is that volume`)
  else t.ok(config.storage.backend.spoolDir.startsWith('/var/lib/stevedore/') || config.storage.backend.spoolDir.startsWith('/tmp/'), `${name}: the S3 spool is on a writable volume`)
  for (const m of c.volumeMounts ?? []) t.ok((spec.volumes ?? []).some((v) => v.name === m.name), `${name}: volume ${m.name} exists`)
  t.ok(all<IServiceAccount>(objs, 'ServiceAccount').some((sa) => sa.metadata?.name === spec.serviceAccountName && sa.metadata?.namespace === d.metadata?.namespace), `${name}: its ServiceAccount exists`)
}

function checkNodeAgent(t: Test, objs: K8sObject[]): { ds: IDaemonSet; service: IService } {
  const ds = one<IDaemonSet>(objs, 'DaemonSet', 'stevedore-node')
  const spec = podSpec(ds)
  const service = one<IService>(objs, 'Service', 'stevedore')
  const clusterIP = service.spec?.clusterIP
  t.match(clusterIP, /^\d+\.\d+\.\d+\.\d+$/, 'the Service has a fixed clusterIP')
  t.equal(service.spec?.type ?? 'ClusterIP', 'ClusterIP')
  const servicePort = (service.spec?.ports ?? []).find((p) => p.name === 'http')
  const mirrorUrl = `http://${clusterIP ?? ''}:${servicePort?.port ?? ''}`

  t.same(spec.tolerations, [{ operator: 'Exists' }], 'tolerates every taint')
  t.equal(spec.securityContext?.runAsUser, 0, 'runs as root (certs.d belongs to root)')
  t.equal(spec.automountServiceAccountToken, false, 'no API token')
  t.notOk(spec.hostNetwork || spec.hostPID || spec.hostIPC, 'no host namespaces')
  const hostPaths = (spec.volumes ?? []).filter((v) => v.hostPath !== undefined)
  t.equal(hostPaths.length, 1, 'exactly one hostPath')
  t.equal(hostPaths[0]?.hostPath?.path, '/etc/containerd/certs.d', 'the node\'s containerd certs.d')
  const init = (spec.initContainers ?? [])[0]
  t.ok(init, 'an init container writes the files before anything else')
  t.equal(spec.containers.length, 1)
  for (const c of allContainers(spec)) {
    const args = expandArgs(c)
    t.equal(args[0], 'hosts', `${c.name}: runs stevedore hosts`)
    t.equal(flagValue(args, 'mirror'), mirrorUrl, `${c.name}: the mirror address is the Service's clusterIP and port`)
    const dir = flagValue(args, 'dir')
    const mount = (c.volumeMounts ?? []).find((m) => m.name === hostPaths[0]?.name)
    t.equal(mount?.mountPath, dir, `${c.name}: --dir is where the hostPath is mounted`)
    t.notOk(mount?.readOnly, `${c.name}: writable`)
    t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${c.name}: read-only root filesystem`)
    t.equal(c.securityContext?.allowPrivilegeEscalation, false, `${c.name}: no privilege escalation`)
    t.not(c.securityContext?.privileged, true, `${c.name}: not privileged`)
    t.same(c.securityContext?.capabilities?.drop, ['ALL'], `${c.name}: every capability dropped`)
    t.notOk(c.securityContext?.capabilities?.add, `${c.name}: none added`)
    t.notOk(c.command, `${c.name}: the image's ENTRYPOINT runs it`)
  }
  const main = spec.containers[0] as Container
  t.ok(expandArgs(main).includes('--watch'), 'the long-running container re-applies (--watch)')
  t.same(expandArgs(main).filter((a) => a !== '--watch' && a !== '--remove-on-exit'), expandArgs(init as Container), 'with the same arguments as the init container')

  // The node agent reads the mirror's upstreams: same upstreams as the mirror it points at.
  const mirror = one<IDeployment>(objs, 'Deployment', 'stevedore')
  // Read as `stevedore hosts` reads it: only the upstreams, with the agent's own environment (no POD_IP, no peer secret).
  const agentTargets = upstreamTargetsOf(parseYaml(configTextOf(objs, ds, main).text), containerEnv(main))
  const mirrorConfig = configOf(objs, mirror, podSpec(mirror).containers[0] as Container).config
  t.same(agentTargets.map((u) => u.name), [...mirrorConfig.upstreams.keys()], 'the node agent writes a file for each of the mirror\'s upstreams')

  const ns = one<INamespace>(objs, 'Namespace', ds.metadata?.namespace ?? '')
  t.equal(ns.metadata?.labels?.['pod-security.kubernetes.io/enforce'], 'privileged', 'its namespace allows hostPath: Pod Security "privileged"')
  t.not(ds.metadata?.namespace, mirror.metadata?.namespace, 'apart from the mirror, whose namespace stays "restricted"')
  t.equal(one<INamespace>(objs, 'Namespace', mirror.metadata?.namespace ?? '').metadata?.labels?.['pod-security.kubernetes.io/enforce'], 'restricted')
  return { ds, service }
}

function checkService(t: Test, objs: K8sObject[]): void {
  const service = one<IService>(objs, 'Service', 'stevedore')
  const mirror = one<IDeployment>(objs, 'Deployment', 'stevedore')
  const selected = all<IDeployment>(objs, 'Deployment').filter((d) => matches(service.spec?.selector, d.spec?.template.metadata?.labels))
  t.same(selected.map((d) => d.metadata?.name), ['stevedore'], 'the Service selects the serving pods, and only those')
  const port = (service.spec?.ports ?? [])[0]
  const c = podSpec(mirror).containers[0] as Container
  t.ok((c.ports ?? []).some((p) => p.name === port?.targetPort || p.containerPort === port?.targetPort), 'the Service targets the container port')
  const np = all<INetworkPolicy>(objs, 'NetworkPolicy').find((p) => p.metadata?.namespace === mirror.metadata?.namespace)
  t.ok(np, 'a NetworkPolicy guards the mirror')
  t.ok((np?.spec?.ingress ?? []).some((r) => (r.ports ?? []).some((p) => p.port === (c.ports ?? [])[0]?.containerPort || p.port === 'http')), 'which lets pulls in on the mirror port')
}

// ------------------------------------------------------------ tests

t.test('every kustomization renders and validates against the Kubernetes schemas', async (t) => {
  if (!(await kubectlReady(t))) return
  const dirs = await kustomizations(K8S)
  for (const expected of ['base', 'components/grafana-dashboard', 'components/node-prepull', 'components/prewarm', 'components/servicemonitor', 'overlays/s3']) t.ok(dirs.map((d) => relative(K8S, d)).includes(expected), `k8s/${expected} is a kustomization`)
  const targets = [
    // node-prepull copies the node agent's image and address into its container: it renders on a base only.
    ...dirs.filter((d) => relative(K8S, d) !== 'components/node-prepull'),
    await withComponents(t, join(K8S, 'base'), [join(K8S, 'components', 'node-prepull')]),
    await withComponents(t, join(K8S, 'overlays', 's3'), [join(K8S, 'components', 'node-prepull')]),
    await withComponents(t, join(K8S, 'base'), [join(K8S, 'components', 'servicemonitor')]),
    await withComponents(t, join(K8S, 'overlays', 's3'), [join(K8S, 'components', 'servicemonitor')]),
    await withComponents(t, join(K8S, 'base'), [join(K8S, 'components', 'prewarm')]),
    await withComponents(t, join(K8S, 'overlays', 's3'), [join(K8S, 'components', 'prewarm'), join(K8S, 'components', 'servicemonitor')]),
  ]
  for (const dir of targets) {
    const objs = await kustomize(dir)
    t.ok(objs.length > 0, `${relative(REPO_ROOT, dir)} renders`)
    for (const o of objs) {
      t.same(await validateStrictly(o), [], `${relative(REPO_ROOT, dir) || dir}: ${id(o)} is valid`)
      t.same(apiServerRules(o, objs), [], `${relative(REPO_ROOT, dir) || dir}: ${id(o)} passes the API server's own checks`)
    }
    const ids = objs.map(id)
    t.same(ids, [...new Set(ids)], 'no object twice')
  }
  // The strictness itself: a misspelt field is caught.
  const typo = (await kustomize(join(K8S, 'base'))).find((o) => o.kind === 'Deployment') as IDeployment & K8sObject
  const c = podSpec(typo).containers[0] as Container
  const misspelt: Record<string, unknown> = { ...c.securityContext, readOnlyRootFileSystem: true }
  ;(c as unknown as Record<string, unknown>)['securityContext'] = misspelt
  t.match(await validateStrictly(typo), ['/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem: unknown field'])
  // And so is a name clash between an init container and a container.
  const ds = (await kustomize(join(K8S, 'base'))).find((o) => o.kind === 'DaemonSet') as IDaemonSet & K8sObject
  const pod = podSpec(ds)
  ;(pod.initContainers?.[0] as Container).name = pod.containers[0]?.name ?? ''
  t.match(apiServerRules(ds, []), [/container name .* used twice/])
})

t.test('base: one mirror on one disk, the Service at a fixed clusterIP, a node agent that points at it', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(join(K8S, 'base'))
  t.same(objs.map((o) => o.kind).sort(), [
    'ConfigMap', 'ConfigMap', 'DaemonSet', 'Deployment', 'Namespace', 'Namespace', 'NetworkPolicy', 'NetworkPolicy',
    'PersistentVolumeClaim', 'Service', 'ServiceAccount', 'ServiceAccount', 'ServiceAccount',
  ])
  const mirror = one<IDeployment>(objs, 'Deployment', 'stevedore')
  t.equal(mirror.spec?.replicas, 1, 'one replica')
  t.equal(mirror.spec?.strategy?.type, 'Recreate', 'the old pod lets go of the ReadWriteOnce volume before the new one starts')
  const cache = (podSpec(mirror).volumes ?? []).find((v) => v.name === 'cache')
  t.equal(cache?.persistentVolumeClaim?.claimName, 'stevedore-cache', 'the cache is a PVC')
  const pvc = objs.find((o) => o.kind === 'PersistentVolumeClaim') as K8sObject & { spec?: { accessModes?: string[] } }
  t.equal(pvc.metadata.name, 'stevedore-cache')
  t.same(pvc.spec?.accessModes, ['ReadWriteOnce'])
  checkMirrorWorkload(t, objs, mirror)
  checkService(t, objs)
  checkNodeAgent(t, objs)
  const config = configOf(objs, mirror, podSpec(mirror).containers[0] as Container).config
  t.equal(config.storage.evict, true, 'the only replica evicts')
  t.ok(config.storage.maxSize !== undefined && config.storage.maxSize < 50 * 1024 ** 3, 'storage.maxSize stays under the 50Gi volume')

  // One image for everything, and the namespaces exist.
  const images = new Set(all<IDeployment | IDaemonSet>(objs, 'Deployment').concat(all(objs, 'DaemonSet')).flatMap((w) => allContainers(podSpec(w)).map((c) => c.image)))
  t.equal(images.size, 1, 'one image')
  const namespaces = new Set(all<INamespace>(objs, 'Namespace').map((n) => n.metadata?.name))
  for (const o of objs) if (o.kind !== 'Namespace') t.ok(namespaces.has(o.metadata.namespace), `${id(o)}: its namespace is created here`)
})

t.test('the clusterIP is set in one place: a new one reaches the node agent', async (t) => {
  if (!(await kubectlReady(t))) return
  const work = await tempDir(t, 'stevedore-kustomize-ip')
  const copy = join(work, 'k8s')
  await run('cp', ['-r', K8S, copy])
  const servicePath = join(copy, 'base', 'service.yaml')
  const text = await readFile(servicePath, 'utf8')
  t.equal(text.match(/clusterIP: \S+/g)?.length, 1)
  await writeFile(servicePath, text.replace(/clusterIP: \S+/, 'clusterIP: 10.100.7.7'))
  for (const dir of ['base', 'overlays/s3']) {
    const ds = one<IDaemonSet>(await kustomize(join(copy, dir)), 'DaemonSet', 'stevedore-node')
    for (const c of allContainers(podSpec(ds))) t.equal(flagValue(expandArgs(c), 'mirror'), 'http://10.100.7.7:5000', `${dir}: ${c.name}`)
  }
  for (const f of ['node-agent.yaml', 'kustomization.yaml']) {
    t.notMatch(await readFile(join(copy, 'base', f), 'utf8'), /10\.100\.7\.7/, `${f} did not need editing`)
  }
})

t.test('S3 overlay: several replicas, one evictor, a PodDisruptionBudget, an autoscaler, an IRSA annotation', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(join(K8S, 'overlays', 's3'))
  t.notOk(objs.some((o) => o.kind === 'PersistentVolumeClaim'), 'no shared disk')
  const mirror = one<IDeployment>(objs, 'Deployment', 'stevedore')
  const evictor = one<IDeployment>(objs, 'Deployment', 'stevedore-evictor')
  checkMirrorWorkload(t, objs, mirror)
  checkMirrorWorkload(t, objs, evictor)
  checkService(t, objs)
  checkNodeAgent(t, objs)
  t.equal(mirror.spec?.replicas, undefined, 'the autoscaler owns the replica count')
  t.equal(mirror.spec?.strategy?.type, 'RollingUpdate')
  t.equal(mirror.spec?.strategy?.rollingUpdate?.maxUnavailable, 0, 'a rollout never lowers capacity')
  t.ok((podSpec(mirror).volumes ?? []).every((v) => v.persistentVolumeClaim === undefined), 'no PVC in the pods')

  const hpa = one<IHorizontalPodAutoscaler>(objs, 'HorizontalPodAutoscaler', 'stevedore')
  t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'stevedore' })
  t.ok((hpa.spec.minReplicas ?? 1) >= 2, `several replicas (at least ${hpa.spec.minReplicas ?? 1})`)
  t.ok(hpa.spec.maxReplicas > (hpa.spec.minReplicas ?? 1))
  const pdb = one<IPodDisruptionBudget>(objs, 'PodDisruptionBudget', 'stevedore')
  t.ok(matches(pdb.spec?.selector?.matchLabels, mirror.spec?.template.metadata?.labels), 'the PDB covers the serving pods')
  t.notOk(matches(pdb.spec?.selector?.matchLabels, evictor.spec?.template.metadata?.labels), 'not the evictor')
  t.ok(pdb.spec?.maxUnavailable !== undefined || pdb.spec?.minAvailable !== undefined)

  const main = configOf(objs, mirror, podSpec(mirror).containers[0] as Container)
  const ev = configOf(objs, evictor, podSpec(evictor).containers[0] as Container)
  t.equal(main.config.storage.backend.kind, 's3')
  t.equal(main.config.storage.evict, false, 'serving replicas never evict')
  t.equal(ev.config.storage.evict, true, 'the evictor does')
  t.equal(evictor.spec?.replicas, 1, 'one evictor')
  t.equal(evictor.spec?.strategy?.type, 'Recreate', 'never two at once')
  t.ok(main.config.storage.maxSize !== undefined, 'a quota to evict down to')
  const strip = (text: string): unknown => {
    const doc = parseYaml(text) as { storage: Record<string, unknown> }
    delete doc.storage['evict']
    return doc
  }
  t.same(strip(ev.text), strip(main.text), 'the evictor\'s config is the serving config but for storage.evict')
  const deployments = all<IDeployment>(objs, 'Deployment').map((d) => configOf(objs, d, podSpec(d).containers[0] as Container).config.storage.evict)
  t.same(deployments.filter(Boolean).length, 1, 'exactly one workload evicts')

  const sa = one<IServiceAccount>(objs, 'ServiceAccount', 'stevedore')
  t.match(sa.metadata?.annotations?.['eks.amazonaws.com/role-arn'], /^arn:aws:iam::\d{12}:role\//, 'an IRSA role annotation to fill in')
  t.equal(podSpec(mirror).serviceAccountName, 'stevedore')
  t.equal(podSpec(evictor).serviceAccountName, 'stevedore')
})

t.test('the ServiceMonitor component scrapes the mirror\'s /metrics', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(await withComponents(t, join(K8S, 'base'), [join(K8S, 'components', 'servicemonitor')]))
  const sm = one<IServiceMonitor>(objs, 'ServiceMonitor', 'stevedore')
  const service = one<IService>(objs, 'Service', 'stevedore')
  t.ok(matches(sm.spec.selector.matchLabels, service.metadata?.labels), 'it selects the Service')
  t.equal(sm.metadata?.namespace, service.metadata?.namespace)
  const ep = sm.spec.endpoints?.[0]
  t.ok((service.spec?.ports ?? []).some((p) => p.name === ep?.port), 'on a named Service port')
  t.equal(ep?.path, '/metrics')
})

t.test('the rendered config and probe paths work against the real mirror', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(join(K8S, 'base'))
  const mirrorDeployment = one<IDeployment>(objs, 'Deployment', 'stevedore')
  const c = podSpec(mirrorDeployment).containers[0] as Container
  const { text } = configOf(objs, mirrorDeployment, c)
  const doc = parseYaml(text) as Record<string, unknown> & { storage: Record<string, unknown> }
  const work = await tempDir(t, 'stevedore-k8s-probes')
  doc.storage = { ...doc.storage, filesystem: { root: join(work, 'cache') } } // the PVC, here
  const mirror = await startMirror(t, { config: doc })
  for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
    const path = probe?.httpGet?.path
    if (path === undefined) continue
    const res = await fetch(`${mirror.url}${path}`)
    t.equal(res.status, 200, `GET ${path} answers 200`)
  }
  t.equal((await fetch(`${mirror.url}/metrics`)).status, 200, 'GET /metrics (the ServiceMonitor\'s path) answers 200')
})

// ------------------------------------------------------------ pre-warming

/** What k8s/components/prewarm must give, whatever it is added to: one pre-warming Deployment, nothing more. */
function checkPrewarm(t: Test, objs: K8sObject[], expected: string): IDeployment {
  const workloads = [...all<IDeployment>(objs, 'Deployment'), ...all<IDaemonSet>(objs, 'DaemonSet')]
  const prewarming = all<IDeployment>(objs, 'Deployment').filter((d) => podSpec(d).containers.some((c) => envOf(c, 'STEVEDORE_PREWARM_KUBERNETES') === 'true'))
  t.same(prewarming.map((d) => d.metadata?.name), [expected], `exactly one Deployment pre-warms: ${expected}`)
  const p = prewarming[0] as IDeployment
  const spec = podSpec(p)
  t.equal(p.spec?.replicas, 1, 'and it runs one replica')
  t.equal(spec.serviceAccountName, 'stevedore-prewarm', 'as the pre-warming service account')
  t.equal(spec.automountServiceAccountToken, true, 'with its token mounted')
  const config = configOf(objs, p, spec.containers[0] as Container).config
  t.equal(config.prewarm.kubernetes.kubeconfig, undefined, 'no kubeconfig: in-cluster credentials')
  for (const w of workloads) {
    if (w === p) continue
    const name = `${w.kind ?? ''} ${w.metadata?.name ?? ''}`
    const other = podSpec(w)
    t.equal(other.automountServiceAccountToken, false, `${name}: no API token`)
    t.not(other.serviceAccountName, 'stevedore-prewarm', `${name}: not the pre-warming account`)
    t.notOk(other.containers.some((c) => envOf(c, 'STEVEDORE_PREWARM_KUBERNETES') === 'true'), `${name}: does not pre-warm`)
  }

  const sa = one<IServiceAccount>(objs, 'ServiceAccount', 'stevedore-prewarm')
  t.equal(sa.metadata?.namespace, p.metadata?.namespace)
  t.equal(sa.automountServiceAccountToken, false, 'the account mounts no token by default: only the pod that asks gets it')
  const roles = objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
  t.same(roles.map(id), ['ClusterRole /stevedore-prewarm'], 'one role')
  const role = one<IClusterRole>(objs, 'ClusterRole', 'stevedore-prewarm')
  const grants = (role.rules ?? []).flatMap((r) => (r.apiGroups ?? []).flatMap((g) => (r.resources ?? []).map((res) => `${g === '' ? 'core' : g}/${res}: ${[...(r.verbs ?? [])].sort().join(',')}`))).sort()
  t.same(grants, ['apps/daemonsets', 'apps/deployments', 'apps/statefulsets', 'batch/cronjobs', 'batch/jobs', 'core/events', 'core/nodes'].map((r) => `${r}: get,list,watch`), 'get/list/watch on the workload kinds, Nodes and Events (the kubelets\' Pulled events), nothing else')
  t.notOk((role.rules ?? []).some((r) => (r.apiGroups ?? []).includes('events.k8s.io')), 'core/v1 Events, as the mirror reads them: not events.k8s.io')
  t.ok((role.rules ?? []).every((r) => r.resourceNames === undefined && r.nonResourceURLs === undefined), 'no further rule shapes')
  const bindings = objs.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding')
  t.same(bindings.map(id), ['ClusterRoleBinding /stevedore-prewarm'], 'one binding')
  const binding = one<IClusterRoleBinding>(objs, 'ClusterRoleBinding', 'stevedore-prewarm')
  t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'stevedore-prewarm' })
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: 'stevedore-prewarm', namespace: p.metadata?.namespace }], 'to the pre-warming account only')

  // Egress to the API server: 443 (the kubernetes Service) and 6443 (its endpoints on kubeadm-style clusters).
  const labels = p.spec?.template.metadata?.labels
  const policies = all<INetworkPolicy>(objs, 'NetworkPolicy').filter((np) => np.metadata?.namespace === p.metadata?.namespace && (np.spec?.policyTypes ?? []).includes('Egress') && (Object.keys(np.spec?.podSelector?.matchLabels ?? {}).length === 0 || matches(np.spec?.podSelector?.matchLabels, labels)))
  const open = (port: number): boolean => policies.some((np) => (np.spec?.egress ?? []).some((r) => (r.ports ?? []).some((q) => q.port === port && (q.protocol ?? 'TCP') === 'TCP')))
  t.ok(open(443) && open(6443), 'the pre-warming pod may reach the API server on 443 and 6443')
  const own = policies.find((np) => np.metadata?.name === 'stevedore-prewarm')
  t.ok(own !== undefined && matches(own.spec?.podSelector?.matchLabels, labels), 'by a policy that selects the pre-warming pod')
  const others = all<IDeployment>(objs, 'Deployment').filter((d) => d !== p)
  t.notOk(others.some((d) => matches(own?.spec?.podSelector?.matchLabels, d.spec?.template.metadata?.labels)), 'and no other pod')
  return p
}

t.test('the prewarm component on the base: the one mirror pre-warms, with read-only access to the API', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(await withComponents(t, join(K8S, 'base'), [join(K8S, 'components', 'prewarm')]))
  const p = checkPrewarm(t, objs, 'stevedore')
  checkService(t, objs)
  const plain = await kustomize(join(K8S, 'base'))
  t.equal(podSpec(one<IDeployment>(plain, 'Deployment', 'stevedore')).automountServiceAccountToken, false, 'without the component the base mounts no token')
  t.notOk(plain.some((o) => o.kind.includes('Role')), 'and grants nothing')
  t.equal(p.metadata?.annotations?.['stevedore.io/prewarmer'], 'true')
})

/** The prewarm component with the S3 overlay: only the evictor pre-warms; the serving replicas get no token. */
function checkS3Prewarm(t: Test, objs: K8sObject[]): void {
  const p = checkPrewarm(t, objs, 'stevedore-evictor')
  const serving = one<IDeployment>(objs, 'Deployment', 'stevedore')
  const spec = podSpec(serving)
  t.equal(spec.automountServiceAccountToken, false, 'serving replicas: no token')
  t.equal(spec.serviceAccountName, 'stevedore', 'serving replicas: their own account')
  t.equal(envOf(spec.containers[0] as Container, 'STEVEDORE_PREWARM_KUBERNETES'), 'false', 'serving replicas: pre-warming forced off, whatever the shared config says')
  t.equal(configOf(objs, p, podSpec(p).containers[0] as Container).config.storage.evict, true, 'the pre-warmer is still the evictor')
  const role = (name: string): string | undefined => one<IServiceAccount>(objs, 'ServiceAccount', name).metadata?.annotations?.['eks.amazonaws.com/role-arn']
  t.match(role('stevedore-prewarm'), /^arn:aws:iam::/, 'the pre-warming account has the bucket\'s IAM role too')
  t.equal(role('stevedore-prewarm'), role('stevedore'), 'the same one, set in one place')
  checkService(t, objs)
}

t.test('the prewarm component on the S3 overlay: only the evictor pre-warms, the serving replicas get no token', async (t) => {
  if (!(await kubectlReady(t))) return
  const objs = await kustomize(await withComponents(t, join(K8S, 'overlays', 's3'), [join(K8S, 'components', 'prewarm')]))
  checkS3Prewarm(t, objs)
})

t.test('the prewarm component added straight into the S3 overlay: still only the evictor pre-warms', async (t) => {
  if (!(await kubectlReady(t))) return
  // Components run before the overlay's own patches here: the serving Deployment must still end up without the token.
  const copy = join(await tempDir(t, 'stevedore-k8s-copy'), 'k8s')
  const cp = await run('cp', ['-r', K8S, copy], { timeoutMs: 30_000 })
  t.equal(cp.code, 0, 'k8s/ copied')
  const overlay = join(copy, 'overlays', 's3')
  await writeFile(join(overlay, 'kustomization.yaml'), `${await readFile(join(overlay, 'kustomization.yaml'), 'utf8')}\ncomponents:\n  - ../../components/prewarm\n`)
  const objs = await kustomize(overlay)
  checkS3Prewarm(t, objs)
})

// ------------------------------------------------------------ node pre-pull

const NODE_PREPULL = join(K8S, 'components', 'node-prepull')
const CRI_SOCKET = '/run/containerd/containerd.sock'

/** What k8s/components/node-prepull must give: a prepull container beside the node agent's, the socket, egress to the mirror. */
function checkNodePrepull(t: Test, objs: K8sObject[]): Container {
  const ds = one<IDaemonSet>(objs, 'DaemonSet', 'stevedore-node')
  const spec = podSpec(ds)
  const service = one<IService>(objs, 'Service', 'stevedore')
  const port = (service.spec?.ports ?? []).find((p) => p.name === 'http')?.port
  const c = spec.containers.find((x) => x.name === 'prepull')
  if (c === undefined) throw new Error('no prepull container in the node agent')
  const args = expandArgs(c)
  t.equal(args[0], 'prepull', 'runs stevedore prepull')
  t.equal(flagValue(args, 'cri'), `unix://${CRI_SOCKET}`, 'through the node\'s containerd socket')
  t.equal(flagValue(args, 'mirror'), `http://${service.spec?.clusterIP ?? ''}:${port ?? ''}`, 'the mirror address is the Service\'s clusterIP and port')
  t.notOk(args.includes('--once'), 'it loops (a DaemonSet container that exits would restart)')
  t.notOk(c.command, 'the image\'s ENTRYPOINT runs it')
  const hosts = spec.containers.find((x) => x.name === 'watch-hosts')
  t.equal(c.image, hosts?.image, `the node agent's image (${c.image ?? ''}), not the component's placeholder`)

  const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === CRI_SOCKET)
  const volume = (spec.volumes ?? []).find((v) => v.name === mount?.name)
  t.same(volume?.hostPath, { path: CRI_SOCKET, type: 'Socket' }, 'the socket is mounted: hostPath of type Socket')
  t.same((spec.volumes ?? []).filter((v) => v.hostPath !== undefined).map((v) => v.hostPath?.path).sort(), ['/etc/containerd/certs.d', CRI_SOCKET], 'two hostPaths now: certs.d and the socket')
  for (const other of allContainers(spec).filter((x) => x !== c)) {
    t.notOk((other.volumeMounts ?? []).some((m) => m.name === mount?.name), `${other.name}: does not get the socket`)
  }
  t.equal(c.securityContext?.readOnlyRootFilesystem, true, 'read-only root filesystem')
  t.equal(c.securityContext?.allowPrivilegeEscalation, false, 'no privilege escalation')
  t.not(c.securityContext?.privileged, true, 'not privileged')
  t.same(c.securityContext?.capabilities?.drop, ['ALL'], 'every capability dropped')
  t.notOk(c.securityContext?.capabilities?.add, 'none added')
  t.ok(c.resources?.requests?.['cpu'] !== undefined && c.resources.requests['memory'] !== undefined, 'resource requests')
  t.ok(c.resources?.limits?.['memory'] !== undefined, 'a memory limit')

  // Egress: the list request, to the mirror's pods on its port, and nothing else.
  const mirror = one<IDeployment>(objs, 'Deployment', 'stevedore')
  const containerPort = (podSpec(mirror).containers[0]?.ports ?? []).find((p) => p.name === 'http')?.containerPort
  const np = all<INetworkPolicy>(objs, 'NetworkPolicy').find((p) => p.metadata?.namespace === ds.metadata?.namespace)
  t.ok((np?.spec?.policyTypes ?? []).includes('Egress'), 'the node agent\'s egress stays under a policy')
  const rules = np?.spec?.egress ?? []
  t.equal(rules.length, 1, 'one egress rule')
  t.same((rules[0]?.ports ?? []).map((p) => [p.protocol ?? 'TCP', p.port]), [['TCP', containerPort]], `TCP ${String(containerPort)} only (the mirror's container port; no DNS: the address is an IP)`)
  const peer = (rules[0]?.to ?? [])[0]
  t.equal((rules[0]?.to ?? []).length, 1, 'to one peer')
  t.same(peer?.namespaceSelector?.matchLabels, { 'kubernetes.io/metadata.name': mirror.metadata?.namespace }, 'in the mirror\'s namespace')
  t.ok(matches(peer?.podSelector?.matchLabels, mirror.spec?.template.metadata?.labels), 'the mirror\'s pods')
  t.ok(matches(peer?.podSelector?.matchLabels, service.spec?.selector), 'the ones the Service sends to')
  return c
}

t.test('the node-prepull component: a prepull container with the containerd socket, pointed at the mirror, allowed to reach it', async (t) => {
  if (!(await kubectlReady(t))) return
  for (const base of ['base', 'overlays/s3']) {
    const objs = await kustomize(await withComponents(t, join(K8S, base), [NODE_PREPULL]))
    t.test(base, async (t) => {
      const c = checkNodePrepull(t, objs)
      checkService(t, objs)
      // The rendered arguments are ones the command accepts: with the mirror
      // and the socket moved to 127.0.0.1 and a temp folder, a round fails
      // (nothing listens) with 1, not with 2 (usage).
      const dir = await tempDir(t, 'stevedore-k8s-prepull')
      const args = expandArgs(c).map((a) => a.startsWith('--mirror=') ? '--mirror=http://127.0.0.1:9' : a.startsWith('--cri=') ? `--cri=unix://${join(dir, 'none.sock')}` : a)
      const r = await run(process.execPath, [join(REPO_ROOT, 'dist', 'cli.js'), ...args, '--once'], { timeoutMs: 30_000 })
      t.equal(r.code, 1, `the rendered arguments parse${r.code === 2 ? `: ${r.stderr}` : ''}`)
    })
  }
  const plain = one<IDaemonSet>(await kustomize(join(K8S, 'base')), 'DaemonSet', 'stevedore-node')
  t.notOk(podSpec(plain).containers.some((c) => c.name === 'prepull'), 'without the component: no prepull container')
})

t.test('node-prepull: the clusterIP set in service.yaml reaches its container too, through the component\'s own replacement', async (t) => {
  if (!(await kubectlReady(t))) return
  const work = await tempDir(t, 'stevedore-kustomize-prepull-ip')
  const copy = join(work, 'k8s')
  await run('cp', ['-r', K8S, copy])
  const servicePath = join(copy, 'base', 'service.yaml')
  await writeFile(servicePath, (await readFile(servicePath, 'utf8')).replace(/clusterIP: \S+/, 'clusterIP: 10.100.7.7'))
  const component = join(copy, 'components', 'node-prepull')
  const render = async (): Promise<Container | undefined> => {
    const ds = one<IDaemonSet>(await kustomize(await withComponents(t, join(copy, 'base'), [component])), 'DaemonSet', 'stevedore-node')
    return podSpec(ds).containers.find((c) => c.name === 'prepull')
  }
  const c = await render()
  t.equal(flagValue(expandArgs(c as Container), 'mirror'), 'http://10.100.7.7:5000', 'the new address')
  t.notMatch(await readFile(join(component, 'node-agent-prepull.yaml'), 'utf8'), /10\.100\.7\.7/, 'the component did not need editing')
  // Why the component carries replacements of its own: the base's ran when
  // the base was built, before the component's container existed.
  const kustomization = join(component, 'kustomization.yaml')
  const doc = parseYaml(await readFile(kustomization, 'utf8')) as Record<string, unknown>
  delete doc['replacements']
  await writeFile(kustomization, stringifyYaml(doc))
  const without = await render()
  t.equal(flagValue(expandArgs(without as Container), 'mirror'), 'http://10.96.0.50:5000', 'without them: the placeholder stays')
  t.equal(without?.image, 'stevedore', 'and so does the image name')
})
