// Who is in the ring now: this replica, and the peers that answered their
// last health probe. Peers come from a static list or from a headless
// Service's DNS records. A peer is out until it has answered once, and out
// again at its first failed probe or when a forwarder could not reach it:
// forwarding to a dead owner costs a pull its connect timeout, while leaving
// a live one out only costs one more upstream fetch.
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import type { Logger } from 'pino'

/** Addresses (IPv4 or IPv6 text) for a host name. */
export type Resolver = (host: string) => Promise<string[]>
/** Whether the peer at `origin` is healthy; it should give up when `signal` aborts. */
export type Probe = (origin: string, signal: AbortSignal) => Promise<boolean>

export interface MembershipOptions {
  readonly self: string
  readonly peers?: readonly string[]
  readonly discovery?: { host: string; port: number; scheme: 'http' | 'https' }
  /** Default: the system resolver (getaddrinfo, as every other client on the pod resolves). */
  readonly resolve?: Resolver
  readonly probe: Probe
  readonly healthIntervalMs: number
  readonly discoveryIntervalMs: number
  /** A probe not answered by then has failed, whether or not the probe function honours its signal. */
  readonly probeTimeoutMs: number
  readonly log: Logger
  /** Called with live() each time it changes. */
  readonly onChange?: (live: readonly string[]) => void
}

const systemResolver: Resolver = async (host) => (await lookup(host, { all: true })).map((a) => a.address)

/** `text` as URL spells its origin, so that one address is one string however it was written. */
function normalOrigin(text: string): string {
  return URL.canParse(text) ? new URL(text).origin : text
}

function originOf(scheme: string, address: string, port: number): string | undefined {
  const text = `${scheme}://${isIP(address) === 6 ? `[${address}]` : address}:${port}`
  // A scoped IPv6 address (fe80::1%eth0) has no URL form; pod IPs never are.
  return URL.canParse(text) ? new URL(text).origin : undefined
}

/** Settles as `work` does, or rejects when `signal` aborts first: a probe that ignores its signal cannot hold a round. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason)
      return
    }
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

interface PeerState {
  live: boolean
  /** Bumped by markDown: a probe that started before it cannot bring the peer back. */
  generation: number
  probing: Probing | undefined
}

/** A probe in flight: how to abort it, and when it has ended. */
interface Probing {
  readonly controller: AbortController
  done: Promise<void>
}

/** The replicas currently in the ring, kept up to date by probes and discovery. */
export class Membership {
  /** Resolves after the first round of probes (or at once when there are no peers); for start-up and tests. */
  readonly ready: Promise<void>
  private readonly self: string
  private readonly peers = new Map<string, PeerState>()
  private readonly resolve: Resolver
  private readonly stopping = new AbortController()
  private readonly running = new Set<Promise<void>>()
  private readonly timers: NodeJS.Timeout[] = []
  private markReady: () => void = () => undefined
  private liveList: readonly string[]
  private started = false
  private resolving = false
  private resolveFailing = false

  constructor(private readonly options: MembershipOptions) {
    this.self = normalOrigin(options.self)
    this.resolve = options.resolve ?? systemResolver
    this.liveList = [this.self]
    this.ready = new Promise((resolve) => {
      this.markReady = resolve
    })
    for (const peer of options.peers ?? []) {
      const origin = normalOrigin(peer)
      if (origin !== this.self) this.peers.set(origin, { live: false, generation: 0, probing: undefined })
    }
  }

  /** Starts discovery and probing; the first round runs at once. Timers never hold the process open. */
  start(): void {
    if (this.started || this.stopping.signal.aborted) return
    this.started = true
    this.track((async () => {
      if (this.options.discovery !== undefined) await this.discover()
      await this.probeAll()
      this.markReady()
    })())
    this.timers.push(setInterval(() => void this.probeAll(), this.options.healthIntervalMs).unref())
    if (this.options.discovery !== undefined) {
      this.timers.push(setInterval(() => void this.discover(), this.options.discoveryIntervalMs).unref())
    }
  }

  /** Clears timers, aborts running probes and resolves once they have ended. */
  async stop(): Promise<void> {
    for (const timer of this.timers.splice(0)) clearInterval(timer)
    this.stopping.abort()
    await Promise.allSettled([...this.running])
    this.markReady()
  }

  /** Self and the peers currently healthy, sorted; self always present. */
  live(): readonly string[] {
    return this.liveList
  }

  /** Every peer known (healthy or not), sorted; self is not among them. */
  known(): readonly string[] {
    return [...this.peers.keys()].sort()
  }

  /** A forwarder could not reach it: out of the ring at once, until its next probe succeeds. */
  markDown(origin: string): void {
    const peer = this.peers.get(normalOrigin(origin))
    if (peer === undefined) return
    peer.generation++
    if (peer.live) {
      peer.live = false
      this.changed([], [normalOrigin(origin)], 'unreachable')
    }
  }

  private track(work: Promise<void>): Promise<void> {
    this.running.add(work)
    void work.finally(() => this.running.delete(work))
    return work
  }

  /** Probes every known peer not already being probed; resolves when each peer's current probe has ended. */
  private probeAll(): Promise<unknown> {
    if (this.stopping.signal.aborted) return Promise.resolve()
    return Promise.all([...this.peers].map(([origin, peer]) => peer.probing?.done ?? this.probeOne(origin, peer)))
  }

  private probeOne(origin: string, peer: PeerState): Promise<void> {
    // Set before the probe runs: a probe that fails at once must still find itself here to clear.
    const probing = { controller: new AbortController(), done: Promise.resolve() }
    peer.probing = probing
    probing.done = this.track(this.runProbe(origin, peer, probing))
    return probing.done
  }

  private async runProbe(origin: string, peer: PeerState, probing: Probing): Promise<void> {
    const { controller } = probing
    const generation = peer.generation
    // Not unref'd, unlike the intervals: it is short, always cleared, and keeps a probe that ignores its signal from hanging `ready`.
    const timeout = setTimeout(() => controller.abort(new Error(`no answer within ${this.options.probeTimeoutMs} ms`)), this.options.probeTimeoutMs)
    const onStop = (): void => controller.abort(this.stopping.signal.reason)
    this.stopping.signal.addEventListener('abort', onStop, { once: true })
    let healthy = false
    try {
      healthy = await untilAborted(this.options.probe(origin, controller.signal), controller.signal)
    } catch (err) {
      this.options.log.debug({ peer: origin, err }, 'cluster: peer probe failed')
    } finally {
      clearTimeout(timeout)
      this.stopping.signal.removeEventListener('abort', onStop)
      if (peer.probing === probing) peer.probing = undefined
    }
    // Gone from discovery or stopped meanwhile: the answer is about nothing we still track.
    if (this.stopping.signal.aborted || this.peers.get(origin) !== peer) return
    if (healthy && peer.generation !== generation) return
    if (peer.live === healthy) return
    peer.live = healthy
    if (healthy) this.changed([origin], [], 'probe answered')
    else this.changed([], [origin], 'probe failed')
  }

  /** Resolves discovery once: addresses gone leave at once, new ones are probed at once; a failure keeps the last list. */
  private async discover(): Promise<void> {
    const discovery = this.options.discovery
    if (discovery === undefined || this.resolving || this.stopping.signal.aborted) return
    this.resolving = true
    let addresses: string[]
    try {
      addresses = await untilAborted(this.resolve(discovery.host), this.stopping.signal)
    } catch (err) {
      if (this.stopping.signal.aborted) return
      if (!this.resolveFailing) this.options.log.warn({ host: discovery.host, err }, 'cluster: peer discovery failed; keeping the last known peers')
      this.resolveFailing = true
      return
    } finally {
      this.resolving = false
    }
    if (this.stopping.signal.aborted) return
    if (this.resolveFailing) this.options.log.info({ host: discovery.host }, 'cluster: peer discovery resolves again')
    this.resolveFailing = false
    const found = new Set<string>()
    for (const address of addresses) {
      const origin = originOf(discovery.scheme, address, discovery.port)
      if (origin !== undefined && origin !== this.self) found.add(origin)
    }
    const left: string[] = []
    for (const [origin, peer] of this.peers) {
      if (found.has(origin)) continue
      this.peers.delete(origin)
      peer.probing?.controller.abort(new Error('gone from discovery'))
      if (peer.live) left.push(origin)
    }
    if (left.length > 0) this.changed([], left, 'gone from discovery')
    for (const origin of found) {
      if (this.peers.has(origin)) continue
      const peer: PeerState = { live: false, generation: 0, probing: undefined }
      this.peers.set(origin, peer)
      // Probed now rather than at the next health tick: a new replica should share the load as soon as it answers.
      void this.probeOne(origin, peer)
    }
  }

  private changed(joined: readonly string[], left: readonly string[], why: string): void {
    this.liveList = [this.self, ...[...this.peers].filter(([, p]) => p.live).map(([o]) => o)].sort()
    this.options.log.info({ joined, left, live: this.liveList, why }, 'cluster: membership changed')
    try {
      this.options.onChange?.(this.liveList)
    } catch (err) {
      this.options.log.error({ err }, 'cluster: membership change listener failed')
    }
  }
}
