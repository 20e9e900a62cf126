// `stevedore report`'s text: the tables hold the merged rows and figures,
// --top bounds each of them, sizes and seconds read as a person wants them.
import t from 'tap'
import { formatBytes } from '../../src/cli/format.js'
import { buildReport, type ReportMirror } from '../../src/insights/report/document.js'
import { formatPercent, formatSeconds, formatWhen, renderReport } from '../../src/insights/report/render.js'
import { APP, insightsOf, ML, replicaA, replicaB, TOOL, WEB } from './report-fixtures.js'

const MIRRORS: ReportMirror[] = [
  { url: 'http://10.0.3.17:5000', state: 'merged', instance: 'mirror-a' },
  { url: 'http://10.0.3.18:5000', state: 'merged', instance: 'mirror-b' },
  { url: 'http://10.0.3.19:5000', state: 'missing', error: 'http://10.0.3.19:5000/api/v1/summary: ECONNREFUSED (gave up after 3 tries)' },
]
const NOW = new Date('2026-12-02T12:00:10Z')
const both = () => buildReport(MIRRORS, [insightsOf(replicaA()), insightsOf(replicaB())], NOW)

/** The section that starts with `heading`, up to the next blank line. */
function section(text: string, heading: string): string[] {
  const lines = text.split('\n')
  const start = lines.findIndex((l) => l.startsWith(heading))
  if (start < 0) throw new Error(`no section ${heading}`)
  const end = lines.findIndex((l, i) => i > start && l === '')
  return lines.slice(start, end < 0 ? undefined : end)
}

/** A table's rows (header included) as cells: columns are two or more spaces apart. */
const cells = (lines: string[]): string[][] => lines.map((l) => l.trim().split(/\s{2,}/))

t.test('sizes, seconds, ratios and times', async (t) => {
  t.same([0, 999, 1000, 35_010_000, 420_010_000, 5_200_000_000].map(formatBytes), ['0 B', '999 B', '1.0 KB', '35 MB', '420 MB', '5.2 GB'])
  t.same([0.042, 0.5, 3.214, 10, 42.06, 65, 3599.4, 3600, 11_220].map(formatSeconds), ['0.04 s', '0.50 s', '3.21 s', '10.0 s', '42.1 s', '1m 05s', '59m 59s', '1h 00m', '3h 07m'])
  t.equal(formatSeconds(undefined), '-')
  t.same([0.875, null, 1].map(formatPercent), ['87.5%', '-', '100.0%'])
  t.equal(formatWhen('2026-12-02T10:59:20.123Z'), '2026-12-02 10:59:20Z')
})

t.test('the report of two replicas: every table, its rows and figures', async (t) => {
  const text = renderReport(both(), 10)
  t.match(text, /^Stevedore report: 2 replicas \(mirror-a at http:\/\/10\.0\.3\.17:5000, mirror-b at http:\/\/10\.0\.3\.18:5000\), since 2026-12-01 08:00:00Z, as of 2026-12-02 12:00:05Z$/m)
  t.match(text, /^Left out: http:\/\/10\.0\.3\.19:5000: .*ECONNREFUSED/m, 'the missing replica is named in the report too')

  const top = cells(section(text, 'Top images by pull-seconds'))
  t.equal(top[0]?.[0], 'Top images by pull-seconds (4)')
  t.same(top[1], ['IMAGE', 'PULLS', 'COLD', 'PARTIAL', 'WARM', 'COLD P50', 'COLD P95', 'WARM P50', 'WARM P95', 'SIZE', 'LAYERS', 'PULL-SECONDS'])
  t.same(top.slice(2), [
    [ML, '1', '1', '0', '0', '40.0 s', '40.0 s', '-', '-', '420 MB', '2', '40.0 s'],
    [APP, '6', '4', '1', '1', '4.00 s', '10.0 s', '0.50 s', '0.50 s', '35 MB', '2', '25.5 s'],
    [WEB, '2', '1', '0', '1', '4.00 s', '4.00 s', '1.00 s', '1.00 s', '32 MB', '2', '5.00 s'],
    [TOOL, '1', '1', '0', '0', '3.00 s', '3.00 s', '-', '-', '7.0 MB', '3', '3.00 s'],
  ], 'merged figures: app:1 has both replicas\' pulls, p95 of the pooled samples')

  const slow = cells(section(text, 'Slowest cold pulls'))
  t.same(slow[1], ['IMAGE', 'CACHE', 'CLIENT', 'SECONDS', 'BYTES', 'WHEN'])
  t.same(slow.slice(2).map((r) => r.slice(0, 5)), [
    [ML, 'cold', 'node-7', '40.0 s', '420 MB'],
    [APP, 'cold', '10.0.0.101', '10.0 s', '35 MB'],
    [APP, 'cold', 'node-1', '6.00 s', '34 MB'],
    [TOOL, 'cold', '10.0.0.102', '3.00 s', '7.0 MB'],
    [APP, 'partial, failed', '10.0.0.103', '2.00 s', '5.0 MB'],
  ], 'cold and partial pulls of both replicas, slowest first; the node name when known; no warm pull')
  t.equal(slow[2]?.[5], '2026-12-02 10:59:20Z', 'when it started')

  const layers = cells(section(text, 'Largest layers'))
  t.equal(layers[0]?.[0], 'Largest layers (9)')
  t.same(layers[2], ['sha256:d1d1d1d1d1d1', '400 MB', '1', `${ML} only`])
  t.same(layers[3], ['sha256:babababababa', '30 MB', '2', `${APP}, ${WEB}`], 'the base and the two images that share it (one from each replica)')

  const saved = section(text, 'What the mirror saved').join('\n')
  t.match(saved, /requests from cache\s+350 of 400 \(87\.5%\)/)
  t.match(saved, /bytes from cache\s+3\.3 GB of 4\.0 GB served \(82\.5%\); 700 MB from the upstream/)
  t.match(saved, /upstream saved\s+3\.3 GB and 350 requests/)
  t.match(saved, /pulls\s+13: 7 cold, 2 partial, 4 warm, 1 failed; 12 resolves/)
  t.match(saved, /fills in progress\s+3/)
  t.match(saved, /cache\s+5\.2 GB of 20 GB quota \(26\.0%\): the largest any replica reports \(replicas on one bucket share one store\)/)
  t.match(saved, /rate-limit budget \(the lowest any replica was told\)/)
  t.match(saved, /docker\.io\s+75\s+12\.0 s\s+1\s+50/)
  t.match(saved, /ghcr\.io\s+not announced\s+-\s+2\s+15/)

  const advice = section(text, 'Size advice').join('\n')
  t.match(advice, /One layer is most of the image \(over 50%\)/)
  t.match(advice, new RegExp(`${ML.replace(/\./g, '\\.')}\\s+420 MB\\s+sha256:d1d1d1d1d1d1\\s+400 MB\\s+95%\\s+this image only`))
  t.match(advice, /docker\.io\/library\/app:1\s+35 MB\s+sha256:babababababa\s+30 MB\s+86%\s+2 images/)
  t.match(advice, /Sharing no layer with any other image here/)
  t.match(advice, /ghcr\.io\/org\/tool:1\s+7\.0 MB\s+3\s+3\.0 MB/)
  t.match(advice, /A shared base, estimated: if these 2 images were built on one base, a node pulling all of them would pull about 3\.0 MB less\./)
  t.match(advice, /their bottom layers add up to 23 MB; with one base, a node pulls only the largest of them \(20 MB\), once/)
})

t.test('--top bounds every table and list', async (t) => {
  const text = renderReport(both(), 2)
  const rows = (heading: string): number => section(text, heading).length - 2
  t.match(text, /^Top images by pull-seconds \(top 2 of 4\)$/m)
  t.equal(rows('Top images by pull-seconds'), 2)
  t.match(text, /^Slowest cold pulls \(top 2 of 5\)$/m)
  t.equal(rows('Slowest cold pulls'), 2)
  t.match(text, /^Largest layers \(top 2 of 9\)$/m)
  t.equal(rows('Largest layers'), 2)
  const one = renderReport(both(), 1)
  t.equal(cells(section(one, 'Top images by pull-seconds'))[2]?.[0], ML, 'the first by pull-seconds')
  t.match(one, /^ {4}and 2 more$/m, 'the dominant-layer list: 1 shown, 2 more')
  t.match(one, /^ {4}and 1 more$/m, 'the lone-image list: 1 shown, 1 more')
})

t.test('one replica; an empty one', async (t) => {
  const one = renderReport(buildReport([MIRRORS[0] as ReportMirror], [insightsOf(replicaA())], NOW), 10)
  t.match(one, /^Stevedore report: 1 replica \(mirror-a at http:\/\/10\.0\.3\.17:5000\)/m)
  t.match(one, /cache\s+5\.0 GB of 20 GB quota \(25\.0%\)$/m, 'one replica: no note on merging')
  t.notMatch(one, /lowest any replica/)
  const a = replicaA()
  const empty = renderReport(buildReport([MIRRORS[0] as ReportMirror], [{ summary: { ...a.summary, upstreams: [], cache: { size: 0, quota: null, usedRatio: null } }, images: [], layers: [], pulls: [] }], NOW), 10)
  t.match(empty, /^Top images by pull-seconds \(0\)\n {2}none yet$/m)
  t.match(empty, /^Slowest cold pulls \(0\)\n {2}none yet$/m)
  t.match(empty, /^Largest layers \(0\)\n {2}none yet$/m)
  t.match(empty, /cache\s+0 B \(no quota\)/)
  t.match(empty, /Nothing to advise/)
})
