// What pre-warming keeps of a Node: the platform its pods run (the platform
// an image is fetched for) and its internal addresses (to tell, later, which
// node a pull comes from). Nothing else of the object is kept.
import type { ResourceSink } from './watch.js'
import { field } from './workloads.js'

export interface NodeFacts {
  readonly name: string
  /** `os/arch`; undefined while the kubelet has not reported it. The API gives no variant. */
  readonly platform: string | undefined
  /** Its InternalIP addresses. */
  readonly addresses: readonly string[]
}

export function nodeFacts(obj: unknown): NodeFacts | undefined {
  const name = field(field(obj, 'metadata'), 'name')
  if (typeof name !== 'string' || name === '') return undefined
  const status = field(obj, 'status')
  const info = field(status, 'nodeInfo')
  const os = field(info, 'operatingSystem')
  const arch = field(info, 'architecture')
  const platform = typeof os === 'string' && os !== '' && typeof arch === 'string' && arch !== '' ? `${os}/${arch}` : undefined
  const addresses: string[] = []
  const list = field(status, 'addresses')
  if (Array.isArray(list)) {
    for (const a of list) {
      const address = field(a, 'address')
      if (field(a, 'type') === 'InternalIP' && typeof address === 'string' && address !== '') addresses.push(address)
    }
  }
  return { name, platform, addresses }
}

/** The cluster's nodes, by name. */
export class Nodes {
  private readonly byName = new Map<string, NodeFacts>()
  private readonly byAddress = new Map<string, string>()

  set(node: NodeFacts): void {
    this.delete(node.name)
    this.byName.set(node.name, node)
    for (const a of node.addresses) this.byAddress.set(a, node.name)
  }

  delete(name: string): void {
    const old = this.byName.get(name)
    if (old === undefined) return
    this.byName.delete(name)
    for (const a of old.addresses) if (this.byAddress.get(a) === name) this.byAddress.delete(a)
  }

  has(name: string): boolean {
    return this.byName.has(name)
  }

  names(): string[] {
    return [...this.byName.keys()]
  }

  get size(): number {
    return this.byName.size
  }

  /** The distinct platforms of the known nodes, sorted; empty while none is known. */
  platforms(): string[] {
    const platforms = new Set<string>()
    for (const n of this.byName.values()) if (n.platform !== undefined) platforms.add(n.platform)
    return [...platforms].sort()
  }

  /** The node with this InternalIP. */
  nodeOf(address: string): string | undefined {
    return this.byAddress.get(address)
  }
}

/** Where the Nodes' list and watch deliver; `onSynced` after the first complete list. */
export function nodesSink(nodes: Nodes, onSynced: () => void): ResourceSink {
  let listing: Set<string> | undefined
  let synced = false
  const upsert = (obj: unknown): string | undefined => {
    const facts = nodeFacts(obj)
    if (facts !== undefined) nodes.set(facts)
    return facts?.name
  }
  return {
    listStarted: () => {
      listing = new Set()
    },
    listed: (obj) => {
      const name = upsert(obj)
      if (name !== undefined) listing?.add(name)
    },
    listDone: () => {
      const listed = listing ?? new Set<string>()
      for (const name of nodes.names()) if (!listed.has(name)) nodes.delete(name)
      listing = undefined
      if (!synced) {
        synced = true
        onSynced()
      }
    },
    event: (type, obj) => {
      if (type !== 'DELETED') upsert(obj)
      else {
        const facts = nodeFacts(obj)
        if (facts !== undefined) nodes.delete(facts.name)
      }
    },
  }
}
