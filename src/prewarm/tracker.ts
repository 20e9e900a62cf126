// The workloads of the cluster as pre-warming keeps them: per kind, per
// `namespace/name`, the image references and the pre-pull flag, nothing else.
import type { ResourceSink, WatchEventType } from './watch.js'
import { namespaceOf, objectKey, workloadImages, WORKLOAD_KINDS, type WorkloadImages, type WorkloadKind } from './workloads.js'

export interface TrackerOptions {
  /** Only these namespaces (all when unset). */
  readonly namespaces?: readonly string[] | undefined
  readonly excludeNamespaces?: readonly string[] | undefined
  /**
   * A workload seen after its kind's first list (added, changed, or found
   * changed by a relist) names references it did not name before. `seenAt`
   * is performance.now() when the change arrived.
   */
  readonly onNewImages: (workload: string, images: readonly string[], seenAt: number) => void
  /** A kind's first list is complete. */
  readonly onSynced: (kind: WorkloadKind) => void
}

interface KindState {
  readonly workloads: Map<string, WorkloadImages>
  /** Keys listed by the list in progress; undefined between lists. */
  listing: Set<string> | undefined
  synced: boolean
}

export class WorkloadTracker {
  private readonly kinds = new Map<WorkloadKind, KindState>()
  private readonly include: ReadonlySet<string> | undefined
  private readonly exclude: ReadonlySet<string>

  constructor(private readonly options: TrackerOptions) {
    for (const kind of WORKLOAD_KINDS) this.kinds.set(kind, { workloads: new Map(), listing: undefined, synced: false })
    this.include = options.namespaces !== undefined ? new Set(options.namespaces) : undefined
    this.exclude = new Set(options.excludeNamespaces ?? [])
  }

  /** Where a kind's list and watch deliver. */
  sink(kind: WorkloadKind): ResourceSink {
    const state = this.state(kind)
    return {
      listStarted: () => {
        state.listing = new Set()
      },
      listed: (obj) => {
        const key = this.upsert(kind, state, obj, state.synced)
        if (key !== undefined) state.listing?.add(key)
      },
      listDone: () => {
        const listed = state.listing ?? new Set<string>()
        for (const key of [...state.workloads.keys()]) if (!listed.has(key)) state.workloads.delete(key)
        state.listing = undefined
        if (!state.synced) {
          state.synced = true
          this.options.onSynced(kind)
        }
      },
      event: (type: WatchEventType, obj) => {
        if (type === 'DELETED') {
          const key = objectKey(obj)
          if (key !== undefined) state.workloads.delete(key)
        } else {
          this.upsert(kind, state, obj, true)
        }
      },
    }
  }

  /** Every kind has been listed once. */
  get synced(): boolean {
    return [...this.kinds.values()].every((s) => s.synced)
  }

  get size(): number {
    let n = 0
    for (const s of this.kinds.values()) n += s.workloads.size
    return n
  }

  /** Distinct references over every workload kept. */
  images(): string[] {
    const images = new Set<string>()
    for (const s of this.kinds.values()) for (const w of s.workloads.values()) for (const i of w.images) images.add(i)
    return [...images]
  }

  /** Distinct references of the workloads annotated for pre-pulling. */
  prepullImages(): string[] {
    const images = new Set<string>()
    for (const s of this.kinds.values()) for (const w of s.workloads.values()) if (w.prepull) for (const i of w.images) images.add(i)
    return [...images]
  }

  /** What is kept of one workload (tests, debugging). */
  get(kind: WorkloadKind, key: string): WorkloadImages | undefined {
    return this.state(kind).workloads.get(key)
  }

  private upsert(kind: WorkloadKind, state: KindState, obj: unknown, announce: boolean): string | undefined {
    const key = objectKey(obj)
    if (key === undefined) return undefined
    if (!this.wanted(namespaceOf(obj))) {
      state.workloads.delete(key)
      return undefined
    }
    const seenAt = performance.now()
    const next = workloadImages(kind, obj)
    const before = state.workloads.get(key)
    state.workloads.set(key, next)
    if (announce) {
      const known = new Set(before?.images ?? [])
      const added = next.images.filter((i) => !known.has(i))
      if (added.length > 0) this.options.onNewImages(`${kind} ${key}`, added, seenAt)
    }
    return key
  }

  private wanted(namespace: string): boolean {
    return (this.include === undefined || this.include.has(namespace)) && !this.exclude.has(namespace)
  }

  private state(kind: WorkloadKind): KindState {
    const state = this.kinds.get(kind)
    if (state === undefined) throw new Error(`not a workload kind: ${kind}`)
    return state
  }
}
