// k8s/components/grafana-dashboard: it renders with `kubectl kustomize` into
// the one ConfigMap Grafana's sidecar loads, its dashboard is well formed,
// and every metric its queries name is one a real running mirror exports
// (by the `# TYPE` lines of its /metrics, which prom-client prints for every
// metric, samples or not). Nothing here sends traffic beyond 127.0.0.1.
import { mkdir, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import t, { type Test } from 'tap'
import { parseAllDocuments } from 'yaml'
import { REPO_ROOT } from '../harness/mirror.js'
import { startStack } from '../harness/stack.js'
import { requireTools, run, tempDir } from '../harness/tools.js'

const COMPONENT = join(REPO_ROOT, 'k8s', 'components', 'grafana-dashboard')
const DATASOURCE = '${datasource}'

interface ConfigMap {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; labels?: Record<string, string> }
  data?: Record<string, string>
}

interface Target { refId?: string; expr?: string; datasource?: { type?: string; uid?: string } }
interface Panel { id?: number; type?: string; title?: string; datasource?: { type?: string; uid?: string }; targets?: Target[]; panels?: Panel[]; gridPos?: { x: number; y: number; w: number; h: number } }
interface Variable { name: string; type: string; query?: string | { query?: string }; datasource?: { type?: string; uid?: string } }
interface Dashboard { uid?: string; title?: string; schemaVersion?: number; panels: Panel[]; templating: { list: Variable[] } }

// ------------------------------------------------------------ PromQL names

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'atan2', 'inf', 'nan'])
// `sum by (le) (…)`: an aggregation may have its modifier before the parenthesis.
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio'])
// Followed by a list of label names in parentheses.
const LABEL_LISTS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'])

/**
 * The metric names a PromQL expression selects: every identifier that is not
 * a function or aggregation (followed by `(`), a keyword, a label name (in
 * `{…}` matchers or a `by (…)` list), a string, a number, a duration (`[…]`,
 * after `offset`) or a Grafana variable (`$x`, `${x}`, `$__rate_interval`).
 */
function metricNames(expr: string): string[] {
  const names: string[] = []
  let i = 0
  const skipString = (at: number): number => {
    const quote = expr[at]
    let j = at + 1
    while (j < expr.length && expr[j] !== quote) j += expr[j] === '\\' ? 2 : 1
    return j + 1
  }
  const skipGroup = (at: number, open: string, close: string): number => {
    let depth = 0
    let j = at
    while (j < expr.length) {
      const c = expr[j] as string
      if (c === '"' || c === "'" || c === '`') { j = skipString(j); continue }
      if (c === open) depth++
      else if (c === close && --depth === 0) return j + 1
      j++
    }
    throw new Error(`unbalanced ${open} in ${expr}`)
  }
  const nextNonSpace = (at: number): number => {
    let j = at
    while (j < expr.length && /\s/.test(expr[j] as string)) j++
    return j
  }
  while (i < expr.length) {
    const c = expr[i] as string
    if (c === '"' || c === "'" || c === '`') { i = skipString(i); continue }
    if (c === '{') { i = skipGroup(i, '{', '}'); continue }
    if (c === '[') { i = skipGroup(i, '[', ']'); continue }
    if (c === '$') {
      i = expr[i + 1] === '{' ? skipGroup(i + 1, '{', '}') : i + 1 + (/^\w*/.exec(expr.slice(i + 1))?.[0].length ?? 0)
      continue
    }
    if (/[0-9.]/.test(c)) { i += /^[0-9.eE]+(?:[a-z]+)?/.exec(expr.slice(i))?.[0].length ?? 1; continue }
    const word = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(expr.slice(i))?.[0]
    if (word === undefined) { i++; continue }
    i += word.length
    const next = nextNonSpace(i)
    const lower = word.toLowerCase()
    if (LABEL_LISTS.has(lower)) {
      if (expr[next] === '(') i = skipGroup(next, '(', ')')
    } else if (lower === 'offset') {
      i = next + (/^-?[0-9a-z]+/.exec(expr.slice(next))?.[0].length ?? 0)
    } else if (AGGREGATIONS.has(lower) && /^(by|without)\s*\(/i.test(expr.slice(next))) {
      // the modifier is read next, as a label list
    } else if (!KEYWORDS.has(lower) && expr[next] !== '(') {
      names.push(word)
    }
  }
  return names
}

/** The metric names of a Grafana Prometheus variable query: `label_values(expr, label)`, `query_result(expr)`, `metrics(regex)` (none). */
function variableMetricNames(query: string): string[] {
  const lv = /^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$/s.exec(query)
  if (lv !== null) return metricNames(lv[1] as string)
  const qr = /^\s*query_result\((.*)\)\s*$/s.exec(query)
  if (qr !== null) return metricNames(qr[1] as string)
  return []
}

/** `# TYPE name type` lines of a /metrics text. */
function exportedTypes(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]))
}

/** A name a query uses is exported as is, or is a histogram's (summary's) _bucket, _sum or _count series. */
function unexported(names: Iterable<string>, types: Map<string, string>): string[] {
  const missing: string[] = []
  for (const name of names) {
    if (types.has(name)) continue
    const m = /^(.*)_(bucket|sum|count)$/.exec(name)
    const base = m?.[1]
    const kind = base !== undefined ? types.get(base) : undefined
    if (kind === 'histogram' || (kind === 'summary' && m?.[2] !== 'bucket')) continue
    missing.push(name)
  }
  return [...new Set(missing)].sort()
}

/** Every panel, rows' nested ones too. */
const allPanels = (panels: readonly Panel[]): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])])

/** Every metric name of a dashboard, with where it is used. */
function dashboardNames(d: Dashboard): Map<string, string[]> {
  const used = new Map<string, string[]>()
  const note = (name: string, where: string): void => {
    used.set(name, [...(used.get(name) ?? []), where])
  }
  for (const p of allPanels(d.panels)) for (const target of p.targets ?? []) for (const n of metricNames(target.expr ?? '')) note(n, `panel ${p.id ?? '?'} "${p.title ?? ''}" ${target.refId ?? ''}`)
  for (const v of d.templating.list) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query
    if (v.type === 'query' && q !== undefined) for (const n of variableMetricNames(q)) note(n, `variable ${v.name}`)
  }
  return used
}

// ------------------------------------------------------------ rendering

async function kubectlReady(t: Test): Promise<boolean> {
  if (!requireTools(t, 'kubectl')) return false
  const v = await run('kubectl', ['version', '--client'], { timeoutMs: 30_000 })
  const m = /Kustomize Version: v(\d+)/.exec(v.stdout)
  if (m !== null && Number(m[1]) >= 5) return true
  const why = `kubectl ships no kustomize 5 (${v.stdout.trim() || v.stderr.trim()}): components need it`
  if (process.env['REQUIRE_E2E'] === '1') t.fail(why)
  else void t.skip(why, () => undefined)
  return false
}

async function kustomize(dir: string): Promise<ConfigMap[]> {
  const r = await run('kubectl', ['kustomize', dir], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`kubectl kustomize ${dir} exited ${r.code}: ${r.stderr}`)
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as ConfigMap).filter((o) => o !== null)
}

/** The base with the component added, from a throw-away overlay. */
async function onBase(t: Test): Promise<string> {
  const dir = join(await tempDir(t, 'stevedore-kustomize-dashboard'), 'overlay')
  await mkdir(dir)
  await writeFile(join(dir, 'kustomization.yaml'), [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${relative(dir, join(REPO_ROOT, 'k8s', 'base'))}`,
    'components:',
    `  - ${relative(dir, COMPONENT)}`,
    '',
  ].join('\n'))
  return dir
}

// ------------------------------------------------------------ tests

t.test('the PromQL name tokenizer', async (t) => {
  t.same(metricNames('histogram_quantile(0.95, sum by (le, cache) (rate(stevedore_image_pull_duration_seconds_bucket{job=~"$job",cache!="warm"}[$__rate_interval])))'), ['stevedore_image_pull_duration_seconds_bucket'], 'functions, aggregation, by-list, matchers, range and variables are not names')
  t.same(metricNames('sum by (upstream) (rate(a_sum{x="y"}[5m])) / sum without (pod) (rate(a_count[5m] offset 1h)) > bool 0 and on (pod) group_left (le) up'), ['a_sum', 'a_count', 'up'])
  t.same(metricNames('max by (pod) (stevedore_process_nodejs_eventloop_lag_p99_seconds{pod=~"${pod}"}) * 60 + 1e3'), ['stevedore_process_nodejs_eventloop_lag_p99_seconds'])
  t.same(metricNames('sum(x{a="}{[(by"}) or vector(0)'), ['x'], 'brackets inside label values are text')
  t.same(metricNames('count + sum by(a)(b) + topk without (c) (3, d)'), ['count', 'b', 'd'], 'an aggregation\'s name alone is a metric name')
  t.same(variableMetricNames('label_values(stevedore_process_process_start_time_seconds{job=~"$job"}, namespace)'), ['stevedore_process_process_start_time_seconds'])
  const types = new Map([['stevedore_image_pull_duration_seconds', 'histogram'], ['stevedore_image_pulls_total', 'counter']])
  t.same(unexported(['stevedore_image_pull_duration_seconds_bucket', 'stevedore_image_pull_duration_seconds_sum', 'stevedore_image_pulls_total'], types), [], 'a histogram\'s series and a counter are exported')
  t.same(unexported(metricNames('rate(stevedore_image_pul_duration_seconds_bucket[1m]) + stevedore_image_pulls_total_count'), types), ['stevedore_image_pul_duration_seconds_bucket', 'stevedore_image_pulls_total_count'], 'a misspelled name, and _count of a counter, are caught')
})

t.test('the grafana-dashboard component: one labelled ConfigMap whose dashboard names only metrics the mirror exports', async (t) => {
  if (!(await kubectlReady(t)) || !requireTools(t, 'docker-registry')) return
  const alone = await kustomize(COMPONENT)
  t.same(alone.map((o) => `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`), ['ConfigMap stevedore/stevedore-grafana-dashboard'], 'one ConfigMap, named without a hash suffix')
  const withBase = await kustomize(await onBase(t))
  const cms = withBase.filter((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('stevedore-grafana-dashboard'))
  t.same(cms.map((o) => o.metadata.name), ['stevedore-grafana-dashboard'], 'on the base too')
  t.ok(withBase.some((o) => o.kind === 'Namespace' && o.metadata.name === cms[0]?.metadata.namespace), 'in a namespace the base creates')
  const cm = cms[0] as ConfigMap
  t.equal(cm.apiVersion, 'v1')
  t.equal(cm.metadata.labels?.['grafana_dashboard'], '1', 'labelled for the Grafana sidecar')
  t.same(Object.keys(cm.data ?? {}), ['stevedore.json'])
  const json = cm.data?.['stevedore.json'] ?? ''
  // kubectl apply keeps the whole object in an annotation, which may not pass 256 KiB.
  t.ok(Buffer.byteLength(json) < 200_000, `small enough for client-side apply (${Buffer.byteLength(json)} bytes)`)
  const d = JSON.parse(json) as Dashboard

  await t.test('the dashboard is well formed', async (t) => {
    t.equal(d.uid, 'stevedore')
    t.ok(typeof d.title === 'string' && d.title !== '')
    t.ok(typeof d.schemaVersion === 'number' && d.schemaVersion >= 36 && d.schemaVersion <= 41, `schemaVersion ${String(d.schemaVersion)}`)
    const ds = d.templating.list.find((v) => v.name === 'datasource')
    t.same([ds?.type, ds?.query], ['datasource', 'prometheus'], 'a Prometheus data source variable')
    for (const name of ['job', 'namespace', 'pod']) {
      const v = d.templating.list.find((x) => x.name === name)
      t.equal(v?.type, 'query', `a ${name} variable`)
      t.equal(v?.datasource?.uid, DATASOURCE, `${name} queries \${datasource}`)
    }
    const panels = allPanels(d.panels)
    const ids = panels.map((p) => p.id)
    t.ok(ids.every((id) => Number.isInteger(id)), 'every panel has an id')
    t.equal(new Set(ids).size, ids.length, 'unique ids')
    const queried = panels.filter((p) => p.type !== 'row')
    t.ok(queried.length >= 30, `${queried.length} panels`)
    for (const p of panels) t.ok(typeof p.title === 'string' && p.title.trim() !== '', `panel ${p.id ?? '?'} has a title`)
    for (const p of queried) {
      const where = `panel ${p.id ?? '?'} "${p.title ?? ''}"`
      t.equal(p.datasource?.uid, DATASOURCE, `${where}: data source \${datasource}`)
      t.ok((p.targets ?? []).length > 0 && (p.targets ?? []).every((x) => typeof x.expr === 'string' && x.expr !== '' && x.datasource?.uid === DATASOURCE), `${where}: queries, each on \${datasource}`)
      t.ok((p.targets ?? []).every((x) => /\$__rate_interval|\$__range/.test(x.expr ?? '') || !/\brate\(|increase\(/.test(x.expr ?? '')), `${where}: rates over $__rate_interval (or $__range)`)
      t.ok((p.targets ?? []).every((x) => /pod=~"\$pod"/.test(x.expr ?? '')), `${where}: every selector follows the job, namespace and pod variables`)
      const g = p.gridPos
      t.ok(g !== undefined && g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `${where}: inside the 24-column grid`)
    }
  })

  await t.test('every metric it names is exported by a running mirror; every metric of the mirror\'s own is on it', async (t) => {
    const s = await startStack(t)
    const types = exportedTypes(await (await fetch(`${s.mirror.url}/metrics`)).text())
    t.ok(types.size > 40, `the mirror exports ${types.size} metrics`)
    const used = dashboardNames(d)
    t.ok(used.size >= 30, `${used.size} metric names used`)
    const missing = unexported(used.keys(), types)
    t.same(missing.map((n) => `${n} (${(used.get(n) ?? []).join('; ')})`), [], 'every one is exported')
    const base = (n: string): string => n.replace(/_(bucket|sum|count)$/, '')
    const onDashboard = new Set([...used.keys()].map((n) => (types.has(n) ? n : base(n))))
    const own = [...types.keys()].filter((n) => n.startsWith('stevedore_') && !n.startsWith('stevedore_process_'))
    t.same(own.filter((n) => !onDashboard.has(n)), [], 'every stevedore_ metric (the process defaults aside) has a panel')
    for (const n of ['stevedore_process_process_cpu_seconds_total', 'stevedore_process_process_resident_memory_bytes', 'stevedore_process_nodejs_eventloop_lag_p99_seconds']) t.ok(onDashboard.has(n), `${n} is on it`)

    // The same check on a copy with one name misspelled fails, naming it.
    const bad = structuredClone(d)
    const victim = allPanels(bad.panels).find((p) => p.title === 'Image pull duration by cache')?.targets?.[0]
    t.ok(victim?.expr?.includes('stevedore_image_pull_duration_seconds_bucket'), 'the panel to spoil')
    if (victim !== undefined) victim.expr = (victim.expr ?? '').replace('stevedore_image_pull_duration_seconds_bucket', 'stevedore_image_pull_duraton_seconds_bucket')
    t.same(unexported(dashboardNames(bad).keys(), types), ['stevedore_image_pull_duraton_seconds_bucket'], 'a misspelled name is caught')
  })
})
