// The status page as the server first sends it: every number already in the
// HTML (readable without JavaScript), each in an element whose data-field
// (a path into the summary, or `timeline.*`) and data-format tell
// ui/status.js how to refresh it.
import type { ImageInsight, PullRecord, Summary, TimelinePoint } from '../types.js'
import { format, get, timelineTotals, type FormatName } from '../../../ui/view.js'
import { html, markup, type Html } from './html.js'
import { IMAGES, PULLS, renderTable, UPSTREAMS } from './tables.js'

export interface PageData {
  readonly summary: Summary
  readonly images: readonly ImageInsight[]
  readonly pulls: readonly PullRecord[]
  readonly timeline: readonly TimelinePoint[]
}

export interface PageSettings {
  readonly refreshSeconds: number
  readonly timelineMinutes: number
  readonly topImages: number
  readonly recentPulls: number
  /** URL (relative to the page) of each asset, by its path under /ui/. */
  readonly assets: Readonly<Record<string, string>>
}

/** What data-field paths are read from: the summary, and the chart's totals under `timeline`. */
function fieldSource(data: PageData): Record<string, unknown> {
  return { ...data.summary, timeline: timelineTotals(data.timeline) }
}

/** "6 h", or "90 min" when not whole hours. */
function windowLabel(minutes: number): string {
  return minutes % 60 === 0 ? `${minutes / 60} h` : `${minutes} min`
}

export function renderPage(data: PageData, settings: PageSettings): string {
  const source = fieldSource(data)
  const now = data.summary.now
  // One number: its element carries the raw value too, so a reader (or a test) need not parse "4.2 GB".
  const field = (path: string, fmt: FormatName, cls = ''): Html => {
    const value = get(source, path)
    return html`<span data-field="${path}" data-format="${fmt}"${value !== undefined ? html` data-value="${JSON.stringify(value)}"` : ''}${cls !== '' ? html` class="${cls}"` : ''}>${format(fmt, value, now)}</span>`
  }
  const big = (path: string, fmt: FormatName): Html => field(path, fmt, 'big')
  const card = (title: string, main: Html, sub: Html, extra: Html | '' = ''): Html =>
    html`<div class="card"><h3>${title}</h3><p class="main">${main}</p><p class="sub">${sub}</p>${extra}</div>`
  const asset = (name: string): string => settings.assets[name] ?? `ui/${name}`
  const { summary } = data
  const usedRatio = summary.cache.usedRatio

  const page = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stevedore · ${summary.instance}</title>
<link rel="icon" href="${asset('favicon.svg')}" type="image/svg+xml">
<link rel="stylesheet" href="${asset('uplot.min.css')}">
<link rel="stylesheet" href="${asset('status.css')}">
<script defer src="${asset('uplot.min.js')}"></script>
<script type="module" src="${asset('status.js')}"></script>
</head>
<body data-refresh="${settings.refreshSeconds}" data-minutes="${settings.timelineMinutes}" data-images="${settings.topImages}" data-pulls="${settings.recentPulls}">
<header>
<div class="brand"><h1>Stevedore</h1>${field('instance', 'text', 'instance')}</div>
<div class="meta">
<span>updated ${field('now', 'utc')}</span>
<span>counting since ${field('since', 'ago')}</span>
<span class="refresh" data-refresh-state="ok" role="status">refreshes every ${settings.refreshSeconds} s</span>
</div>
</header>
<main>
<section class="cards" aria-label="Summary">
${card('Hit ratio', big('requests.hitRatio', 'percent'), html`${field('requests.hits', 'count')} of ${field('requests.total', 'count')} requests · bytes ${field('bytes.hitRatio', 'percent')}`)}
${card('Served from cache', big('bytes.fromCache', 'bytes'), html`of ${field('bytes.served', 'bytes')} served · ${field('bytes.fromUpstream', 'bytes')} from upstream`)}
${card('Upstream saved', big('upstreamSaved.bytes', 'bytes'), html`${field('upstreamSaved.requests', 'count')} requests not sent upstream`)}
${card('Pulls', big('pulls.total', 'count'), html`${field('pulls.cold', 'count')} cold · ${field('pulls.warm', 'count')} warm · ${field('pulls.partial', 'count')} partial · ${field('pulls.failed', 'count')} failed · ${field('pulls.resolves', 'count')} resolves`)}
${card('Fills in progress', big('fillsInProgress', 'count'), html`layers being fetched from upstreams now`)}
${card('Cache', big('cache.size', 'bytes'), field('cache', 'cacheUse'),
    html`<meter min="0" max="1" low="0.8" high="0.95" optimum="0" data-meter="cache.usedRatio" value="${usedRatio ?? 0}"${usedRatio === null ? html` hidden` : ''}></meter>`)}
</section>
<section class="panel">
<h2>Pull time, last ${windowLabel(settings.timelineMinutes)}</h2>
<p class="caption">${field('timeline.pulls', 'count')} pulls (${field('timeline.cold', 'count')} cold, ${field('timeline.warm', 'count')} warm), slowest ${field('timeline.maxSeconds', 'seconds')}. Mean seconds per minute; bars: pulls per minute.</p>
<div id="chart" class="chart" aria-label="Pull time per minute"></div>
<noscript><p class="empty">The chart needs JavaScript; the figures above do not.</p></noscript>
</section>
<section class="panel">
<h2>Top images <small>by total pull time</small></h2>
${renderTable(IMAGES, data.images, now)}
</section>
<section class="panel">
<h2>Recent pulls</h2>
${renderTable(PULLS, data.pulls, now)}
</section>
<section class="panel">
<h2>Upstreams <small>health and rate-limit budget</small></h2>
${renderTable(UPSTREAMS, summary.upstreams, now)}
</section>
</main>
<footer>JSON: <a href="api/v1/summary">summary</a> · <a href="api/v1/images">images</a> · <a href="api/v1/pulls">pulls</a> · <a href="api/v1/layers">layers</a> · <a href="api/v1/timeline">timeline</a> · <a href="metrics">metrics</a></footer>
</body>
</html>
`
  return markup(page)
}
