// Events as a kubelet posts them about its pods' containers, for the
// stand-in API server (test/harness/kube-api.ts) to serve.
import type { KubeObject } from './kube-api.js'

export interface KubeletEventOptions {
  readonly namespace?: string
  readonly pod?: string
  readonly container?: string
  /** The node the kubelet runs on: source.host and reportingInstance. */
  readonly node?: string
  readonly reason?: string
  readonly message: string
  readonly count?: number
  /** lastTimestamp; firstTimestamp too unless `firstAt`. Default now. */
  readonly at?: Date
  readonly firstAt?: Date
  /** As an events.k8s.io/v1 client writes it (eventTime and series; no count, lastTimestamp or source) rather than the kubelet's core/v1 recorder. */
  readonly series?: boolean
}

/** RFC 3339 with whole seconds: metav1.Time on the wire. */
const wireTime = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z')

/** An Event as a kubelet posts it about one of its pods' containers (client-go's recorder: count, first and last timestamps, source and reporting fields). */
export function kubeletEvent(name: string, opts: KubeletEventOptions): KubeObject {
  const namespace = opts.namespace ?? 'default'
  const pod = opts.pod ?? 'web-0'
  const node = opts.node ?? 'node-1'
  const at = opts.at ?? new Date()
  const common = {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name, namespace },
    involvedObject: { kind: 'Pod', namespace, name: pod, uid: '11111111-2222-4333-8444-555555555555', apiVersion: 'v1', fieldPath: `spec.containers{${opts.container ?? 'app'}}` },
    reason: opts.reason ?? 'Pulled',
    message: opts.message,
    type: 'Normal',
    reportingComponent: 'kubelet',
    reportingInstance: node,
  }
  if (opts.series === true) {
    const micro = (d: Date): string => d.toISOString().replace(/Z$/, '000Z')
    return { ...common, action: 'Pulled', eventTime: micro(opts.firstAt ?? at), ...(opts.count !== undefined && opts.count > 1 ? { series: { count: opts.count, lastObservedTime: micro(at) } } : {}) }
  }
  return {
    ...common,
    source: { component: 'kubelet', host: node },
    count: opts.count ?? 1,
    firstTimestamp: wireTime(opts.firstAt ?? at),
    lastTimestamp: wireTime(at),
  }
}
