// Real clients through the mirror: skopeo (containers/image, as podman and
// CRI-O use it) and containerd's ctr with a hosts.toml, including a pull that
// succeeds with the upstream gone.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd, writeHostsToml } from '../harness/containerd.js'
import { startStack } from '../harness/stack.js'
import { requireTools, run, tempDir } from '../harness/tools.js'

interface OciIndex { manifests: Array<{ digest: string; annotations?: Record<string, string> }> }

t.test('skopeo copies through the mirror, by ns-less name and by path prefix', async (t) => {
  if (!requireTools(t, 'docker-registry', 'skopeo')) return
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-skopeo')

  for (const [tag, m] of [['oci', s.oci], ['docker', s.docker]] as const) {
    const dest = join(dir, tag)
    const r = await run('skopeo', ['copy', '--src-tls-verify=false', '--preserve-digests', `docker://${s.mirror.host}/${s.repo}:${tag}`, `oci:${dest}:${tag}`], { timeoutMs: 60_000 })
    t.equal(r.code, 0, `skopeo copy ${tag}: ${r.stderr}`)
    const index = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8')) as OciIndex
    t.equal(index.manifests[0]?.digest, m.digest, `${tag}: same manifest digest`)
    for (const layer of m.layers) {
      const copied = await readFile(join(dest, 'blobs', 'sha256', layer.digest.slice(7)))
      t.ok(copied.equals(await readFile(layer.path)), `${tag}: layer ${layer.digest.slice(7, 19)} identical`)
    }
  }

  const all = join(dir, 'all')
  const r = await run('skopeo', ['copy', '--all', '--src-tls-verify=false', '--preserve-digests', `docker://${s.mirror.host}/${s.repo}:index`, `oci:${all}:index`], { timeoutMs: 60_000 })
  t.equal(r.code, 0, `skopeo copy --all of the OCI index: ${r.stderr}`)
  t.equal((JSON.parse(await readFile(join(all, 'index.json'), 'utf8')) as OciIndex).manifests[0]?.digest, s.index.digest, 'index digest kept')

  // podman/CRI-O style: the registry's host is the first path component on the
  // mirror. A host:port cannot be a path component of a reference, so the
  // upstream gets a plain host name here; skopeo tries the mirror first and never
  // needs to resolve that name.
  const upstreams = s.config['upstreams'] as Record<string, unknown>
  await s.mirror.writeConfig({ ...s.config, upstreams: { ...upstreams, 'registry.test': { url: s.registry.url } } })
  await s.mirror.stop()
  await s.mirror.start()
  const conf = join(dir, 'registries.conf')
  await writeFile(conf, `[[registry]]
location = "registry.test"
[[registry.mirror]]
location = "${s.mirror.host}/registry.test"
insecure = true
`)
  const before = s.mirror.logs().length
  const viaPrefix = join(dir, 'prefix')
  const p = await run('skopeo', ['--registries-conf', conf, 'copy', `docker://registry.test/${s.repo}:oci`, `oci:${viaPrefix}:oci`], { timeoutMs: 60_000 })
  t.equal(p.code, 0, `skopeo through a prefix mirror: ${p.stderr}`)
  await s.mirror.settle()
  const prefixed = s.mirror.logs().slice(before).filter((l) => l['msg'] === 'request' && String(l['path']).startsWith(`/v2/registry.test/${s.repo}/`))
  t.ok(prefixed.length >= 2, 'requests arrived with the registry host as path prefix')
  t.ok(prefixed.every((l) => l['upstream'] === 'registry.test' && l['repository'] === s.repo && l['status'] === 200), 'routed to that upstream and answered')
  const copied = JSON.parse(await readFile(join(viaPrefix, 'index.json'), 'utf8')) as OciIndex
  t.equal(copied.manifests[0]?.digest, s.oci.digest, 'same manifest digest through the prefix mirror')
})

t.test('containerd pulls through hosts.toml, then again with the upstream down', async (t) => {
  if (!requireTools(t, 'docker-registry', 'containerd', 'ctr')) return
  const s = await startStack(t, { layers: [1_500_000, 700_000] })
  const ctrd = await startContainerd(t)
  const hostsDir = await tempDir(t, 'stevedore-hosts')
  await writeHostsToml(hostsDir, s.registry.host, s.registry.url, s.mirror.url)

  for (const tag of ['oci', 'docker', 'index', 'list']) {
    const ref = `${s.registry.host}/${s.repo}:${tag}`
    const r = await ctrd.pull(ref, { hostsDir, plainHttp: true })
    t.equal(r.code, 0, `ctr pull ${tag}: ${r.stderr.slice(-500)}`)
  }
  await s.mirror.settle()
  const viaMirror = s.mirror.logs().filter((l) => l['msg'] === 'request' && String(l['ua']).startsWith('containerd/'))
  t.ok(viaMirror.length > 0, 'containerd sent its requests to the mirror')
  t.ok(viaMirror.every((l) => l['upstream'] === s.registry.host), 'routed by ?ns= to the upstream')
  t.ok(viaMirror.every((l) => l['status'] === 200), 'and every one succeeded')
  const direct = s.registry.requests().filter((q) => q.userAgent.startsWith('containerd/'))
  t.equal(direct.length, 0, 'containerd never had to fall back to the upstream')

  await s.registry.stop()
  await ctrd.clean()
  t.same(await ctrd.images(), [], 'containerd forgot the images')
  for (const tag of ['oci', 'docker', 'index', 'list']) {
    const r = await ctrd.pull(`${s.registry.host}/${s.repo}:${tag}`, { hostsDir, plainHttp: true })
    t.equal(r.code, 0, `ctr pull ${tag} from the mirror alone: ${r.stderr.slice(-500)}`)
  }
  await s.mirror.settle()
  const stale = s.mirror.logs().filter((l) => l['msg'] === 'request' && String(l['ua']).startsWith('containerd/') && l['tag'] !== undefined)
  t.ok(stale.length > 0, 'tags resolved while the upstream is down')
})
