// Membership over a fake resolver and a fake probe: who is live when, what is
// logged, and that stop() leaves nothing running (tap would time out).
import type { Test } from 'tap'
import t from 'tap'
import { Membership, type MembershipOptions } from '../../src/cluster/membership.js'
import { waitFor, sleep } from '../harness/tools.js'
import { capturedLogger, FakeProbe, FakeResolver } from './fakes/cluster.js'

const SELF = 'http://10.0.3.7:5000'
const B = 'http://10.0.3.8:5000'
const C = 'http://10.0.3.9:5000'
const D = 'http://10.0.3.10:5000'
const WAIT_MS = 5_000

interface Started {
  readonly membership: Membership
  readonly probe: FakeProbe
  readonly lines: Array<Record<string, unknown>>
  readonly changes: Array<readonly string[]>
}

function startMembership(t: Test, probe: FakeProbe, options: Partial<MembershipOptions> = {}): Started {
  const { log, lines } = capturedLogger()
  const changes: Array<readonly string[]> = []
  const membership = new Membership({
    self: SELF,
    probe: probe.probe,
    healthIntervalMs: 20,
    discoveryIntervalMs: 20,
    // Well above any event-loop lag under a loaded CI, so that only the fakes decide who is healthy.
    probeTimeoutMs: 1_000,
    log,
    onChange: (live) => changes.push(live),
    ...options,
  })
  t.teardown(() => membership.stop())
  membership.start()
  return { membership, probe, lines, changes }
}

const liveIs = (m: Membership, expected: readonly string[]) => async (): Promise<boolean> => m.live().join() === [...expected].sort().join()
const changeLines = (lines: Array<Record<string, unknown>>) => lines.filter((l) => l['msg'] === 'cluster: membership changed')

t.test('static peers join after their first probe succeeds, not before', async (t) => {
  const probe = new FakeProbe().set(B, 'healthy').set(C, 'healthy').set(D, 'unhealthy')
  probe.hold()
  const { membership, lines, changes } = startMembership(t, probe, { peers: [SELF, B, C, `${D}/`], probeTimeoutMs: 5_000 })
  t.same(membership.live(), [SELF], 'only self before any probe has answered')
  t.same(membership.known(), [D, B, C].sort(), 'every peer known, self not among them, origins normalised')
  await sleep(60)
  t.same(membership.live(), [SELF], 'still only self while the probes are held')
  probe.release()
  await membership.ready
  t.same(membership.live(), [SELF, B, C].sort(), 'after the first round: self and the healthy peers, sorted')
  t.same(changes.at(-1), membership.live(), 'onChange told the new list')
  const joined = changeLines(lines).flatMap((l) => l['joined'] as string[])
  t.same(joined.sort(), [B, C].sort(), 'each join logged at info')
  t.ok(changeLines(lines).every((l) => l['level'] === 30 && Array.isArray(l['left'])), 'one info line with joined and left lists')
})

t.test('a failed probe takes a peer out; a later success puts it back', async (t) => {
  const probe = new FakeProbe().set(B, 'healthy').set(C, 'healthy')
  const { membership, lines } = startMembership(t, probe, { peers: [B, C] })
  await membership.ready
  t.same(membership.live(), [SELF, B, C].sort())
  probe.set(B, 'unhealthy')
  await waitFor(liveIs(membership, [SELF, C]), WAIT_MS, 'B out after one failed probe')
  t.ok(changeLines(lines).some((l) => (l['left'] as string[]).includes(B)), 'the leave is logged')
  probe.set(B, 'throws')
  const calls = probe.count(B)
  await waitFor(async () => probe.count(B) > calls + 2, WAIT_MS, 'more probes of B')
  t.same(membership.live(), [SELF, C], 'a probe that throws is a failure')
  probe.set(B, 'healthy')
  await waitFor(liveIs(membership, [SELF, B, C]), WAIT_MS, 'B back after a success')
  probe.set(C, 'hangs')
  await waitFor(liveIs(membership, [SELF, B]), WAIT_MS, 'C out when its probe times out')
  t.ok(probe.aborted.includes(C), "the timed-out probe's signal was aborted")
})

t.test('a probe that ignores its signal still fails at probeTimeoutMs', async (t) => {
  const probe = new FakeProbe().set(B, 'ignores-signal').set(C, 'healthy')
  const { membership } = startMembership(t, probe, { peers: [B, C], healthIntervalMs: 10_000, probeTimeoutMs: 100 })
  await membership.ready
  t.same(membership.live(), [SELF, C], 'the first round ended without B')
})

t.test('markDown: out at once, back at the next successful probe', async (t) => {
  const probe = new FakeProbe().set(B, 'healthy').set(C, 'healthy')
  const { membership, changes } = startMembership(t, probe, { peers: [B, C], healthIntervalMs: 100 })
  await membership.ready
  const before = changes.length
  membership.markDown(`${B}/`)
  t.same(membership.live(), [SELF, C], 'out synchronously')
  t.same(changes.at(-1), [SELF, C], 'onChange told at once')
  t.equal(changes.length, before + 1)
  membership.markDown(SELF)
  membership.markDown('http://10.9.9.9:5000')
  membership.markDown(B)
  t.equal(changes.length, before + 1, 'self, an unknown origin or a peer already out: nothing changes')
  t.same(membership.live(), [SELF, C], 'self is always live')
  await waitFor(liveIs(membership, [SELF, B, C]), WAIT_MS, 'B back at its next probe')
})

t.test('markDown during a probe: that probe cannot bring the peer back, the next one can', async (t) => {
  const probe = new FakeProbe().set(B, 'healthy')
  const { membership } = startMembership(t, probe, { peers: [B], healthIntervalMs: 200, probeTimeoutMs: 1_000 })
  await membership.ready
  probe.hold()
  const calls = probe.count(B)
  await waitFor(async () => probe.count(B) > calls, WAIT_MS, 'a probe of B in flight')
  membership.markDown(B)
  probe.release()
  await sleep(20)
  t.same(membership.live(), [SELF], 'the answer of a probe sent before markDown is not taken')
  await waitFor(liveIs(membership, [SELF, B]), WAIT_MS, 'B back after a probe sent after markDown')
})

t.test('DNS discovery: addresses join after probes, leave at once when gone from DNS', async (t) => {
  const resolver = new FakeResolver(['10.0.3.7', '10.0.3.8', '10.0.3.9'])
  const probe = new FakeProbe().set(B, 'healthy').set(C, 'healthy').set(D, 'healthy').set('http://[fd00::b]:5000', 'healthy')
  const { membership, lines } = startMembership(t, probe, {
    discovery: { host: 'stevedore-peers.stevedore.svc.cluster.local', port: 5000, scheme: 'http' },
    resolve: resolver.resolve,
  })
  await membership.ready
  t.same(membership.live(), [SELF, B, C].sort(), 'self recognised among the addresses; the others live after their probes')
  t.same(resolver.hosts[0], 'stevedore-peers.stevedore.svc.cluster.local')
  resolver.answer = ['10.0.3.7', '10.0.3.8']
  await waitFor(liveIs(membership, [SELF, B]), WAIT_MS, 'C gone from DNS, gone from the ring')
  t.same(membership.known(), [B], 'and from the known peers')
  t.ok(changeLines(lines).some((l) => (l['left'] as string[]).includes(C) && l['why'] === 'gone from discovery'))
  resolver.answer = ['10.0.3.8', '10.0.3.10', 'fd00:0::b']
  await waitFor(liveIs(membership, [SELF, B, D, 'http://[fd00::b]:5000']), WAIT_MS, 'new addresses join; IPv6 bracketed')
  t.ok(membership.live().includes(SELF), 'self stays live when DNS does not list it (a pod not ready yet)')
  t.equal(probe.count(SELF), 0, 'self never probed')
})

t.test('a resolver failure keeps the last known list; one warn per failure streak', async (t) => {
  const resolver = new FakeResolver(['10.0.3.8', '10.0.3.9'])
  const probe = new FakeProbe().set(B, 'healthy').set(C, 'healthy')
  const { membership, lines } = startMembership(t, probe, {
    discovery: { host: 'peers.svc', port: 5000, scheme: 'http' },
    resolve: resolver.resolve,
  })
  await membership.ready
  t.same(membership.live(), [SELF, B, C].sort())
  const warns = (): number => lines.filter((l) => l['level'] === 40).length
  resolver.answer = Object.assign(new Error('queryA ENOTFOUND peers.svc'), { code: 'ENOTFOUND' })
  let calls = resolver.calls
  await waitFor(async () => resolver.calls > calls + 3, WAIT_MS, 'several failed resolves')
  t.same(membership.live(), [SELF, B, C].sort(), 'the last list kept')
  t.same(membership.known(), [B, C].sort())
  t.equal(warns(), 1, 'warned once for the streak')
  resolver.answer = ['10.0.3.8', '10.0.3.9']
  calls = resolver.calls
  await waitFor(async () => resolver.calls > calls + 1, WAIT_MS, 'a good resolve')
  t.ok(lines.some((l) => l['msg'] === 'cluster: peer discovery resolves again'), 'the recovery told')
  resolver.answer = new Error('timeout')
  calls = resolver.calls
  await waitFor(async () => resolver.calls > calls + 2, WAIT_MS, 'a second streak')
  t.equal(warns(), 2, 'a new streak warns again')
})

t.test('a first resolve that fails: ready anyway, self alone', async (t) => {
  const resolver = new FakeResolver(new Error('SERVFAIL'))
  const { membership } = startMembership(t, new FakeProbe(), { discovery: { host: 'peers.svc', port: 5000, scheme: 'https' }, resolve: resolver.resolve })
  await membership.ready
  t.same(membership.live(), [SELF])
  t.same(membership.known(), [])
})

t.test('no peers: ready at once, self alone, nothing probed', async (t) => {
  const probe = new FakeProbe()
  const { membership } = startMembership(t, probe, { peers: [SELF, `${SELF}/`] })
  await membership.ready
  t.same(membership.live(), [SELF])
  t.same(membership.known(), [])
  await sleep(60)
  t.same(probe.calls, [], 'self is never probed')
})

t.test('a listener that throws does not stop membership', async (t) => {
  const probe = new FakeProbe().set(B, 'healthy')
  const { membership, lines } = startMembership(t, probe, { peers: [B], onChange: () => { throw new Error('listener bug') } })
  await membership.ready
  t.same(membership.live(), [SELF, B])
  t.ok(lines.some((l) => l['msg'] === 'cluster: membership change listener failed'))
})

t.test('stop() clears timers and aborts running probes', async (t) => {
  const resolver = new FakeResolver(['10.0.3.8'])
  const probe = new FakeProbe().set(B, 'hangs')
  const { membership } = startMembership(t, probe, {
    discovery: { host: 'peers.svc', port: 5000, scheme: 'http' },
    resolve: resolver.resolve,
    probeTimeoutMs: 60_000,
  })
  await waitFor(async () => probe.count(B) > 0, WAIT_MS, 'a probe in flight')
  await membership.stop()
  t.ok(probe.aborted.includes(B), 'the running probe was aborted')
  const probes = probe.calls.length
  const resolves = resolver.calls
  await sleep(100)
  t.equal(probe.calls.length, probes, 'no probe after stop')
  t.equal(resolver.calls, resolves, 'no resolve after stop')
  await membership.ready
  t.same(membership.live(), [SELF])
  membership.start()
  await sleep(50)
  t.equal(probe.calls.length, probes, 'a stopped membership does not start again')
  await membership.stop()
  t.pass('stop twice is fine')
})
