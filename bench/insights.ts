// What insights cost the serving path (`npx tsx bench/insights.ts [--quick]`):
// the same Stevedore with `insights.enabled: false` and `true`, side by side,
// on the same upstream and image, warm:
//   manifests     wrk on a manifest by tag (one client: every request joins one session)
//   new clients   the same, but every request a new user agent (a new client each,
//                 so the client table fills to insights.maxClients and churns)
//   pulls         whole pulls (manifest, config, two layers) by 16 workers, each pull
//                 a new client: pulls/s, and the mirror's CPU per pull
// then, on the enabled one: the cost of GET /api/v1/images and /summary, and the
// size of the saved history. distribution's proxy gives the manifest figure context.
import { rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Agent, request } from 'undici'
import { Scope } from './scope.js'
import { wrk } from './clients.js'
import { cpuSeconds, memoryOf, startDistributionProxy, startStevedore, type Stevedore } from './systems.js'
import { buildImage, pushImage } from '../test/harness/images.js'
import { startRegistry } from '../test/harness/registry.js'
import { makeTemp, removeDir } from '../test/harness/tools.js'

const QUICK = process.argv.includes('--quick')
const WRK_S = QUICK ? 3 : 10
const PULLS = QUICK ? 400 : 3000
const WORKERS = 16
const CONNECTIONS = 32
const progress = (m: string): void => void process.stderr.write(`bench: ${m}\n`)
const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })

async function main(): Promise<void> {
  const scope = new Scope()
  try {
    const upstream = await startRegistry(scope.asTest(), {})
    const work = await makeTemp('stevedore-bench-insights')
    scope.teardown(() => removeDir(work))
    const img = await buildImage(join(work, 'img'), { layers: [200_000, 50_000] })
    await pushImage(upstream, 'bench/app', '1', img)
    const systems: Record<'off' | 'on', Stevedore> = {
      off: await startStevedore(scope, 'insights-off', upstream.host, upstream.url, undefined, { insights: { enabled: false } }),
      on: await startStevedore(scope, 'insights-on', upstream.host, upstream.url, undefined, { insights: { sessionIdle: '1s' } }),
    }
    const dist = await startDistributionProxy(scope, upstream.url)
    const manifestPath = '/v2/bench/app/manifests/1'
    const accept = 'application/vnd.oci.image.manifest.v1+json'
    const blobs = [img.config.digest, ...img.layers.map((l) => l.digest)]
    // Warm every system first: these figures are about the serving path, not fills.
    for (const base of [systems.off.url, systems.on.url, dist.url]) {
      for (const path of [manifestPath, ...blobs.map((d) => `/v2/bench/app/blobs/${d}`)]) {
        const res = await request(`${base}${path}`, { headers: { accept } })
        await res.body.dump()
        if (res.statusCode !== 200) throw new Error(`warming ${base}${path}: ${res.statusCode}`)
      }
    }
    const lua = join(work, 'new-client.lua')
    await writeFile(lua, 'local n = 0\nrequest = function()\n  n = n + 1\n  wrk.headers["User-Agent"] = "bench-client-" .. n\n  return wrk.format(nil)\nend\n')

    const rows: Array<{ name: string; off: string; on: string; ratio: string }> = []
    for (const [name, extra] of [['manifest by tag, one client', []], ['manifest by tag, a new client each', ['-s', lua]]] as const) {
      const r: Record<string, number> = {}
      for (const key of ['off', 'on'] as const) {
        const w = await wrk(`${systems[key].url}${manifestPath}`, { connections: CONNECTIONS, durationS: WRK_S, headers: { accept }, extraArgs: [...extra] })
        if (w.non2xx > 0 || w.requests === 0) throw new Error(`${name} (${key}): ${w.non2xx} non-2xx of ${w.requests}`)
        r[key] = w.rps
        progress(`${name}: insights ${key}: ${fmt(w.rps)} req/s, p99 ${fmt(w.p99 * 1000, 2)} ms`)
      }
      rows.push({ name: `${name}: req/s`, off: fmt(r['off'] ?? NaN), on: fmt(r['on'] ?? NaN), ratio: fmt((r['on'] ?? NaN) / (r['off'] ?? NaN), 3) })
    }
    const distRps = (await wrk(`${dist.url}${manifestPath}`, { connections: CONNECTIONS, durationS: WRK_S, headers: { accept } })).rps

    const pulls: Record<string, { perS: number; cpuMsPerPull: number }> = {}
    for (const key of ['off', 'on'] as const) {
      const s = systems[key]
      const agent = new Agent({ connections: WORKERS * 2 })
      const pid = s.mirror.pid() as number
      const cpu0 = await cpuSeconds([pid])
      const t0 = performance.now()
      let next = 0
      const worker = async (): Promise<void> => {
        while (next < PULLS) {
          const ua = `bench-node-${key}-${next++}`
          for (const path of [manifestPath, ...blobs.map((d) => `/v2/bench/app/blobs/${d}`)]) {
            const res = await request(`${s.url}${path}`, { dispatcher: agent, headers: { accept, 'user-agent': ua } })
            await res.body.dump()
            if (res.statusCode !== 200) throw new Error(`pull ${path}: ${res.statusCode}`)
          }
        }
      }
      await Promise.all(Array.from({ length: WORKERS }, worker))
      const seconds = (performance.now() - t0) / 1000
      const cpu = (await cpuSeconds([pid])) - cpu0
      await agent.close()
      pulls[key] = { perS: PULLS / seconds, cpuMsPerPull: (cpu * 1000) / PULLS }
      progress(`whole pulls, a new client each: insights ${key}: ${fmt(PULLS / seconds)} pulls/s, ${fmt((cpu * 1000) / PULLS, 3)} ms CPU a pull`)
    }
    rows.push({ name: `whole pulls (${PULLS}, ${WORKERS} at once, a new client each): pulls/s`, off: fmt(pulls['off']?.perS ?? NaN), on: fmt(pulls['on']?.perS ?? NaN), ratio: fmt((pulls['on']?.perS ?? NaN) / (pulls['off']?.perS ?? NaN), 3) })
    rows.push({ name: 'mirror CPU per pull, ms', off: fmt(pulls['off']?.cpuMsPerPull ?? NaN, 3), on: fmt(pulls['on']?.cpuMsPerPull ?? NaN, 3), ratio: fmt((pulls['on']?.cpuMsPerPull ?? NaN) / (pulls['off']?.cpuMsPerPull ?? NaN), 3) })
    const rss: Record<string, number> = {}
    for (const key of ['off', 'on'] as const) rss[key] = (await memoryOf(systems[key].mirror.pid() as number)).rss / 2 ** 20
    rows.push({ name: 'RSS after the runs, MiB', off: fmt(rss['off'] ?? NaN, 1), on: fmt(rss['on'] ?? NaN, 1), ratio: fmt((rss['on'] ?? NaN) / (rss['off'] ?? NaN), 3) })

    // The API's cost on the enabled one, after the pulls were recorded.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const timed = async (path: string, n: number): Promise<{ ms: number; bytes: number }> => {
      let bytes = 0
      const t0 = performance.now()
      for (let i = 0; i < n; i++) bytes = (await (await request(`${systems.on.url}${path}`)).body.arrayBuffer()).byteLength
      return { ms: (performance.now() - t0) / n, bytes }
    }
    const api: Array<[string, { ms: number; bytes: number }]> = []
    for (const path of ['/api/v1/summary', '/api/v1/images', '/api/v1/pulls?limit=1000', '/']) api.push([path, await timed(path, 20)])
    const summary = JSON.parse(Buffer.from(await (await request(`${systems.on.url}/api/v1/summary`)).body.arrayBuffer()).toString()) as { pulls: { total: number; resolves: number } }
    await systems.on.mirror.stop()
    const history = join(systems.on.cacheRoot, 'docs', 'insights', 'local.json')
    const historyBytes = await stat(history).then((s) => s.size, () => Number.NaN)

    const out: string[] = []
    out.push(`# insights: what they cost the serving path (${QUICK ? 'quick' : 'full'} run, ${new Date().toISOString()})`)
    out.push('')
    out.push('| figure | insights off | insights on | on / off |')
    out.push('|---|---|---|---|')
    for (const r of rows) out.push(`| ${r.name} | ${r.off} | ${r.on} | ${r.ratio} |`)
    out.push('')
    out.push(`distribution's proxy, manifest by tag, same wrk: ${fmt(distRps)} req/s (Stevedore with insights on: ${fmt((Number(rows[0]?.on.replace(/,/g, '')) / distRps), 2)}×)`)
    out.push(`recorded on the enabled mirror: ${summary.pulls.total} pulls, ${summary.pulls.resolves} resolves`)
    for (const [path, r] of api) out.push(`GET ${path}: ${fmt(r.ms, 2)} ms, ${fmt(r.bytes)} bytes`)
    out.push(`saved history: ${fmt(historyBytes)} bytes`)
    process.stdout.write(`${out.join('\n')}\n`)
    await rm(lua, { force: true })
  } finally {
    await scope.close()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
})
