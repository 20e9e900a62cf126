// The cold path's targets (issue 14: a miss costs little more than its hash),
// judged from figures measured in the same run, and the check that nothing
// else moved: the figures recorded in bench/recorded.json, each with the
// allowance this machine's run-to-run spread needs.
import { readFileSync } from 'node:fs'
import { col, fmt, fmtRatio, median, ratio, walls, type FanRound, type Row, type SystemKey } from './table.js'

export interface ColdPathFigures {
  /** sha256 CPU s/GB of this machine, measured in this run */
  sha256PerGB: number
  clients: number
  blobMB: string
  imageBytes: number
  imageMB: string
  cold?: Record<SystemKey, FanRound[]>
  warm?: Record<SystemKey, FanRound[]>
  paced?: { alone: number[]; rounds: Record<SystemKey, FanRound[]> }
  containerd?: {
    direct: number[]
    cold: Record<SystemKey, number[]>
    /** CPU seconds of the mirror's processes per cold pull */
    coldCpu: Record<SystemKey, number[]>
    /** busy cores of the whole machine during each pull */
    directCores: number[]
    coldCores: Record<SystemKey, number[]>
  }
}

const cores = (rs: FanRound[]): string => fmt(median(rs.map((r) => r.machineCores)))

/** The rows of the cold path's targets that this run has the figures for. */
export function coldPathRows(f: ColdPathFigures): Row[] {
  const rows: Row[] = []
  const ctr = f.containerd
  if (ctr !== undefined) {
    const perGB = col((k) => median(ctr.coldCpu[k].map((s) => s / (f.imageBytes / 1e9))))
    rows.push({
      figure: `cold path CPU of the mirror (all its threads and the kernel's work for it), containerd pulling ${f.imageMB}: s per GB (× the sha256 floor)`,
      baseline: `${fmt(f.sha256PerGB)} sha256 floor`,
      cells: col((k) => `${fmt(perGB[k])} (${fmtRatio(perGB[k] / f.sha256PerGB)})`),
      target: '≤ 2.5 s per GB',
      met: perGB.stevedore <= 2.5,
    })
    const vsDirect = col((k) => ratio(ctr.cold[k], ctr.direct))
    rows.push({
      figure: `containerd cold pull of ${f.imageMB} via the mirror: s (× direct); machine cores busy`,
      baseline: `${fmt(median(ctr.direct))} direct; ${fmt(median(ctr.directCores))} cores`,
      cells: col((k) => `${fmt(median(ctr.cold[k]))} (${fmtRatio(vsDirect[k])}); ${fmt(median(ctr.coldCores[k]))} cores`),
      target: '≤ 1.15 × direct (moonshot 1.05×)',
      met: vsDirect.stevedore <= 1.15,
      moonshot: vsDirect.stevedore <= 1.05,
    })
  }
  const { cold, warm, paced } = f
  if (cold !== undefined && warm !== undefined) {
    const vsWarm = col((k) => ratio(walls(cold[k]), walls(warm[k])))
    rows.push({
      figure: `cold fan-out, ${f.clients} × ${f.blobMB}: s (× its own warm fan-out); machine cores busy, cold / warm`,
      baseline: '',
      cells: col((k) => `${fmt(median(walls(cold[k])))} (${fmtRatio(vsWarm[k])}); ${cores(cold[k])} / ${cores(warm[k])}`),
      target: '≤ 1.3 × own warm fan-out (moonshot 1.1×)',
      met: vsWarm.stevedore <= 1.3,
      moonshot: vsWarm.stevedore <= 1.1,
    })
  }
  if (paced !== undefined && warm !== undefined) {
    // per round: the link alone or the loopback's delivery of the warm bytes, whichever is longer
    const bound = (k: SystemKey): number[] => paced.alone.map((a, i) => Math.max(a, warm[k][i]?.wall ?? NaN))
    const vsBound = col((k) => ratio(walls(paced.rounds[k]), bound(k)))
    rows.push({
      figure: `behind the link, ${f.clients} × ${f.blobMB}: s (× max(one client alone, its own warm fan-out)); machine cores busy`,
      baseline: `${fmt(median(paced.alone))} alone`,
      cells: col((k) => `${fmt(median(walls(paced.rounds[k])))} (${fmtRatio(vsBound[k])}); ${cores(paced.rounds[k])}`),
      target: '≤ 1.25 × max(alone, warm fan-out)',
      met: vsBound.stevedore <= 1.25,
    })
  }
  return rows
}

/** Stevedore's figures this run measured, for the comparison with the recorded ones; NaN where the section did not run. */
export interface CurrentFigures {
  warmMBps: number
  warmCpuPerGB: number
  manifestTagRps: number
  manifestDigestRps: number
  rss50MiB: number
  coldTtfbMaxS: number
  pacedTtfbMaxS: number
  stalledPeakMiB: number
  stalledFreshLoadedVsAlone: number
  rolloutColdVsFloor: number
  rolloutPrefetchedVsFloor: number
}

export interface Recorded {
  /** where the figures come from */
  source: string
  figures: Record<keyof CurrentFigures, number>
}

/** How far a figure may move before it counts as a regression: this machine's spread between runs of unchanged code. */
const ALLOWANCE: Record<keyof CurrentFigures, { label: string; unit: string; higherIsBetter: boolean; factor?: number; plus?: number }> = {
  warmMBps: { label: 'warm fan-out, aggregate MB/s', unit: 'MB/s', higherIsBetter: true, factor: 0.85 },
  warmCpuPerGB: { label: 'warm fan-out, CPU s per GB', unit: 's/GB', higherIsBetter: false, factor: 1.2 },
  manifestTagRps: { label: 'manifest by tag, req/s', unit: 'req/s', higherIsBetter: true, factor: 0.85 },
  manifestDigestRps: { label: 'manifest by digest, req/s', unit: 'req/s', higherIsBetter: true, factor: 0.85 },
  rss50MiB: { label: 'peak RSS, 50 streams, MiB', unit: 'MiB', higherIsBetter: false, factor: 1.1 },
  coldTtfbMaxS: { label: 'cold fan-out, max time to first byte, s', unit: 's', higherIsBetter: false, plus: 0.1 },
  pacedTtfbMaxS: { label: 'behind the link, max time to first byte, s', unit: 's', higherIsBetter: false, plus: 0.1 },
  stalledPeakMiB: { label: '300 stalled readers, peak RSS, MiB', unit: 'MiB', higherIsBetter: false, factor: 1.1 },
  stalledFreshLoadedVsAlone: { label: 'stalled readers, fresh client under load × alone', unit: '×', higherIsBetter: false, plus: 0.2 },
  rolloutColdVsFloor: { label: 'rollout to 6 nodes, cold × floor', unit: '×', higherIsBetter: false, plus: 0.1 },
  rolloutPrefetchedVsFloor: { label: 'rollout to 6 nodes, after prefetch × floor', unit: '×', higherIsBetter: false, plus: 0.1 },
}

export function loadRecorded(path = new URL('./recorded.json', import.meta.url)): Recorded {
  return JSON.parse(readFileSync(path, 'utf8')) as Recorded
}

/** One row per figure this run measured: recorded → now, met while within its allowance. */
export function regressionRows(now: CurrentFigures, recorded: Recorded): Row[] {
  const rows: Row[] = []
  for (const key of Object.keys(ALLOWANCE) as (keyof CurrentFigures)[]) {
    const value = now[key]
    const was = recorded.figures[key]
    if (!Number.isFinite(value) || !Number.isFinite(was)) continue
    const a = ALLOWANCE[key]
    const limit = a.factor !== undefined ? was * a.factor : was + (a.higherIsBetter ? -(a.plus ?? 0) : (a.plus ?? 0))
    const bound = `${a.higherIsBetter ? '≥' : '≤'} ${fmt(limit)}`
    rows.push({
      figure: `no regression: ${a.label} (recorded → now)`,
      baseline: `${fmt(was)} recorded`,
      cells: { stevedore: `${fmt(was)} → ${fmt(value)}`, distribution: '', nginx: '' },
      target: `${bound} (${a.factor !== undefined ? `${fmtRatio(a.factor)} recorded` : `recorded ${a.higherIsBetter ? '−' : '+'} ${fmt(a.plus ?? 0)}`})`,
      met: a.higherIsBetter ? value >= limit : value <= limit,
    })
  }
  return rows
}
