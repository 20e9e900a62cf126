// The report as text: four tables, what the mirror saved, then the size
// advice. The same text on a terminal and in a pipe (no colours, no widths
// taken from the terminal), so it can be pasted into a ticket.
import { formatBytes, shortDigest } from '../../cli/format.js'
import type { DurationStats, PullRecord } from '../types.js'
import type { SizeAdvice } from './advice.js'
import type { ReportDocument, ReportMirror } from './document.js'
import type { MergedSummary } from './merge.js'
import { formatTable } from './table.js'

/** `0.42 s`, `3.21 s`, `42.1 s`, `12m 05s`, `3h 07m`; `-` when unknown. */
export function formatSeconds(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '-'
  if (seconds < 10) return `${seconds.toFixed(2)} s`
  if (seconds < 60) return `${seconds.toFixed(1)} s`
  const whole = Math.round(seconds)
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${String(whole % 60).padStart(2, '0')}s`
  const minutes = Math.round(seconds / 60)
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`
}

/** `91.2%`; `-` for a ratio of nothing. */
export function formatPercent(ratio: number | null | undefined): string {
  return ratio === null || ratio === undefined ? '-' : `${(ratio * 100).toFixed(1)}%`
}

/** `2026-12-02 14:03:05Z`: UTC, to the second, as wide on every row. */
export function formatWhen(iso: string): string {
  const t = new Date(iso)
  return Number.isNaN(t.getTime()) ? iso : `${t.toISOString().slice(0, 19).replace('T', ' ')}Z`
}

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`
const title = (text: string, shown: number, all: number): string => `${text} (${shown < all ? `top ${shown} of ${all}` : all})\n`
const NONE = '  none yet\n'

function header(doc: ReportDocument): string {
  const answered = doc.mirrors.filter((m): m is Extract<ReportMirror, { state: 'merged' }> => m.state === 'merged')
  const lines = [`Stevedore report: ${plural(answered.length, 'replica')} (${answered.map((m) => `${m.instance} at ${m.url}`).join(', ')}), since ${formatWhen(doc.summary.since)}, as of ${formatWhen(doc.summary.now)}`]
  for (const m of doc.mirrors) {
    if (m.state === 'missing') lines.push(`Left out: ${m.url}: ${m.error}`)
    if (m.state === 'duplicate') lines.push(`Counted once: ${m.url} is ${m.instance}, as is ${m.of}`)
  }
  return `${lines.join('\n')}\n`
}

const p = (s: DurationStats, key: 'p50' | 'p95'): string => formatSeconds(s[key])

function topImages(doc: ReportDocument, top: number): string {
  const shown = doc.images.slice(0, top)
  const head = title('Top images by pull-seconds', shown.length, doc.images.length)
  if (shown.length === 0) return head + NONE
  const r = 'right' as const
  return head + formatTable(
    [{ head: 'IMAGE' }, { head: 'PULLS', align: r }, { head: 'COLD', align: r }, { head: 'PARTIAL', align: r }, { head: 'WARM', align: r },
      { head: 'COLD P50', align: r }, { head: 'COLD P95', align: r }, { head: 'WARM P50', align: r }, { head: 'WARM P95', align: r },
      { head: 'SIZE', align: r }, { head: 'LAYERS', align: r }, { head: 'PULL-SECONDS', align: r }],
    shown.map((i) => [i.image, String(i.pulls), String(i.cold), String(i.partial), String(i.warm),
      p(i.coldSeconds, 'p50'), p(i.coldSeconds, 'p95'), p(i.warmSeconds, 'p50'), p(i.warmSeconds, 'p95'),
      formatBytes(i.size), String(i.layerCount), formatSeconds(i.pullSeconds)]),
  )
}

/** Cold and partial pulls (both waited on the upstream), slowest first. */
export function slowestColdPulls(pulls: readonly PullRecord[]): PullRecord[] {
  return pulls.filter((x) => x.cache !== 'warm').sort((a, b) => b.seconds - a.seconds || a.id.localeCompare(b.id))
}

function slowPulls(doc: ReportDocument, top: number): string {
  const all = slowestColdPulls(doc.pulls)
  const shown = all.slice(0, top)
  const head = title('Slowest cold pulls', shown.length, all.length)
  if (shown.length === 0) return head + NONE
  const r = 'right' as const
  return head + formatTable(
    [{ head: 'IMAGE' }, { head: 'CACHE' }, { head: 'CLIENT' }, { head: 'SECONDS', align: r }, { head: 'BYTES', align: r }, { head: 'WHEN' }],
    shown.map((x) => [x.image, x.result === 'failed' ? `${x.cache}, failed` : x.cache, x.client.node ?? x.client.address,
      formatSeconds(x.seconds), formatBytes(x.bytes), formatWhen(x.startedAt)]),
  )
}

const SHARERS_SHOWN = 3

function largestLayers(doc: ReportDocument, top: number): string {
  const shown = doc.layers.slice(0, top)
  const head = title('Largest layers', shown.length, doc.layers.length)
  if (shown.length === 0) return head + NONE
  const r = 'right' as const
  return head + formatTable(
    [{ head: 'LAYER' }, { head: 'SIZE', align: r }, { head: 'IMAGES', align: r }, { head: 'SHARED BY' }],
    shown.map((l) => {
      const names = l.images.slice(0, SHARERS_SHOWN).join(', ')
      const more = l.images.length > SHARERS_SHOWN ? ` +${l.images.length - SHARERS_SHOWN} more` : ''
      return [shortDigest(l.digest), formatBytes(l.size), String(l.images.length), l.images.length > 1 ? names + more : `${names} only`]
    }),
  )
}

function saved(s: MergedSummary, top: number): string {
  const several = s.instances.length > 1
  const cache = `${formatBytes(s.cache.size)}${s.cache.quota !== null ? ` of ${formatBytes(s.cache.quota)} quota (${formatPercent(s.cache.usedRatio)})` : ' (no quota)'}`
  const rows: Array<[string, string]> = [
    ['requests from cache', `${s.requests.hits} of ${s.requests.total} (${formatPercent(s.requests.hitRatio)})`],
    ['bytes from cache', `${formatBytes(s.bytes.fromCache)} of ${formatBytes(s.bytes.served)} served (${formatPercent(s.bytes.hitRatio)}); ${formatBytes(s.bytes.fromUpstream)} from the upstream`],
    ['upstream saved', `${formatBytes(s.upstreamSaved.bytes)} and ${plural(s.upstreamSaved.requests, 'request')} that did not cross the upstream link`],
    ['pulls', `${s.pulls.total}: ${s.pulls.cold} cold, ${s.pulls.partial} partial, ${s.pulls.warm} warm, ${s.pulls.failed} failed; ${plural(s.pulls.resolves, 'resolve')}`],
    ['fills in progress', String(s.fillsInProgress)],
    ['cache', several ? `${cache}: the largest any replica reports (replicas on one bucket share one store)` : cache],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  let out = `What the mirror saved\n${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`
  const upstreams = s.upstreams.slice(0, top)
  if (upstreams.length === 0) return out
  const r = 'right' as const
  out += `  rate-limit budget${several ? ' (the lowest any replica was told)' : ''}:\n`
  out += formatTable(
    [{ head: 'UPSTREAM' }, { head: 'REMAINING', align: r }, { head: 'PAUSED', align: r }, { head: 'ERRORS', align: r }, { head: 'REQUESTS', align: r }],
    upstreams.map((u) => [u.name, u.rateLimitRemaining === null ? 'not announced' : String(u.rateLimitRemaining), u.pausedSeconds > 0 ? formatSeconds(u.pausedSeconds) : '-', String(u.errors), String(u.requests)]),
    '    ',
  )
  return out
}

function advice(a: SizeAdvice, top: number): string {
  const parts: string[] = []
  if (a.dominantLayers.length > 0) {
    const shown = a.dominantLayers.slice(0, top)
    parts.push(`  One layer is most of the image (over ${Math.round(a.dominantShare * 100)}%): slim that layer, or split what changes from what does not:\n` +
      formatTable([{ head: 'IMAGE' }, { head: 'SIZE', align: 'right' }, { head: 'LAYER' }, { head: 'LAYER SIZE', align: 'right' }, { head: 'SHARE', align: 'right' }, { head: 'LAYER IN' }],
        shown.map((d) => [d.image, formatBytes(d.size), shortDigest(d.layer.digest), formatBytes(d.layer.size), `${Math.round(d.share * 100)}%`,
          d.sharedBy > 1 ? plural(d.sharedBy, 'image') : 'this image only']), '    ') +
      (a.dominantLayers.length > shown.length ? `    and ${a.dominantLayers.length - shown.length} more\n` : ''))
  }
  if (a.loneImages.length > 0) {
    const shown = a.loneImages.slice(0, top)
    parts.push('  Sharing no layer with any other image here: a node pulls every byte of them:\n' +
      formatTable([{ head: 'IMAGE' }, { head: 'SIZE', align: 'right' }, { head: 'LAYERS', align: 'right' }, { head: 'BOTTOM LAYER', align: 'right' }],
        shown.map((i) => [i.image, formatBytes(i.size), String(i.layerCount), formatBytes(i.bottomLayer.size)]), '    ') +
      (a.loneImages.length > shown.length ? `    and ${a.loneImages.length - shown.length} more\n` : ''))
  }
  if (a.sharedBase !== null) {
    const b = a.sharedBase
    parts.push(`  A shared base, estimated: if these ${b.images.length} images were built on one base, a node pulling all of them would pull about ${formatBytes(b.estimatedSavedBytes)} less.\n` +
      `    How: their bottom layers add up to ${formatBytes(b.bottomLayersBytes)}; with one base, a node pulls only the largest of them (${formatBytes(b.largestBottomLayer)}), once.\n`)
  }
  if (parts.length === 0) parts.push('  Nothing to advise: no layer is most of its image, and every image shares a layer with another.\n')
  return `Size advice (smaller images pull faster)\n${parts.join('')}`
}

/** The text report; `top` bounds each table and list. */
export function renderReport(doc: ReportDocument, top: number): string {
  return [header(doc), topImages(doc, top), slowPulls(doc, top), largestLayers(doc, top), saved(doc.summary, top), advice(doc.advice, top)].join('\n')
}
