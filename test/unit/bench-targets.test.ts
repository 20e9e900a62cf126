// The bench's cold-path targets and regression rows (bench/targets.ts): each
// judged from the figures given, with the allowances recorded.json states.
import t from 'tap'
import { coldPathRows, loadRecorded, regressionRows, type CurrentFigures } from '../../bench/targets.js'
import { sha256SecondsPerGB } from '../../bench/hash-floor.js'
import type { FanRound, SystemKey } from '../../bench/table.js'

const round = (wall: number): FanRound => ({ wall, machineCores: 1.5, cpuPerGB: 1, fullGets: 1, correct: true, ttfbMedian: 0.05, ttfbMax: 0.1, result: { wall, clients: [] } })
const each = <T,>(v: T): Record<SystemKey, T> => ({ stevedore: v, distribution: v, nginx: v })

t.test('cold path rows: CPU per GB, containerd, fan-out vs warm, paced vs max(alone, warm)', async (t) => {
  const rows = coldPathRows({
    sha256PerGB: 0.6,
    clients: 20,
    blobMB: '200 MB',
    imageBytes: 400e6,
    imageMB: '400 MB',
    cold: { ...each([round(3), round(2.5), round(2.6)]) },
    warm: { ...each([round(2), round(2), round(2)]) },
    paced: { alone: [2.1, 2.1, 2.1], rounds: { ...each([round(2.6), round(2.7), round(2.5)]) } },
    containerd: { direct: [4, 4, 4], cold: { ...each([4.4, 4.2, 4.8]) }, coldCpu: { ...each([0.9, 1.0, 1.1]), stevedore: [1.6, 2.0, 2.4] }, directCores: [1.4], coldCores: each([1.5]) },
  })
  t.equal(rows.length, 4)
  const [cpu, ctr, fan, paced] = rows
  t.match(cpu?.baseline, /0\.60 sha256 floor/)
  t.equal(cpu?.met, false, '2.0 CPU-s per 400 MB is 5 s/GB')
  t.match(cpu?.cells.stevedore, /^5\.00 \(8\.33×\)/)
  t.equal(cpu?.cells.nginx.startsWith('2.50'), true)
  t.equal(ctr?.met, true, 'median of 1.10, 1.05, 1.20 is 1.10')
  t.equal(ctr?.moonshot, false)
  t.equal(fan?.met, true, 'median of 1.5, 1.25, 1.3 is 1.3')
  t.equal(fan?.moonshot, false)
  t.equal(paced?.met, true, 'against max(2.1, 2): 2.6/2.1 = 1.24')
  t.end()
})

t.test('a section that did not run gives no row', async (t) => {
  t.same(coldPathRows({ sha256PerGB: 0.6, clients: 20, blobMB: '', imageBytes: 0, imageMB: '' }), [])
  t.equal(coldPathRows({ sha256PerGB: 0.6, clients: 20, blobMB: '', imageBytes: 0, imageMB: '', cold: each([round(1)]) }).length, 0, 'cold without warm has nothing to be a ratio of')
})

t.test('regression rows: within the allowance is met, past it missed; figures not measured are left out', async (t) => {
  const recorded = loadRecorded()
  t.ok(Number.isFinite(recorded.figures.warmMBps))
  const now: CurrentFigures = { ...recorded.figures, warmMBps: recorded.figures.warmMBps * 0.8, rss50MiB: recorded.figures.rss50MiB * 1.05, coldTtfbMaxS: NaN }
  const rows = regressionRows(now, recorded)
  t.equal(rows.length, Object.keys(recorded.figures).length - 1)
  const byLabel = (s: string) => rows.find((r) => r.figure.includes(s))
  t.equal(byLabel('warm fan-out, aggregate')?.met, false, '0.8 × recorded is past 0.85×')
  t.equal(byLabel('peak RSS, 50 streams')?.met, true, '1.05 × recorded is within 1.1×')
  t.equal(byLabel('cold fan-out, max time'), undefined)
  t.equal(rows.filter((r) => r.met === false).length, 1)
})

t.test('the sha256 floor is a plausible CPU cost per GB', async (t) => {
  const perGB = sha256SecondsPerGB(16 * 2 ** 20, 1)
  t.ok(perGB > 0.05 && perGB < 20, `${perGB} s/GB`)
})
