// The soak's workloads, each a loop until the deadline, and the tally they
// keep: every request's outcome, every fault injected and what the client saw.
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Containerd } from '../test/harness/containerd.js'
import type { FaultProxy } from '../test/harness/fault-proxy.js'
import { fetchAll, fetchHashed } from '../test/harness/http.js'
import { buildImage, pushBlob, pushImage, randomBytesFile } from '../test/harness/images.js'
import type { Mirror } from '../test/harness/mirror.js'
import { rawRequest } from '../test/harness/raw-http.js'
import type { Registry } from '../test/harness/registry.js'
import { sleep } from '../test/harness/tools.js'

/** What happened, by name: `ok`, `survived`, `deliberate` and `problem` counts, and the problems' texts. */
export class Tally {
  readonly counts = new Map<string, number>()
  readonly problems: string[] = []

  add(what: string, n = 1): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + n)
  }

  problem(text: string): void {
    this.add('problem')
    if (this.problems.length < 50) this.problems.push(text)
  }
}

export interface SoakRig {
  readonly work: string
  readonly registry: Registry
  readonly faults: FaultProxy
  /** plain, restarted with SIGTERM and kill -9 */
  readonly open: Mirror
  /** asks for client credentials, never restarted: its memory series is the flat one */
  readonly locked: Mirror
  readonly authorization: string
  readonly containerd: Containerd
  readonly hostsOpen: string
  readonly hostsLocked: string
  /** blobs pushed to the registry (repo soak/blob), by digest */
  readonly blobs: string[]
  /** the big blob slow and stopped readers take */
  readonly big: string
  readonly tally: Tally
  readonly deadline: number
  /** true while the plain mirror is being restarted: refusals and 503s then are deliberate */
  restarting: boolean
  readonly quick: boolean
}

const MB = 1024 * 1024

/** A 5xx is a problem unless the plain mirror is going down on purpose. */
function judge(rig: SoakRig, mirror: Mirror, what: string, status: number): void {
  if (status < 500) return
  if (mirror === rig.open && rig.restarting) rig.tally.add('deliberate: 5xx during a restart')
  else rig.tally.problem(`${what}: ${status}`)
}

/**
 * containerd pulls of a new image: cold, then warm, through each mirror (the
 * locked one with the header stevedore hosts wrote). A pull that falls back
 * to the registry itself still succeeds: the registry's log tells those apart.
 */
export async function containerdPulls(rig: SoakRig): Promise<void> {
  for (let n = 0; Date.now() < rig.deadline; n++) {
    const image = await buildImage(join(rig.work, `img-${n}`), { layers: rig.quick ? [1 * MB, 256 * 1024] : [8 * MB, 2 * MB, 512 * 1024] })
    await pushImage(rig.registry, 'soak/app', `v${n}`, image)
    // The registry has it now; 30 minutes of images would fill the disk.
    await rm(join(rig.work, `img-${n}`), { recursive: true, force: true })
    for (const [name, hostsDir] of [['plain', rig.hostsOpen], ['locked', rig.hostsLocked]] as const) {
      for (const temperature of ['cold', 'warm']) {
        await rig.containerd.clean()
        const pulled = await rig.containerd.pull(`${rig.registry.host}/soak/app:v${n}`, { hostsDir, timeoutMs: 120_000 })
        if (pulled.code === 0) rig.tally.add(`containerd pull through the ${name} mirror, ${temperature}`)
        else rig.tally.problem(`containerd pull through the ${name} mirror: ${pulled.stderr.slice(0, 300)}`)
      }
    }
  }
}

/** Blob GETs by digest through both mirrors, hashed; strangers at the locked one. */
export async function blobGets(rig: SoakRig): Promise<void> {
  for (let n = 0; Date.now() < rig.deadline; n++) {
    const digest = rig.blobs[n % rig.blobs.length] as string
    for (const mirror of [rig.open, rig.locked]) {
      const headers = mirror === rig.locked ? { authorization: rig.authorization } : undefined
      try {
        const got = await fetchHashed(`${mirror.url}/v2/soak/blob/blobs/${digest}`, headers !== undefined ? { headers } : {})
        judge(rig, mirror, `blob GET ${digest.slice(7, 19)}`, got.status)
        if (got.status === 200 && got.error === undefined && got.digest !== digest) rig.tally.problem(`blob ${digest}: served ${got.digest}`)
        else if (got.status === 200 && got.error === undefined) rig.tally.add('blob GET, verified')
        else if (mirror === rig.open && rig.restarting) rig.tally.add('deliberate: cut by a restart')
        else if (got.status === 200) rig.tally.problem(`blob ${digest.slice(7, 19)} cut: ${String(got.error)}`)
        else if (got.status < 500) rig.tally.problem(`blob GET ${digest.slice(7, 19)} through the ${mirror === rig.open ? 'plain' : 'locked'} mirror: ${got.status}`)
      } catch (err) {
        if (mirror === rig.open && rig.restarting) rig.tally.add('deliberate: refused during a restart')
        else rig.tally.problem(`blob GET: ${String(err)}`)
      }
    }
    const stranger = await fetchAll(`${rig.locked.url}/v2/soak/blob/blobs/${digest}`)
    if (stranger.status === 401) rig.tally.add('stranger refused with 401')
    else rig.tally.problem(`a stranger got ${stranger.status}`)
    await sleep(rig.quick ? 100 : 250)
  }
}

/**
 * Readers at 200 KB/s on the big blob, steadily (curl --limit-rate reads a
 * socket's worth at once, then sleeps for many seconds: a stopped reader, by
 * the mirror's measure): served for as long as they read.
 */
export async function slowReaders(rig: SoakRig): Promise<void> {
  const rate = 200_000
  while (Date.now() < rig.deadline) {
    const holdMs = rig.quick ? 6000 : 15_000
    const reader = rawRequest(rig.locked.port, `/v2/soak/blob/blobs/${rig.big}`, { headers: { authorization: rig.authorization } })
    try {
      const head = await reader.head
      reader.throttle(rate)
      let cut = false
      void reader.closed.then((end) => (cut = end.closedByPeer))
      await sleep(holdMs)
      const bytes = reader.bodyBytes()
      if (head.status === 200 && !cut && bytes >= (rate * holdMs) / 2000) rig.tally.add('slow reader served until it left')
      else rig.tally.problem(`slow reader: status ${head.status}, ${cut ? 'cut by the mirror' : 'open'}, ${bytes} bytes in ${holdMs} ms`)
    } catch (err) {
      rig.tally.problem(`slow reader: ${String(err)}`)
    } finally {
      reader.close()
    }
    await sleep(1000)
  }
}

/** Readers that stop after 1 MB: the mirror must drop them, and only them. */
export async function stoppedReaders(rig: SoakRig, writeTimeoutMs: number, bigSize: number): Promise<void> {
  while (Date.now() < rig.deadline) {
    const reader = rawRequest(rig.locked.port, `/v2/soak/blob/blobs/${rig.big}`, { headers: { authorization: rig.authorization } })
    try {
      const head = await reader.head
      if (head.status !== 200) throw new Error(`status ${head.status}`)
      while (reader.bodyBytes() < MB) await sleep(10)
      reader.socket.pause()
      // The kernel's buffers fill, the write stalls, then writeTimeout (and an eighth more) passes.
      await sleep(writeTimeoutMs * 2 + 5000)
      reader.socket.resume()
      const end = await Promise.race([reader.closed, sleep(30_000).then(() => undefined)])
      if (end?.closedByPeer === true && end.body.byteLength < bigSize) rig.tally.add('stopped reader dropped by the mirror')
      else rig.tally.problem(`a stopped reader was not dropped (${end === undefined ? 'still open' : `${end.body.byteLength} bytes`})`)
    } catch (err) {
      rig.tally.problem(`stopped reader: ${String(err)}`)
    } finally {
      reader.close()
    }
    await sleep(rig.quick ? 500 : 5000)
  }
}

/** Faults on the second upstream: a body cut at byte N (resumed), a 429 with Retry-After (kept). */
export async function upstreamFaults(rig: SoakRig): Promise<void> {
  for (let n = 0; Date.now() < rig.deadline; n++) {
    const path = join(rig.work, `fault-blob-${n}`)
    const digest = await randomBytesFile(path, rig.quick ? 3 * MB : 12 * MB)
    await pushBlob(rig.registry, 'soak/faulty', path, digest)
    await rm(path, { force: true })
    const url = `${rig.locked.url}/v2/soak/faulty/blobs/${digest}?ns=${encodeURIComponent(rig.faults.host)}`
    const headers = { authorization: rig.authorization }
    if (n % 2 === 0) {
      rig.faults.add({ method: 'GET', pathIncludes: digest, fault: { kind: 'cut', afterBytes: MB + 123 }, times: 1 })
      const got = await fetchHashed(url, { headers })
      if (got.status === 200 && got.error === undefined && got.digest === digest) rig.tally.add('survived: upstream cut at byte N, resumed')
      else rig.tally.problem(`cut upstream: ${got.status} ${String(got.error)} ${got.digest}`)
    } else {
      rig.faults.add({ method: 'GET', pathIncludes: `/blobs/${digest}`, fault: { kind: 'status', status: 429, headers: { 'retry-after': '2' } }, times: 1 })
      const first = await fetchAll(url, { headers })
      if (first.status === 429) rig.tally.add('deliberate: 429 passed on with Retry-After')
      else if (first.status !== 200) rig.tally.problem(`429 upstream: the client got ${first.status}`)
      await sleep(2500)
      const again = await fetchHashed(url, { headers })
      if (again.status === 200 && again.digest === digest) rig.tally.add('survived: 429 with Retry-After, then served')
      else rig.tally.problem(`after the 429 pause: ${again.status}`)
    }
    await sleep(rig.quick ? 1000 : 5000)
  }
}

/** SIGTERM and kill -9 in turn, the plain mirror serving all the while. */
export async function restarts(rig: SoakRig, everyMs: number): Promise<void> {
  for (let n = 0; ; n++) {
    await sleep(everyMs)
    if (Date.now() + 10_000 > rig.deadline) return
    const signal = n % 2 === 0 ? 'SIGTERM' : 'SIGKILL'
    rig.restarting = true
    try {
      const exit = await rig.open.stop(signal)
      if (signal === 'SIGTERM' && exit.code !== 0) rig.tally.problem(`SIGTERM: exit ${exit.code} ${exit.signal}`)
      else rig.tally.add(signal === 'SIGTERM' ? 'survived: SIGTERM, exit 0, restarted' : 'survived: kill -9, restarted')
      await rig.open.start()
    } catch (err) {
      rig.tally.problem(`restart: ${String(err)}`)
    } finally {
      // Requests cut by the restart may still be returning.
      await sleep(2000)
      rig.restarting = false
    }
  }
}
