// What the status page shows of the insights API's JSON, computed the same
// way on the server (src/insights/page/, which renders the first view) and
// in the browser (status.js, which refreshes it): one source, so a refresh
// never changes how a number reads. Plain ES module, no dependencies.
// Types: view.d.ts.

const DASH = '—'
const SIZE_UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB']

const isNumber = (v) => typeof v === 'number' && Number.isFinite(v)

/** 1234567 → "1,234,567"; locale-free, so the server and every browser agree. */
function grouped(n) {
  const [whole, frac] = String(Math.abs(n)).split('.')
  const sign = n < 0 ? '-' : ''
  return `${sign}${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}${frac === undefined ? '' : `.${frac}`}`
}

/** Decimal units, as registries and `docker images` show sizes. */
function bytes(v) {
  if (!isNumber(v)) return DASH
  let value = v
  let unit = 0
  while (Math.abs(value) >= 1000 && unit < SIZE_UNITS.length - 1) {
    value /= 1000
    unit++
  }
  if (unit === 0) return `${value} B`
  // toFixed rounds 999.96 up to "1000.0": say it in the next unit instead.
  const shown = Math.abs(value) < 9.95 ? value.toFixed(1) : String(Math.round(value))
  if (shown === '1000' && unit < SIZE_UNITS.length - 1) return `1.0 ${SIZE_UNITS[unit + 1]}`
  return `${shown} ${SIZE_UNITS[unit]}`
}

/** Durations in seconds: two decimals below 10 s, one below 100 s, whole seconds above. */
function seconds(v) {
  if (!isNumber(v)) return DASH
  const abs = Math.abs(v)
  if (abs < 9.995) return `${v.toFixed(2)} s`
  if (abs < 99.95) return `${v.toFixed(1)} s`
  return `${grouped(Math.round(v))} s`
}

/** A ratio (0..1) as a percentage with one decimal; the ends read as "0%" and "100%". */
function percent(v) {
  if (!isNumber(v)) return DASH
  if (v === 0) return '0%'
  if (v === 1) return '100%'
  const shown = (v * 100).toFixed(1)
  // Nearly all is not all: 0.9996 must not read as a perfect 100%.
  if (shown === '100.0') return '>99.9%'
  if (shown === '0.0') return '<0.1%'
  return `${shown}%`
}

function count(v) {
  return isNumber(v) ? grouped(Math.round(v)) : DASH
}

/** How long before `now` an ISO time was: "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
function ago(v, now) {
  const then = typeof v === 'string' ? Date.parse(v) : Number.NaN
  const ref = typeof now === 'string' ? Date.parse(now) : Number.NaN
  if (Number.isNaN(then) || Number.isNaN(ref)) return DASH
  const s = Math.max(0, Math.round((ref - then) / 1000))
  if (s < 1) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86_400)} d ago`
}

/** An ISO time as "2026-12-03 14:03:12 UTC": the same wherever the browser is. */
function utc(v) {
  const t = typeof v === 'string' ? Date.parse(v) : Number.NaN
  if (Number.isNaN(t)) return DASH
  return `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')} UTC`
}

function text(v) {
  if (v === null || v === undefined || v === '') return DASH
  return String(v)
}

/** The node's name when known, else the address. */
function client(v) {
  if (v === null || typeof v !== 'object') return DASH
  return text(v.node ?? v.address)
}

/** A pull's layers: fetched of those the manifest lists. */
function layers(v) {
  if (v === null || typeof v !== 'object' || !isNumber(v.fetched) || !isNumber(v.total)) return DASH
  return `${count(v.fetched)} of ${count(v.total)}`
}

/** How full the cache is (a summary's `cache`): "36.8% of the 50 GB quota", or that there is none. */
function cacheUse(v) {
  if (v === null || typeof v !== 'object') return DASH
  if (!isNumber(v.quota)) return 'no quota set'
  return `${percent(v.usedRatio)} of the ${bytes(v.quota)} quota`
}

/** The ratelimit-remaining an upstream announced; none announced is no limit known. */
function budget(v) {
  return isNumber(v) ? count(v) : 'not announced'
}

/** An upstream's state: paused after a 429, erroring, or fine. */
function health(v) {
  if (v === null || typeof v !== 'object') return DASH
  if (isNumber(v.pausedSeconds) && v.pausedSeconds > 0) return `paused ${seconds(v.pausedSeconds)}`
  if (isNumber(v.errors) && v.errors > 0) return isNumber(v.requests) && v.requests > 0 ? `${percent(v.errors / v.requests)} errors` : `${count(v.errors)} errors`
  return 'ok'
}

const FORMATS = { bytes, seconds, percent, count, ago, utc, text, client, layers, cacheUse, budget, health }

/** `value` as the page shows it, by the name of its format; `now` (ISO) is what `ago` counts from. */
export function format(name, value, now) {
  const f = Object.hasOwn(FORMATS, name) ? FORMATS[name] : text
  return f(value, now)
}

/** The badge colour of a value shown with `name`, or '' for none. */
export function tone(name, value) {
  switch (name) {
    case 'cache':
      return value === 'warm' ? 'good' : value === 'cold' ? 'cold' : value === 'partial' ? 'warn' : ''
    case 'result':
      return value === 'ok' ? 'good' : value === 'failed' ? 'bad' : ''
    case 'health': {
      const state = health(value)
      return state === 'ok' ? 'good' : state.startsWith('paused') ? 'bad' : state === DASH ? '' : 'warn'
    }
    default:
      return ''
  }
}

/** The value at a dotted path ("coldSeconds.p50"); '' is the object itself. Own properties only. */
export function get(object, path) {
  if (path === '') return object
  let v = object
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, key)) return undefined
    v = v[key]
  }
  return v
}

/** Totals over a timeline's minutes: pulls, and the slowest pull, for the chart's caption. */
export function timelineTotals(minutes) {
  let pulls = 0
  let cold = 0
  let warm = 0
  let maxSeconds = null
  for (const m of minutes) {
    pulls += m.pulls
    cold += m.cold + m.partial
    warm += m.warm
    if (m.maxSeconds !== null && (maxSeconds === null || m.maxSeconds > maxSeconds)) maxSeconds = m.maxSeconds
  }
  return { pulls, cold, warm, maxSeconds }
}
