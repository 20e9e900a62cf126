// The status page's refresh: every data-refresh seconds, fetch the insights
// API and update what the server rendered: the figures (data-field), the
// tables (from their <template> rows) and the chart. Values go in as text
// (textContent, attributes), never as markup: image names come from clients.
import { format, get, timelineTotals, tone } from './view.js'

const body = document.body
const settings = {
  refreshMs: Number(body.dataset.refresh) * 1000,
  minutes: Number(body.dataset.minutes),
  images: Number(body.dataset.images),
  pulls: Number(body.dataset.pulls),
}
const COLD = '#2563eb'
const WARM = '#16a34a'
const PULLS = 'rgba(100, 116, 139, 0.28)'

/** GET a path of the API, relative to the page (which may sit behind a path prefix); same-origin credentials go along. */
async function getJson(path) {
  const response = await fetch(new URL(path, document.baseURI), {
    headers: { accept: 'application/json' },
    cache: 'no-store',
    signal: AbortSignal.timeout(Math.max(5000, settings.refreshMs)),
  })
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`)
  return response.json()
}

function updateFields(source, now) {
  for (const el of document.querySelectorAll('[data-field]')) {
    const value = get(source, el.dataset.field)
    el.textContent = format(el.dataset.format, value, now)
    if (value === undefined) delete el.dataset.value
    else el.dataset.value = JSON.stringify(value)
  }
  for (const el of document.querySelectorAll('meter[data-meter]')) {
    const value = get(source, el.dataset.meter)
    el.hidden = typeof value !== 'number'
    if (typeof value === 'number') el.value = value
  }
}

function row(template, item, now) {
  const tr = template.content.firstElementChild.cloneNode(true)
  const key = get(item, template.dataset.keyPath)
  if (key !== undefined) tr.dataset.key = String(key)
  for (const td of tr.querySelectorAll('td[data-col]')) {
    const value = get(item, td.dataset.path ?? td.dataset.col)
    const target = td.querySelector('.badge') ?? td
    target.textContent = format(td.dataset.format, value, now)
    if (td.dataset.toneBy !== undefined) target.dataset.tone = tone(td.dataset.toneBy, value)
    if (td.dataset.titlePath !== undefined) {
      const title = get(item, td.dataset.titlePath)
      if (typeof title === 'string' && title !== '') td.title = title
    }
    delete td.dataset.path
    delete td.dataset.titlePath
  }
  return tr
}

function updateTable(name, items, now) {
  const table = document.querySelector(`table[data-rows="${name}"]`)
  const template = document.querySelector(`template[data-row-for="${name}"]`)
  const empty = document.querySelector(`[data-empty-for="${name}"]`)
  if (table === null || template === null) return
  table.tBodies[0].replaceChildren(...items.map((item) => row(template, item, now)))
  table.hidden = items.length === 0
  if (empty !== null) empty.hidden = items.length > 0
}

// ------------------------------------------------------------------ chart

let chart

function chartData(minutes) {
  const data = [[], [], [], []]
  for (const m of minutes) {
    data[0].push(Date.parse(m.t) / 1000)
    data[1].push(m.pulls)
    data[2].push(m.coldMeanSeconds)
    data[3].push(m.warmMeanSeconds)
  }
  return data
}

function chartOptions(width) {
  const uPlot = globalThis.uPlot
  const seconds = (_u, v) => format('seconds', v)
  // Pull times are sparse (minutes with no pull are gaps): points show the lone ones.
  const points = (stroke) => ({ show: true, size: 6, stroke, fill: stroke })
  return {
    width,
    height: 260,
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true },
      s: { range: (_u, _min, max) => [0, Math.max(1, max ?? 0) * 1.1] },
      n: { range: (_u, _min, max) => [0, Math.max(4, max ?? 0) * 1.1] },
    },
    series: [
      {},
      { label: 'Pulls', scale: 'n', stroke: PULLS, fill: PULLS, width: 0, paths: uPlot.paths.bars({ size: [0.9, 14] }), points: { show: false }, value: (_u, v) => format('count', v) },
      { label: 'Cold mean', scale: 's', stroke: COLD, width: 2, points: points(COLD), value: seconds },
      { label: 'Warm mean', scale: 's', stroke: WARM, width: 2, points: points(WARM), value: seconds },
    ],
    axes: [
      { stroke: '#475569', grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' } },
      { scale: 's', stroke: '#475569', size: 60, grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' }, values: (_u, splits) => splits.map((v) => `${+v.toFixed(2)} s`) },
      { scale: 'n', side: 1, stroke: '#94a3b8', size: 44, grid: { show: false }, values: (_u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : '')) },
    ],
  }
}

function drawChart(minutes) {
  const el = document.getElementById('chart')
  if (el === null || globalThis.uPlot === undefined) return
  const data = chartData(minutes)
  if (chart !== undefined) {
    chart.setData(data)
    return
  }
  chart = new globalThis.uPlot(chartOptions(el.clientWidth), data, el)
  new ResizeObserver(() => {
    if (el.clientWidth > 0 && el.clientWidth !== chart.width) chart.setSize({ width: el.clientWidth, height: chart.height })
  }).observe(el)
}

// ------------------------------------------------------------------ refresh

const state = document.querySelector('[data-refresh-state]')
let refreshes = 0

async function refresh() {
  const [summary, images, pulls, timeline] = await Promise.all([
    getJson('api/v1/summary'),
    getJson(`api/v1/images?limit=${settings.images}`),
    getJson(`api/v1/pulls?limit=${settings.pulls}`),
    getJson(`api/v1/timeline?minutes=${settings.minutes}`),
  ])
  updateFields({ ...summary, timeline: timelineTotals(timeline.minutes) }, summary.now)
  updateTable('images', images.images, summary.now)
  updateTable('pulls', pulls.pulls, summary.now)
  updateTable('upstreams', summary.upstreams, summary.now)
  drawChart(timeline.minutes)
  refreshes++
  body.dataset.refreshes = String(refreshes)
}

async function loop() {
  if (!document.hidden) {
    try {
      await refresh()
      state.dataset.refreshState = 'ok'
      state.textContent = `refreshes every ${settings.refreshMs / 1000} s`
    } catch (err) {
      // The figures stay as they were: say they are stale, and why.
      state.dataset.refreshState = 'error'
      state.textContent = `refresh failed (${err instanceof Error ? err.message : String(err)}); retrying`
    }
  }
  setTimeout(loop, settings.refreshMs)
}

void loop()
