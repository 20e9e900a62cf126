// Rendezvous hashing: balance, minimal movement when members come and go,
// and no dependence on the order members are listed in.
import { createHash, randomBytes } from 'node:crypto'
import fc from 'fast-check'
import t from 'tap'
import { ownerOf, weightOf } from '../../src/cluster/ring.js'

const DIGESTS = 10_000
// Fresh every run: the bounds below are many standard deviations wide (±15% of 1000 is about 5σ), so they hold for any draw.
const seed = randomBytes(8).toString('hex')
const digests = Array.from({ length: DIGESTS }, (_, i) => `sha256:${createHash('sha256').update(`${seed}/${i}`).digest('hex')}`)
const membersOf = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `http://10.0.3.${from + i + 1}:5000`)

const ownersOf = (members: readonly string[]): string[] => digests.map((d) => ownerOf(d, members) ?? '')

const within = (value: number, mean: number): boolean => Math.abs(value - mean) <= 0.15 * mean

t.test('no members, one member', async (t) => {
  t.equal(ownerOf('sha256:abc', []), undefined)
  t.equal(ownerOf('sha256:abc', ['http://10.0.3.1:5000']), 'http://10.0.3.1:5000')
})

for (const r of [3, 5, 10]) {
  t.test(`${r} members: each owns about 1/${r}`, async (t) => {
    const members = membersOf(r)
    const counts = new Map(members.map((m) => [m, 0]))
    for (const owner of ownersOf(members)) counts.set(owner, (counts.get(owner) ?? 0) + 1)
    t.same([...counts.keys()].sort(), [...members].sort(), 'every digest has a member of the list for owner')
    const mean = DIGESTS / r
    for (const [member, n] of counts) t.ok(within(n, mean), `${member} owns ${n} (mean ${mean})`)
  })

  t.test(`${r} members: removing one moves exactly the digests it owned`, async (t) => {
    const members = membersOf(r)
    const before = ownersOf(members)
    const gone = members[1] ?? ''
    const after = ownersOf(members.filter((m) => m !== gone))
    let moved = 0
    let movedOthers = 0
    for (let i = 0; i < DIGESTS; i++) {
      if (before[i] !== after[i]) moved++
      if (before[i] !== gone && before[i] !== after[i]) movedOthers++
      if (before[i] === gone && after[i] === gone) t.fail(`digest ${i} still owned by the member that left`)
    }
    t.equal(movedOthers, 0, 'nothing owned by the others moved')
    t.equal(moved, before.filter((o) => o === gone).length, 'every digest of the one gone moved')
    t.ok(within(moved, DIGESTS / r), `${moved} of ${DIGESTS} moved (about 1/${r})`)
  })

  t.test(`${r} members: adding one moves about 1/${r + 1}, all to the new member`, async (t) => {
    const members = membersOf(r)
    const added = membersOf(1, r)[0] ?? ''
    const before = ownersOf(members)
    const after = ownersOf([...members, added])
    let moved = 0
    let elsewhere = 0
    for (let i = 0; i < DIGESTS; i++) {
      if (before[i] === after[i]) continue
      moved++
      if (after[i] !== added) elsewhere++
    }
    t.equal(elsewhere, 0, 'every digest that moved went to the new member')
    t.ok(within(moved, DIGESTS / (r + 1)), `${moved} of ${DIGESTS} moved (about 1/${r + 1})`)
  })
}

t.test('the order of the member list does not matter; duplicates change nothing', async (t) => {
  const pool = [...membersOf(8), 'https://[fd00::1]:5443', 'http://stevedore-0.peers:5000']
  fc.assert(fc.property(
    fc.string({ minLength: 1, maxLength: 80 }),
    fc.shuffledSubarray(pool, { minLength: 1 }),
    fc.nat(),
    (key, members, rotation) => {
      const owner = ownerOf(key, members)
      const rotated = members.map((_, i) => members[(i + rotation) % members.length] ?? '')
      const reversed = [...members].reverse()
      const doubled = [...members, ...reversed]
      return owner !== undefined && members.includes(owner) &&
        ownerOf(key, rotated) === owner && ownerOf(key, reversed) === owner && ownerOf(key, doubled) === owner
    },
  ), { numRuns: 2000 })
  t.pass('held')
})

t.test('the owner is the member of highest weight, and weights are per (member, key)', async (t) => {
  const members = membersOf(5)
  for (const d of digests.slice(0, 200)) {
    const owner = ownerOf(d, members) ?? ''
    const top = members.reduce((a, b) => (weightOf(d, b) > weightOf(d, a) ? b : a))
    t.equal(owner, top)
  }
  t.not(weightOf('sha256:a', members[0] ?? ''), weightOf('sha256:b', members[0] ?? ''), 'another key, another weight')
  t.not(weightOf('sha256:a', members[0] ?? ''), weightOf('sha256:a', members[1] ?? ''), 'another member, another weight')
})
