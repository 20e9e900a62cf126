// The status page without a browser: its formatting, its escaping, the HTML
// it renders from fixture data built to the API's types (a stand-in view),
// and its routes on the real app (headers, lengths, caching, bad input).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import t from 'tap'
import { escapeHtml, html, markup } from '../../src/insights/page/html.js'
import { renderPage, type PageData, type PageSettings } from '../../src/insights/page/render.js'
import { statusPage } from '../../src/insights/page/routes.js'
import { format, get, timelineTotals, tone, type FormatName } from '../../ui/view.js'
import { emptyData, fixtureData, HOSTILE_IMAGE, HOSTILE_USER_AGENT, StandInView, startPageApp } from '../harness/insights-stand-in.js'

const SETTINGS: PageSettings = { refreshSeconds: 10, timelineMinutes: 360, topImages: 10, recentPulls: 20, assets: {} }

const unescape = (s: string): string => s.replace(/&(lt|gt|quot|#39|amp);/g, (_, e: string) => ({ lt: '<', gt: '>', quot: '"', '#39': "'", amp: '&' })[e] ?? '')

/** Every data-field of rendered HTML: its format, its text and raw value. */
function fields(page: string): Array<{ field: string; format: string; value: string | undefined; text: string }> {
  const out = []
  for (const m of page.matchAll(/<span data-field="([^"]+)" data-format="([^"]+)"(?: data-value="([^"]*)")?[^>]*>([^<]*)<\/span>/g)) {
    out.push({ field: m[1] as string, format: m[2] as string, value: m[3] === undefined ? undefined : unescape(m[3]), text: unescape(m[4] as string) })
  }
  return out
}

t.test('formats', async (t) => {
  const cases: Array<[FormatName, unknown, string]> = [
    ['bytes', 0, '0 B'],
    ['bytes', 999, '999 B'],
    ['bytes', 1000, '1.0 KB'],
    ['bytes', 4_200_000_000, '4.2 GB'],
    ['bytes', 18_400_000_000, '18 GB'],
    ['bytes', 999_960, '1.0 MB'],
    ['bytes', 135 * 1024 * 1024, '142 MB'],
    ['bytes', null, '—'],
    ['seconds', 0.5, '0.50 s'],
    ['seconds', 12.4, '12.4 s'],
    ['seconds', 9.999, '10.0 s'],
    ['seconds', 1234.4, '1,234 s'],
    ['seconds', undefined, '—'],
    ['percent', 1234 / 1325, '93.1%'],
    ['percent', 1, '100%'],
    ['percent', 0, '0%'],
    ['percent', 0.99996, '>99.9%'],
    ['percent', 0.0001, '<0.1%'],
    ['percent', null, '—'],
    ['count', 1234567, '1,234,567'],
    ['count', 7, '7'],
    ['utc', '2026-12-03T14:03:12.345Z', '2026-12-03 14:03:12 UTC'],
    ['text', '', '—'],
    ['text', 'docker.io/library/nginx:1', 'docker.io/library/nginx:1'],
    ['client', { address: '10.0.0.1', node: 'node-a' }, 'node-a'],
    ['client', { address: '10.0.0.1' }, '10.0.0.1'],
    ['layers', { total: 4, fetched: 2 }, '2 of 4'],
    ['cacheUse', { size: 0, quota: null, usedRatio: null }, 'no quota set'],
    ['cacheUse', { size: 18_400_000_000, quota: 50_000_000_000, usedRatio: 0.368 }, '36.8% of the 50 GB quota'],
    ['budget', null, 'not announced'],
    ['budget', 87, '87'],
    ['health', { requests: 420, errors: 3, pausedSeconds: 0 }, '0.7% errors'],
    ['health', { requests: 10, errors: 0, pausedSeconds: 0 }, 'ok'],
    ['health', { requests: 10, errors: 1, pausedSeconds: 42 }, 'paused 42.0 s'],
  ]
  for (const [name, value, shown] of cases) t.equal(format(name, value), shown, `${name} ${JSON.stringify(value)}`)
  const now = '2026-12-03T14:00:00.000Z'
  t.equal(format('ago', '2026-12-03T14:00:00.000Z', now), 'just now')
  t.equal(format('ago', '2026-12-03T13:59:48.000Z', now), '12 s ago')
  t.equal(format('ago', '2026-12-03T13:55:00.000Z', now), '5 min ago')
  t.equal(format('ago', '2026-12-03T11:00:00.000Z', now), '3 h ago')
  t.equal(format('ago', '2026-11-30T14:00:00.000Z', now), '3 d ago')
  t.equal(format('ago', 'not a time', now), '—')
  t.equal(tone('cache', 'warm'), 'good')
  t.equal(tone('cache', 'cold'), 'cold')
  t.equal(tone('result', 'failed'), 'bad')
  t.equal(tone('health', { requests: 1, errors: 0, pausedSeconds: 3 }), 'bad')
  t.equal(get({ a: { b: 1 } }, 'a.b'), 1)
  t.equal(get({ a: 1 }, 'toString'), undefined, 'only own properties')
  t.same(timelineTotals([
    { t: now, pulls: 3, cold: 1, warm: 1, partial: 1, coldMeanSeconds: 4, warmMeanSeconds: 1, maxSeconds: 6 },
    { t: now, pulls: 0, cold: 0, warm: 0, partial: 0, coldMeanSeconds: null, warmMeanSeconds: null, maxSeconds: null },
  ]), { pulls: 3, cold: 2, warm: 1, maxSeconds: 6 })
})

t.test('html escapes what it is given, and only once', async (t) => {
  t.equal(escapeHtml(`<a href="x" title='y'>&</a>`), '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;')
  const name = '<script>alert(1)</script>'
  const inner = html`<b>${name}</b>`
  t.equal(markup(html`<p title="${name}">${inner}${[inner, 'x&y']}${null}${undefined}${false}${0}</p>`),
    '<p title="&lt;script&gt;alert(1)&lt;/script&gt;"><b>&lt;script&gt;alert(1)&lt;/script&gt;</b><b>&lt;script&gt;alert(1)&lt;/script&gt;</b>x&amp;y0</p>')
})

t.test('the page, from fixture figures with hostile names', async (t) => {
  const data: PageData = fixtureData(new Date('2026-12-03T14:00:00Z'), { hostile: true })
  const page = renderPage(data, { ...SETTINGS, assets: { 'status.js': 'ui/status.js?v=abc' } })
  t.notMatch(page, /<script>window/, 'no script of theirs')
  t.notMatch(page, /<img/, 'no element of theirs')
  t.equal(page.match(/<script\b/g)?.length, 2, 'only the two scripts of the page')
  t.match(page, escapeHtml(HOSTILE_IMAGE), 'the hostile image name, escaped')
  t.match(page, `title="${escapeHtml(HOSTILE_USER_AGENT)}"`, 'the hostile user agent, escaped inside its attribute')
  t.match(page, '<script type="module" src="ui/status.js?v=abc"></script>', 'the versioned script link')
  t.match(page, 'data-refresh="10"')

  const source = { ...data.summary, timeline: timelineTotals(data.timeline) }
  const shown = fields(page)
  t.ok(shown.length >= 20, `${shown.length} figures`)
  for (const f of shown) {
    const value = get(source, f.field)
    t.equal(f.text, format(f.format as FormatName, value, data.summary.now), `${f.field} reads as the view's value`)
    t.same(f.value === undefined ? undefined : JSON.parse(f.value), value, `${f.field} carries the raw value`)
  }
  const byField = new Map(shown.map((f) => [f.field, f.text]))
  t.equal(byField.get('requests.hitRatio'), '93.1%')
  t.equal(byField.get('bytes.fromCache'), '4.2 GB')
  t.equal(byField.get('bytes.hitRatio'), '87.3%')
  t.equal(byField.get('upstreamSaved.requests'), '1,180')
  t.equal(byField.get('cache.size'), '18 GB')
  t.equal(byField.get('cache'), '36.8% of the 50 GB quota')
  t.equal(byField.get('since'), '3 d ago')
  t.equal(byField.get('now'), '2026-12-03 14:00:00 UTC')
  t.match(page, '<meter min="0" max="1" low="0.8" high="0.95" optimum="0" data-meter="cache.usedRatio" value="0.368">')

  // Tables: a row per item with its key, a template row, no empty line.
  for (const [table, rows] of [['images', data.images.length], ['pulls', data.pulls.length], ['upstreams', data.summary.upstreams.length]] as const) {
    const body = new RegExp(`<table data-rows="${table}">[\\s\\S]*?<tbody>([\\s\\S]*?)</tbody>`).exec(page)?.[1] ?? ''
    t.equal(body.match(/<tr data-key=/g)?.length, rows, `${table}: ${rows} rows`)
    t.match(page, `<p class="empty" data-empty-for="${table}" hidden>`, `${table}: the empty line is hidden`)
    t.match(page, new RegExp(`<template data-row-for="${table}" data-key-path="\\w+"><tr><td data-col=`), `${table}: a template row`)
  }
  t.match(page, '<td data-col="pullSeconds" data-format="seconds" class="num">87.6 s</td>', 'postgres: total pull time')
  t.match(page, '<td data-col="cache" data-format="text" data-tone-by="cache"><span class="badge" data-tone="cold">cold</span></td>', 'a cold pull, as a badge')
  t.match(page, '<td data-col="health" data-format="health" data-tone-by="health"><span class="badge" data-tone="bad">paused 42.0 s</span></td>', 'a paused upstream')
  t.match(page, '<td data-col="health" data-format="health" data-tone-by="health" data-path=""><span class="badge"></span></td>', 'the template says where health is read from')
})

t.test('the page of a mirror that served nothing', async (t) => {
  const data = emptyData(new Date('2026-12-03T14:00:00Z'))
  const page = renderPage(data, SETTINGS)
  const byField = new Map(fields(page).map((f) => [f.field, f.text]))
  t.equal(byField.get('requests.hitRatio'), '—', 'no ratio of nothing')
  t.equal(byField.get('bytes.hitRatio'), '—')
  t.equal(byField.get('pulls.total'), '0')
  t.equal(byField.get('cache'), 'no quota set')
  t.equal(byField.get('timeline.pulls'), '0')
  t.equal(byField.get('timeline.maxSeconds'), '—')
  t.match(page, '<table data-rows="images" hidden>', 'no images table')
  t.match(page, '<p class="empty" data-empty-for="images">No pulls yet.</p>', 'but a line saying why')
  t.match(page, '<p class="empty" data-empty-for="pulls">No pulls yet.</p>')
  t.match(page, '<table data-rows="upstreams">', 'the upstreams are there all the same')
  t.match(page, /data-meter="cache\.usedRatio" value="0" hidden>/, 'no meter without a quota')
})

t.test('routes on the real app', async (t) => {
  const view = new StandInView(fixtureData())
  const { app } = await startPageApp(t, view, { page: { refreshSeconds: 15, topImages: 2, recentPulls: 3 } })

  const page = await app.inject('/')
  t.equal(page.statusCode, 200)
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(Number(page.headers['content-length']), Buffer.byteLength(page.body), 'content-length in bytes (the page has non-ASCII)')
  t.ok(Buffer.byteLength(page.body) > page.body.length, 'it does')
  t.equal(page.headers['cache-control'], 'no-store')
  t.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/)
  t.match(page.body, 'data-refresh="15"', 'the configured refresh')
  t.equal(page.body.match(/<tr data-key=/g)?.length, 2 + 3 + 3, 'topImages and recentPulls rows, and the three upstreams')

  t.match((await app.inject('/?refresh=2')).body, 'data-refresh="2"', '?refresh=2')
  t.match((await app.inject('/?refresh=3600')).body, 'data-refresh="3600"', 'the upper bound')
  t.match((await app.inject('/?refresh=')).body, 'data-refresh="15"', 'empty: the default')
  for (const bad of ['0', '3601', 'abc', '1.5', '-1', '10&refresh=20', '99999']) {
    const r = await app.inject(`/?refresh=${bad}`)
    t.equal(r.statusCode, 400, `?refresh=${bad}: 400`)
    t.match(String(r.headers['content-type']), /^application\/json/)
    const body = JSON.parse(r.body) as { errors: Array<{ code: string; message: string; detail: { parameter: string } }> }
    t.equal(body.errors[0]?.code, 'UNSUPPORTED')
    t.equal(body.errors[0]?.detail.parameter, 'refresh')
  }

  const require = createRequire(import.meta.url)
  const files = {
    'uplot.min.js': readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js')),
    'uplot.min.css': readFileSync(require.resolve('uplot/dist/uPlot.min.css')),
    'status.js': readFileSync(new URL('../../ui/status.js', import.meta.url)),
    'view.js': readFileSync(new URL('../../ui/view.js', import.meta.url)),
    'status.css': readFileSync(new URL('../../ui/status.css', import.meta.url)),
    'favicon.svg': readFileSync(new URL('../../ui/favicon.svg', import.meta.url)),
  }
  for (const [name, bytes] of Object.entries(files)) {
    const link = new RegExp(`"(ui/${name.replace('.', '\\.')}\\?v=[0-9a-f]{12})"`).exec(page.body)?.[1]
    if (name !== 'view.js') t.ok(link, `the page links ${name}, versioned`)
    const r = await app.inject(`/${link ?? `ui/${name}`}`)
    t.equal(r.statusCode, 200, `${name}: 200`)
    t.same(r.rawPayload, bytes, `${name}: the file's bytes`)
    t.equal(Number(r.headers['content-length']), bytes.length, `${name}: content-length`)
    t.match(String(r.headers['content-type']), name.endsWith('.js') ? /^text\/javascript/ : name.endsWith('.css') ? /^text\/css/ : /^image\/svg\+xml/, `${name}: content-type`)
    t.equal(r.headers['cache-control'], link !== undefined ? 'max-age=31536000, immutable' : 'no-cache', `${name}: cached by its version`)
    const plain = await app.inject(`/ui/${name}`)
    t.equal(plain.headers['cache-control'], 'no-cache', `${name} without a version: revalidated`)
    const again = await app.inject({ url: `/ui/${name}`, headers: { 'if-none-match': String(plain.headers['etag']) } })
    t.equal(again.statusCode, 304, `${name}: 304 for its ETag`)
    t.equal(again.rawPayload.length, 0)
  }

  const metrics = (await app.inject('/metrics')).body
  t.match(metrics, /stevedore_http_requests_total\{route="page",method="GET",status="200"\} \d+/, 'recorded as page requests')
  t.match(metrics, /stevedore_http_requests_total\{route="page",method="GET",status="400"\}/, 'bad ones too')
  t.equal((await app.inject({ method: 'POST', url: '/' })).statusCode, 405, 'read-only, like the rest outside /api/')
})

t.test('options out of bounds are a programming error, at once', async (t) => {
  const view = new StandInView(emptyData())
  t.throws(() => statusPage(view, { refreshSeconds: 0 }), RangeError)
  t.throws(() => statusPage(view, { timelineMinutes: 1.5 }), RangeError)
  t.throws(() => statusPage(view, { topImages: 0 }), RangeError)
  t.doesNotThrow(() => statusPage(view, { refreshSeconds: 3600, timelineMinutes: 60, topImages: 1, recentPulls: 1000 }))
})
