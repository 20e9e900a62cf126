// The status page in headless Chromium (Debian's chromium, driven by
// playwright-core). On a real mirror after real pulls (skopeo, through the
// mirror, from the real upstream registry): its figures and rows are the
// API's. Over a stand-in InsightsView (fixture figures the test can make
// hostile or change): the page renders without a console error, draws its
// chart, shows the fixture's numbers, escapes what clients named, refreshes
// itself, and sends the browser's credentials when auth is on.
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import type { ImagesResponse, InsightsView, PullsResponse, Summary, TimelineResponse } from '../../src/insights/types.js'
import { IMAGES, PULLS, UPSTREAMS, type TableSpec } from '../../src/insights/page/tables.js'
import { format, get, timelineTotals, type FormatName } from '../../ui/view.js'
import { launchBrowser, openPage, screenshot } from '../harness/browser.js'
import { fixtureData, HOSTILE_IMAGE, HOSTILE_USER_AGENT, StandInView, startPageApp, type StandInData } from '../harness/insights-stand-in.js'
import type { BuiltImage } from '../harness/images.js'
import { startStack } from '../harness/stack.js'
import { requireTools, run, tempDir, waitFor } from '../harness/tools.js'

interface ShownField {
  readonly field: string
  readonly format: string
  readonly text: string
  readonly value: string | undefined
}

const shownFields = (page: Page): Promise<ShownField[]> =>
  page.$$eval('[data-field]', (els) => els.map((e) => ({
    field: e.getAttribute('data-field') ?? '',
    format: e.getAttribute('data-format') ?? '',
    text: e.textContent ?? '',
    value: e.getAttribute('data-value') ?? undefined,
  })))

interface ShownRow {
  readonly key: string | undefined
  readonly cells: Record<string, { text: string; title: string }>
}

const shownRows = (page: Page, table: string): Promise<ShownRow[]> =>
  page.$$eval(`table[data-rows="${table}"] tbody tr`, (trs) => trs.map((tr) => ({
    key: tr.getAttribute('data-key') ?? undefined,
    cells: Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.getAttribute('data-col') ?? '', { text: td.textContent ?? '', title: td.getAttribute('title') ?? '' }])),
  })))

const fieldText = (page: Page, field: string): Promise<string> => page.$eval(`[data-field="${field}"]`, (e) => e.textContent ?? '')

const attribute = (page: Page, selector: string, name: string): Promise<string | null> => page.$eval(selector, (e, n) => e.getAttribute(n), name)

/** How many refreshes the page's script has finished. */
const refreshes = async (page: Page): Promise<number> => Number((await attribute(page, 'body', 'data-refreshes')) ?? 0)

async function waitForRefreshes(page: Page, n: number): Promise<void> {
  await waitFor(async () => (await refreshes(page)) >= n, 10_000, `${n} refreshes of the page`)
}

/** Every figure the page shows is the view's, formatted, with the raw value beside it. */
async function checkFigures(t: Test, page: Page, data: StandInData, what: string): Promise<void> {
  const source = { ...data.summary, timeline: timelineTotals(data.timeline) }
  const fields = await shownFields(page)
  t.ok(fields.length >= 20, `${what}: ${fields.length} figures shown`)
  for (const f of fields) {
    const value = get(source, f.field)
    t.equal(f.text, format(f.format as FormatName, value, data.summary.now), `${what}: ${f.field} reads as the view's value`)
    t.same(f.value === undefined ? undefined : JSON.parse(f.value), value, `${what}: ${f.field} carries the raw value`)
  }
}

async function checkTable<Row>(t: Test, page: Page, spec: TableSpec<Row>, rows: readonly Row[], now: string): Promise<void> {
  const shown = await shownRows(page, spec.name)
  t.same(shown.map((r) => r.key), rows.map((r) => String(get(r, spec.key))), `${spec.name}: the view's rows, in its order`)
  rows.forEach((row, i) => {
    for (const c of spec.columns) {
      t.equal(shown[i]?.cells[c.id ?? c.path]?.text, format(c.format, get(row, c.path), now), `${spec.name} row ${i}: ${c.label}`)
    }
  })
}

async function waitForText(page: Page, field: string, text: string, what: string): Promise<void> {
  await waitFor(async () => (await fieldText(page, field)) === text, 10_000, what)
}

// Figures that depend on when they are read: the page and the test's own look at the API differ there by design.
const MOVING: ReadonlySet<string> = new Set(['ago', 'utc'])

const getJson = async <T>(url: string): Promise<T> => {
  const res = await fetch(url)
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

/** A table's rows as text by column, without the moving columns. */
interface RowText {
  readonly key: string | undefined
  readonly cells: Record<string, string | undefined>
}

const steady = <Row>(spec: TableSpec<Row>): TableSpec<Row>['columns'] => spec.columns.filter((c) => !MOVING.has(c.format))

const shownText = <Row>(spec: TableSpec<Row>, rows: readonly ShownRow[]): RowText[] =>
  rows.map((r) => ({ key: r.key, cells: Object.fromEntries(steady(spec).map((c) => [c.id ?? c.path, r.cells[c.id ?? c.path]?.text])) }))

const expectedText = <Row>(spec: TableSpec<Row>, rows: readonly Row[], now: string): RowText[] =>
  rows.map((row) => ({ key: String(get(row, spec.key)), cells: Object.fromEntries(steady(spec).map((c) => [c.id ?? c.path, format(c.format, get(row, c.path), now)])) }))

const blobBytes = (img: BuiltImage): number => img.config.size + img.layers.reduce((n, l) => n + l.size, 0)

t.test('on a real mirror after real pulls, the page shows what the API says', async (t) => {
  if (!requireTools(t, 'docker-registry', 'skopeo')) return
  const browser = await launchBrowser(t)
  if (browser === undefined) return
  const s = await startStack(t, { extraConfig: { insights: { sessionIdle: '1s' } } })
  const work = await tempDir(t, 'stevedore-page')
  const api = (path: string): string => `${s.mirror.url}/api/v1/${path}`
  let copies = 0
  const skopeo = async (tag: string): Promise<void> => {
    const dest = `dir:${join(work, `copy-${copies++}`)}`
    const res = await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${s.mirror.host}/${s.repo}:${tag}`, dest], { timeoutMs: 60_000 })
    t.equal(res.code, 0, `skopeo copy ${tag}: ${res.stderr.slice(-300)}`)
  }
  // Cold, then warm, then another image cold and warm: both kinds on the chart.
  for (const tag of ['oci', 'oci', 'docker', 'docker']) await skopeo(tag)
  await waitFor(async () => (await getJson<PullsResponse>(api('pulls'))).pulls.length >= 4, 15_000, 'the four pulls to be recorded')

  const { page, problems } = await openPage(t, browser, `${s.mirror.url}/?refresh=1`)
  await waitForRefreshes(page, 1)
  const host = s.registry.host
  const images = await shownRows(page, 'images')
  t.same(images.map((r) => r.key).sort(), [`${host}/${s.repo}:docker`, `${host}/${s.repo}:oci`], 'the two images pulled')
  const oci = images.find((r) => r.key === `${host}/${s.repo}:oci`)
  t.equal(oci?.cells['pulls']?.text, '2', 'pulled twice')
  t.equal(oci?.cells['size']?.text, format('bytes', blobBytes(s.oci)), 'its size: config and layers, humanised')
  t.equal(oci?.cells['layerCount']?.text, String(s.oci.layers.length), 'its layers')
  t.equal(await fieldText(page, 'pulls.total'), '4')
  t.equal(await fieldText(page, 'pulls.cold'), '2')
  t.equal(await fieldText(page, 'pulls.warm'), '2')
  t.equal(await fieldText(page, 'timeline.pulls'), '4', 'the chart counts them')
  t.ok(await page.$('#chart canvas'), 'and is drawn')

  // Every figure and row on the page, against the API as the test reads it (once the page's next refresh has seen the same).
  let last: { page: unknown; api: unknown } = { page: undefined, api: undefined }
  const agree = async (): Promise<boolean> => {
    const n = await refreshes(page)
    await waitForRefreshes(page, n + 1)
    const [summary, imgs, pulls, timeline] = await Promise.all([
      getJson<Summary>(api('summary')),
      getJson<ImagesResponse>(api('images?limit=10')),
      getJson<PullsResponse>(api('pulls?limit=20')),
      getJson<TimelineResponse>(api('timeline?minutes=360')),
    ])
    const source = { ...summary, timeline: timelineTotals(timeline.minutes) }
    const fields = (await shownFields(page)).filter((f) => !MOVING.has(f.format))
    const tables = {
      images: await shownRows(page, 'images'),
      pulls: await shownRows(page, 'pulls'),
      upstreams: await shownRows(page, 'upstreams'),
    }
    last = {
      page: {
        fields: fields.map((f) => ({ field: f.field, text: f.text, value: f.value === undefined ? undefined : JSON.parse(f.value) })),
        images: shownText(IMAGES, tables.images), pulls: shownText(PULLS, tables.pulls), upstreams: shownText(UPSTREAMS, tables.upstreams),
      },
      api: {
        fields: fields.map((f) => ({ field: f.field, text: format(f.format as FormatName, get(source, f.field), summary.now), value: get(source, f.field) })),
        images: expectedText(IMAGES, imgs.images, summary.now), pulls: expectedText(PULLS, pulls.pulls, summary.now), upstreams: expectedText(UPSTREAMS, summary.upstreams, summary.now),
      },
    }
    return JSON.stringify(last.page) === JSON.stringify(last.api)
  }
  await waitFor(agree, 15_000, 'the page to agree with the API').catch(() => undefined)
  t.same(last.page, last.api, 'every figure and row the page shows is the API\'s')

  const shot = await screenshot(page, 'status-page')
  t.comment(`screenshot: ${shot}`)
  t.same(problems, [], 'no console error, exception or failed request')
})

t.test('the page in Chromium over a stand-in view: renders, escapes, refreshes', async (t) => {
  const browser = await launchBrowser(t)
  if (browser === undefined) return
  t.comment(`chromium ${browser.version()}`)
  const data = fixtureData(new Date(), { hostile: true })
  const view = new StandInView(data)
  const { url } = await startPageApp(t, view satisfies InsightsView)

  // The server's HTML already carries the figures and rows: read with JavaScript off.
  const served = await openPage(t, browser, `${url}/`, { javaScriptEnabled: false })
  await checkFigures(t, served.page, data, 'as served')
  await checkTable(t, served.page, IMAGES, data.images.slice(0, 10), data.summary.now)
  await checkTable(t, served.page, PULLS, data.pulls.slice(0, 20), data.summary.now)
  t.same(served.problems, [], 'as served: no console error or failed request')

  // The script's first refresh redraws them, and draws the chart.
  const { page, problems } = await openPage(t, browser, `${url}/?refresh=1`)
  await waitForRefreshes(page, 1)
  await checkFigures(t, page, data, 'after a refresh')
  t.equal(await fieldText(page, 'requests.hitRatio'), '93.1%', 'hit ratio, as a person reads it')
  t.equal(await fieldText(page, 'bytes.fromCache'), '4.2 GB', 'bytes from cache, humanised')
  t.equal(await fieldText(page, 'cache'), '36.8% of the 50 GB quota')
  t.equal(await attribute(page, 'meter[data-meter="cache.usedRatio"]', 'value'), '0.368', 'the cache meter')
  t.ok(await page.$('#chart canvas'), 'the chart is drawn (a uPlot canvas)')
  t.equal(await page.$$eval('#chart .u-legend .u-series', (s) => s.length), 4, 'its legend: time, pulls, cold mean, warm mean')

  await checkTable(t, page, IMAGES, data.images.slice(0, 10), data.summary.now)
  await checkTable(t, page, PULLS, data.pulls.slice(0, 20), data.summary.now)
  await checkTable(t, page, UPSTREAMS, data.summary.upstreams, data.summary.now)

  // What clients named is text on the page, never markup.
  const images = await shownRows(page, 'images')
  t.ok(images.some((r) => r.cells['image']?.text === HOSTILE_IMAGE), 'a hostile image name is shown as its text')
  const pulls = await shownRows(page, 'pulls')
  t.equal(pulls.find((r) => r.cells['image']?.text === HOSTILE_IMAGE)?.cells['client']?.title, HOSTILE_USER_AGENT, 'a hostile user agent is a title, as its text')
  t.equal(await page.evaluate('typeof window.__pwned'), 'undefined', 'none of it ran')
  t.equal(await page.$$eval('body script, body img', (els) => els.length), 0, 'nor became an element')

  // A refresh brings new figures, rows and chart totals.
  const next = fixtureData(new Date(), { hostile: true })
  next.summary = { ...next.summary, requests: { total: 2000, hits: 1990, hitRatio: 0.995 }, fillsInProgress: 7 }
  next.pulls.unshift({ ...(next.pulls[1] as StandInData['pulls'][number]), id: 'stand-in-99', image: 'docker.io/library/redis:7', cache: 'partial' })
  next.timeline = next.timeline.map((p, i) => (i === next.timeline.length - 1 ? { ...p, pulls: p.pulls + 5, warm: p.warm + 5 } : p))
  view.data = next
  await waitForText(page, 'requests.total', '2,000', 'the refreshed request count')
  // One refresh may have been under way at the change: the one after it saw only the new figures.
  await waitForRefreshes(page, (await refreshes(page)) + 1)
  await checkFigures(t, page, next, 'after the figures changed')
  t.equal(await fieldText(page, 'requests.hitRatio'), '99.5%')
  t.equal(await fieldText(page, 'fillsInProgress'), '7')
  await checkTable(t, page, PULLS, next.pulls.slice(0, 20), next.summary.now)
  t.equal(await attribute(page, '[data-refresh-state]', 'data-refresh-state'), 'ok', 'the refresh says it is fine')

  const shot = await screenshot(page, 'status-page-stand-in')
  t.comment(`screenshot: ${shot}`)
  t.same(problems, [], 'no console error, exception or failed request')
})

t.test('with client auth on, the page and its refreshes need and carry credentials', async (t) => {
  const browser = await launchBrowser(t)
  if (browser === undefined) return
  const data = fixtureData()
  const credentials = { user: 'ops', password: 'page-s3cret' }
  const { url } = await startPageApp(t, new StandInView(data), { auth: credentials })
  for (const path of ['/', '/ui/status.js', '/api/v1/summary']) {
    const anonymous = await fetch(`${url}${path}`)
    t.equal(anonymous.status, 401, `${path} without credentials: 401`)
    t.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic /, 'a Basic challenge: the browser asks for a login')
  }
  const { page, problems } = await openPage(t, browser, `${url}/?refresh=1`, { httpCredentials: { username: credentials.user, password: credentials.password } })
  await waitForRefreshes(page, 2)
  t.equal(await fieldText(page, 'pulls.total'), '212', 'the figures, after two refreshes')
  t.equal(await attribute(page, '[data-refresh-state]', 'data-refresh-state'), 'ok')
  t.same(problems, [], 'no 401 on any of its requests, no console error')
})
