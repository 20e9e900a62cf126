import t from 'tap'
import { Nodes, nodeFacts } from '../../src/prewarm/nodes.js'
import { objectKey, podSpecOf, workloadImages, WORKLOAD_KINDS, type WorkloadKind } from '../../src/prewarm/workloads.js'
import { node, RESOURCES, workload } from '../harness/kube-api.js'

t.test('image extraction: every kind, init containers included, in template order, each once', async (t) => {
  for (const kind of WORKLOAD_KINDS) {
    const obj = workload(kind, 'shop', 'web', { images: ['ghcr.io/a/app:1', 'nginx', 'ghcr.io/a/app:1'], initImages: ['busybox:1.36'] })
    RESOURCES[kind].validate(obj)
    t.same(workloadImages(kind, obj), { images: ['busybox:1.36', 'ghcr.io/a/app:1', 'nginx'], prepull: false }, `${kind}`)
    t.equal(objectKey(obj), 'shop/web', `${kind}: namespace/name`)
  }
})

t.test('image extraction: a CronJob\'s template is spec.jobTemplate.spec.template, not spec.template', async (t) => {
  const cron = workload('CronJob', 'ops', 'backup', { images: ['quay.io/ops/backup:2'] })
  t.same(workloadImages('CronJob', cron).images, ['quay.io/ops/backup:2'])
  // The same object read as if it were a Deployment has no template at spec.template.
  t.same(workloadImages('Deployment', cron).images, [])
  t.ok(podSpecOf('CronJob', cron))
})

t.test('image extraction: references are kept as written (no normalising)', async (t) => {
  const obj = workload('Deployment', 'a', 'b', { images: ['nginx', 'docker.io/library/nginx:latest', 'ghcr.io/x/y@sha256:' + 'a'.repeat(64)] })
  t.same(workloadImages('Deployment', obj).images, ['nginx', 'docker.io/library/nginx:latest', 'ghcr.io/x/y@sha256:' + 'a'.repeat(64)])
})

t.test('image extraction: the prepull annotation counts only as "true"', async (t) => {
  for (const [value, expected] of [['true', true], ['True', false], ['yes', false], ['', false]] as const) {
    const obj = workload('DaemonSet', 'a', 'b', { images: ['x:1'], annotations: { 'stevedore.io/prepull': value } })
    t.equal(workloadImages('DaemonSet', obj).prepull, expected, JSON.stringify(value))
  }
  t.equal(workloadImages('DaemonSet', workload('DaemonSet', 'a', 'b', { images: ['x:1'] })).prepull, false, 'no annotation')
})

t.test('image extraction: malformed objects yield nothing rather than throwing', async (t) => {
  const bad: unknown[] = [null, 42, 'x', {}, { spec: null }, { spec: { template: { spec: { containers: 'nginx' } } } }, { spec: { template: { spec: { containers: [null, { image: 7 }, { image: '  ' }, { image: 'ok:1' }] } } } }]
  for (const kind of ['Deployment', 'CronJob'] satisfies WorkloadKind[]) {
    for (const obj of bad) t.doesNotThrow(() => workloadImages(kind, obj))
  }
  t.same(workloadImages('Deployment', bad[6]).images, ['ok:1'])
  t.equal(objectKey({ metadata: { namespace: 'a' } }), undefined, 'no name, no key')
  t.equal(objectKey({ metadata: { name: 'n1' } }), '/n1', 'cluster-scoped')
})

t.test('nodes: platform from nodeInfo, InternalIP addresses only; distinct platforms; address lookup', async (t) => {
  const a = node('a', 'linux/amd64', ['10.0.0.1', 'fd00::1'])
  RESOURCES.Node.validate(a)
  t.same(nodeFacts(a), { name: 'a', platform: 'linux/amd64', addresses: ['10.0.0.1', 'fd00::1'] })
  t.same(nodeFacts({ metadata: { name: 'new' }, status: {} }), { name: 'new', platform: undefined, addresses: [] }, 'not yet reported')
  t.equal(nodeFacts({}), undefined)

  const nodes = new Nodes()
  t.same(nodes.platforms(), [], 'none known')
  nodes.set(nodeFacts(a) ?? t.fail('a') as never)
  nodes.set(nodeFacts(node('b', 'linux/arm64', ['10.0.0.2'])) ?? t.fail('b') as never)
  nodes.set(nodeFacts(node('c', 'linux/amd64', ['10.0.0.3'])) ?? t.fail('c') as never)
  t.same(nodes.platforms(), ['linux/amd64', 'linux/arm64'])
  t.equal(nodes.nodeOf('10.0.0.2'), 'b')
  t.equal(nodes.nodeOf('fd00::1'), 'a')
  t.equal(nodes.nodeOf('10.9.9.9'), undefined)
  // An address that moved to another node, then the node is updated: the lookup follows.
  nodes.set(nodeFacts(node('b', 'linux/arm64', ['10.0.0.9'])) ?? t.fail('b2') as never)
  t.equal(nodes.nodeOf('10.0.0.2'), undefined, 'the old address is forgotten')
  t.equal(nodes.nodeOf('10.0.0.9'), 'b')
  nodes.delete('b')
  t.same(nodes.platforms(), ['linux/amd64'])
  t.equal(nodes.nodeOf('10.0.0.9'), undefined)
})
