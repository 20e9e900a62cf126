// The NetworkPolicy evaluator the k8s e2e tests judge rendered policies with
// (test/harness/network-policy.ts), against the rules of networking.k8s.io/v1.
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import type { INamespace } from 'kubernetes-models/v1/Namespace'
import t from 'tap'
import { connection, selects, type Connection } from '../harness/network-policy.js'

const policy = (name: string, namespace: string, spec: NonNullable<INetworkPolicy['spec']>): INetworkPolicy =>
  ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec })

const web = { namespace: 'app', labels: { role: 'web' } }
const db = { namespace: 'app', labels: { role: 'db' } }
const agent = { namespace: 'ops', labels: { role: 'agent' } }
const namespaces: INamespace[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ops', labels: { team: 'platform' } } }]
const to = (from: Connection['from'], dest: Connection['to'], port: number, extra: Partial<Connection> = {}): Connection => ({ from, to: dest, port, ...extra })

const denyAll = policy('deny', 'app', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })
const webOut = policy('web-out', 'app', { podSelector: { matchLabels: { role: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { role: 'db' } } }], ports: [{ protocol: 'TCP', port: 5432 }] }] })
const dbIn = policy('db-in', 'app', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'web' } } }] }] })
const fromOps = policy('from-ops', 'app', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'platform' } }, podSelector: { matchLabels: { role: 'agent' } } }], ports: [{ port: 'pg' }] }] })
const range = policy('range', 'app', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ port: 8000, endPort: 8100 }] }] })

const cases: Array<[string, INetworkPolicy[], Connection, boolean]> = [
  ['no policy: open', [], to(web, db, 5432), true],
  ['deny-all: shut both ways', [denyAll], to(web, db, 5432), false],
  ['egress allowed but the destination admits nothing', [denyAll, webOut], to(web, db, 5432), false],
  ['egress and ingress both allowed', [denyAll, webOut, dbIn], to(web, db, 5432), true],
  ['the egress rule is for one port only', [denyAll, webOut, dbIn], to(web, db, 5433), false],
  ['the egress rule is for TCP only', [denyAll, webOut, dbIn], to(web, db, 5432, { protocol: 'UDP' }), false],
  ['a podSelector-only peer means the policy\'s own namespace', [dbIn], to({ namespace: 'ops', labels: { role: 'web' } }, db, 5432), false],
  ['namespaceSelector and podSelector together: the right pod in the wrong namespace is refused', [fromOps], to({ namespace: 'app', labels: { role: 'agent' } }, db, 5432, { portName: 'pg' }), false],
  ['namespaceSelector and podSelector together, with a named port', [fromOps], to(agent, db, 5432, { portName: 'pg' }), true],
  ['a named port matches by name only', [fromOps], to(agent, db, 5432, { portName: 'other' }), false],
  ['a pod the policy does not select stays open', [fromOps], to(agent, web, 80), true],
  ['endPort: inside the range', [range], to(web, { namespace: 'elsewhere', labels: {} }, 8080), true],
  ['endPort: past the range', [range], to(web, { namespace: 'elsewhere', labels: {} }, 8101), false],
  ['policyTypes unset with no egress rules: ingress only, egress stays open', [dbIn], to(db, web, 80), true],
]

for (const [name, policies, c, expected] of cases) {
  t.equal(connection(policies, namespaces, c).allowed, expected, name)
}

t.test('the verdict names the policies that let the connection out and in', async (t) => {
  const v = connection([denyAll, webOut, dbIn], namespaces, to(web, db, 5432))
  t.same(v, { egress: true, ingress: true, allowed: true, by: { egress: ['app/web-out'], ingress: ['app/db-in'] } })
})

t.test('namespaces carry kubernetes.io/metadata.name even when not rendered', async (t) => {
  const p = policy('by-name', 'app', { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'other' } } }] }] })
  t.ok(connection([p], [], to({ namespace: 'other', labels: {} }, web, 1)).allowed)
  t.notOk(connection([p], [], to({ namespace: 'third', labels: {} }, web, 1)).allowed)
})

t.test('ipBlock peers never match a pod (its address is unknown here)', async (t) => {
  const p = policy('cidr', 'app', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0' } }] }] })
  t.notOk(connection([p], [], to(web, db, 80)).allowed)
})

t.test('label selectors: matchLabels and every matchExpressions operator', async (t) => {
  const labels = { a: '1', b: '2' }
  t.ok(selects({}, labels), 'an empty selector selects everything')
  t.ok(selects(undefined, labels), 'so does none')
  t.ok(selects({ matchLabels: { a: '1' } }, labels))
  t.notOk(selects({ matchLabels: { a: '2' } }, labels))
  t.ok(selects({ matchExpressions: [{ key: 'a', operator: 'In', values: ['0', '1'] }] }, labels))
  t.notOk(selects({ matchExpressions: [{ key: 'c', operator: 'In', values: ['1'] }] }, labels))
  t.ok(selects({ matchExpressions: [{ key: 'c', operator: 'NotIn', values: ['1'] }] }, labels), 'NotIn holds for a missing key')
  t.notOk(selects({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, labels))
  t.ok(selects({ matchExpressions: [{ key: 'b', operator: 'Exists' }] }, labels))
  t.ok(selects({ matchExpressions: [{ key: 'c', operator: 'DoesNotExist' }] }, labels))
  t.notOk(selects({ matchExpressions: [{ key: 'a', operator: 'DoesNotExist' }] }, labels))
  t.throws(() => selects({ matchExpressions: [{ key: 'a', operator: 'Gt', values: ['0'] }] }, labels), /not one the API accepts/)
})
