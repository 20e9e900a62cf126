// Whether rendered NetworkPolicies let one pod open a connection to another,
// by the rules of networking.k8s.io/v1: a pod no policy selects for a
// direction is open in that direction; a selected pod admits only what some
// rule of a selecting policy allows; a connection needs the source's egress
// and the destination's ingress. Pods are known by namespace and labels only,
// so ipBlock peers never match here (a pod address is not known without a
// cluster): this can only under-report what is allowed, never over-report.
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import type { INamespace } from 'kubernetes-models/v1/Namespace'

type LabelSelector = NonNullable<INetworkPolicy['spec']>['podSelector']
type Peer = NonNullable<NonNullable<NonNullable<INetworkPolicy['spec']>['egress']>[number]['to']>[number]
type Port = NonNullable<NonNullable<NonNullable<INetworkPolicy['spec']>['egress']>[number]['ports']>[number]

export interface PodRef {
  readonly namespace: string
  readonly labels: Readonly<Record<string, string>>
}

export interface Connection {
  readonly from: PodRef
  readonly to: PodRef
  readonly port: number
  /** the destination container port's name, for rules that name ports */
  readonly portName?: string
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP'
}

export interface Verdict {
  readonly egress: boolean
  readonly ingress: boolean
  readonly allowed: boolean
  /** the policies whose rules let the connection out and in (empty when the side is unselected, hence open) */
  readonly by: { readonly egress: string[]; readonly ingress: string[] }
}

/** A label selector against labels, as the API server reads it: an empty selector selects everything. */
export function selects(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (selector === undefined) return true
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key)
    const value = labels[e.key]
    const ok = e.operator === 'In' ? has && (e.values ?? []).includes(value as string)
      : e.operator === 'NotIn' ? !has || !(e.values ?? []).includes(value as string)
        : e.operator === 'Exists' ? has
          : e.operator === 'DoesNotExist' ? !has
            : undefined
    if (ok === undefined) throw new Error(`label selector operator ${e.operator} is not one the API accepts`)
    if (!ok) return false
  }
  return true
}

const typesOf = (p: INetworkPolicy): string[] =>
  p.spec?.policyTypes ?? (p.spec?.egress !== undefined ? ['Ingress', 'Egress'] : ['Ingress'])

/** Namespace labels, with the one the API server sets on every namespace. */
function namespaceLabels(namespaces: readonly INamespace[], name: string): Record<string, string> {
  const ns = namespaces.find((n) => n.metadata?.name === name)
  return { ...(ns?.metadata?.labels ?? {}), 'kubernetes.io/metadata.name': name }
}

function peerMatches(peer: Peer, policyNamespace: string, pod: PodRef, namespaces: readonly INamespace[]): boolean {
  if (peer.ipBlock !== undefined) return false
  const inNamespace = peer.namespaceSelector === undefined
    ? pod.namespace === policyNamespace
    : selects(peer.namespaceSelector, namespaceLabels(namespaces, pod.namespace))
  return inNamespace && selects(peer.podSelector, pod.labels)
}

function portMatches(ports: readonly Port[] | undefined, c: Connection): boolean {
  if (ports === undefined || ports.length === 0) return true
  return ports.some((p) => {
    if ((p.protocol ?? 'TCP') !== (c.protocol ?? 'TCP')) return false
    if (p.port === undefined) return true
    if (typeof p.port === 'string') return p.port === c.portName
    return p.endPort === undefined ? p.port === c.port : c.port >= p.port && c.port <= p.endPort
  })
}

const name = (p: INetworkPolicy): string => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`

/** One direction: the policies that select `pod` for it, and which of them let the connection through. */
function side(policies: readonly INetworkPolicy[], namespaces: readonly INamespace[], c: Connection, direction: 'Egress' | 'Ingress'): { open: boolean; by: string[] } {
  const pod = direction === 'Egress' ? c.from : c.to
  const other = direction === 'Egress' ? c.to : c.from
  const selecting = policies.filter((p) => (p.metadata?.namespace ?? 'default') === pod.namespace && typesOf(p).includes(direction) && selects(p.spec?.podSelector, pod.labels))
  if (selecting.length === 0) return { open: true, by: [] }
  const by = selecting.filter((p) => {
    // An egress rule's peers are `to`, an ingress rule's `from`; none listed means any peer.
    const rules: Array<{ peers?: readonly Peer[] | undefined; ports?: readonly Port[] | undefined }> = direction === 'Egress'
      ? (p.spec?.egress ?? []).map((r) => ({ peers: r.to, ports: r.ports }))
      : (p.spec?.ingress ?? []).map((r) => ({ peers: r.from, ports: r.ports }))
    return rules.some((r) => {
      const toward = r.peers === undefined || r.peers.length === 0 || r.peers.some((x) => peerMatches(x, p.metadata?.namespace ?? 'default', other, namespaces))
      return toward && portMatches(r.ports, c)
    })
  }).map(name)
  return { open: by.length > 0, by }
}

/** Whether the policies let `c.from` open `c.to`:`c.port`. */
export function connection(policies: readonly INetworkPolicy[], namespaces: readonly INamespace[], c: Connection): Verdict {
  const out = side(policies, namespaces, c, 'Egress')
  const into = side(policies, namespaces, c, 'Ingress')
  return { egress: out.open, ingress: into.open, allowed: out.open && into.open, by: { egress: out.by, ingress: into.by } }
}
