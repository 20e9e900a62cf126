// `stevedore hosts` against a real containerd 1.6: the files it writes make
// `ctr images pull --hosts-dir` go through the mirror to a local distribution
// registry (a registry host with a port), and straight to the registry when
// the mirror is down. Everything listens on 127.0.0.1.
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd } from '../harness/containerd.js'
import { buildImage, pushImage } from '../harness/images.js'
import { cleanEnv, REPO_ROOT, startMirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { requireTools, run, tempDir } from '../harness/tools.js'
import { snapshot } from '../harness/files.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'

const CLI = join(REPO_ROOT, 'dist', 'cli.js')


const stevedoreHosts = (args: string[]) => run(process.execPath, [CLI, 'hosts', ...args], { env: cleanEnv(), timeoutMs: 30_000 })

t.test('containerd pulls through the mirror with the files stevedore hosts writes', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr', 'docker-registry')) return
  const work = await tempDir(t, 'stevedore-hosts-e2e')

  const registry = await startRegistry(t)
  const image = await buildImage(join(work, 'image'), { layers: [300_000, 20_000] })
  await pushImage(registry, 'library/hello', '1', image)

  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(work, 'cache') } },
      upstreams: {
        [registry.host]: { url: registry.url },
        'docker.io': { url: 'https://registry-1.docker.io' },
        'ghcr.io': { url: 'https://ghcr.io' },
        'quay.io': { url: 'https://quay.io' },
      },
      log: { level: 'info' },
    },
  })

  const certs = join(work, 'certs.d')
  await mkdir(join(certs, 'quay.io'), { recursive: true })
  const foreign = 'server = "https://quay.io"\n\n[host."https://quay-mirror.internal.example"]\n  capabilities = ["pull", "resolve"]\n'
  await writeFile(join(certs, 'quay.io', 'hosts.toml'), foreign)
  const before = await snapshot(certs)

  const written = await stevedoreHosts(['--mirror', mirror.url, '--dir', certs, '--config', mirror.configPath])
  t.equal(written.code, 0, `stevedore hosts${written.code === 0 ? '' : `: ${written.stderr}`}`)
  t.comment(written.stdout.trimEnd())

  // The folder names, taken from what the command says it did.
  const folders = (action: string): string[] =>
    written.stdout
      .split('\n')
      .filter((l) => l.startsWith(action))
      .map((l) => /^\S+(?: \S+)? +(\S+)\/hosts\.toml/.exec(l)?.[1] ?? '')
      .map((p) => p.slice(certs.length + 1))
      .sort()
  t.same(folders('written'), [registry.host, 'docker.io', 'ghcr.io'].sort(), 'one folder per upstream, named by registry host; a port stays as host:port')
  t.same(folders('skipped'), ['quay.io'], 'the foreign quay.io file is reported')
  t.equal(await readFile(join(certs, 'quay.io', 'hosts.toml'), 'utf8'), foreign, 'and left untouched')
  t.match(await readFile(join(certs, 'docker.io', 'hosts.toml'), 'utf8'), /^server = "https:\/\/registry-1\.docker\.io"$/m)
  t.match(await readFile(join(certs, registry.host, 'hosts.toml'), 'utf8'), new RegExp(`^server = "${registry.url}"$`, 'm'))

  const again = await stevedoreHosts(['--mirror', mirror.url, '--dir', certs, '--config', mirror.configPath])
  t.equal(again.code, 0)
  t.equal(again.stdout.split('\n').filter((l) => l.startsWith('unchanged')).length, 3, 'idempotent')

  const containerd = await startContainerd(t)
  const ref = `${registry.host}/library/hello:1`

  // Through the mirror.
  registry.resetRequests()
  const pulled = await containerd.pull(ref, { hostsDir: certs })
  t.equal(pulled.code, 0, `pull through the mirror${pulled.code === 0 ? '' : `: ${pulled.stderr}`}`)
  t.ok((await containerd.images()).includes(ref))
  const fromContainerd = registry.requests().filter((r) => r.userAgent.startsWith('containerd'))
  t.same(fromContainerd, [], 'containerd never went to the registry itself')
  // The mirror's request log lines: whatever the field names, one names containerd as the client.
  const mirrorSaw = mirror.logs().filter((l) => Object.values(l).some((v) => typeof v === 'string' && v.startsWith('containerd/')) && JSON.stringify(l).includes('/v2/library/hello/'))
  t.ok(mirrorSaw.some((l) => JSON.stringify(l).includes('/manifests/')), 'the mirror served the manifest to containerd')
  t.ok(mirrorSaw.some((l) => JSON.stringify(l).includes(image.layers[0]?.digest ?? 'none')), 'and the layer')
  t.ok(registry.count('GET', `/blobs/${image.layers[0]?.digest ?? ''}`) >= 1, 'which it fetched from the upstream')

  // Mirror down: containerd falls back to `server`, the registry itself.
  await mirror.stop()
  await containerd.clean()
  registry.resetRequests()
  const direct = await containerd.pull(ref, { hostsDir: certs })
  t.equal(direct.code, 0, `pull with the mirror down${direct.code === 0 ? '' : `: ${direct.stderr}`}`)
  t.ok(registry.requests().some((r) => r.userAgent.startsWith('containerd') && r.path.includes('/manifests/')), 'containerd went straight to the registry')

  // --remove: the folder exactly as it was before.
  const removed = await stevedoreHosts(['--remove', '--dir', certs])
  t.equal(removed.code, 0, `stevedore hosts --remove${removed.code === 0 ? '' : `: ${removed.stderr}`}`)
  t.match(removed.stdout, /^skipped +.*quay\.io\/hosts\.toml/m)
  t.same(await snapshot(certs), before, '--remove leaves the folder as it was before')
})

t.test('the watch loop ends cleanly on SIGTERM, removing its files with --remove-on-exit', async (t) => {
  const work = await tempDir(t, 'stevedore-hosts-watch')
  const certs = join(work, 'certs.d')
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, [CLI, 'hosts', '--mirror', 'http://127.0.0.1:9', '--dir', certs, '--watch', '--interval', '200ms', '--remove-on-exit'], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr.on('data', (b: Buffer) => (out += b.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const deadline = Date.now() + 10_000
  while (!(await readdir(certs).catch(() => [] as string[])).includes('docker.io')) {
    if (Date.now() > deadline) throw new Error(`no files written: ${out}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  child.kill('SIGTERM')
  t.equal(await exited, 0, `exit status 0 on SIGTERM${out.includes('stopped') ? '' : `: ${out}`}`)
  t.same(await readdir(certs), [], 'its files are gone')
  t.match(out, /stopped; removed/)
})

t.test('containerd pulls through a TLS mirror that asks for credentials, with the CA and the header from stevedore hosts only', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr', 'docker-registry', 'openssl', 'htpasswd')) return
  const work = await tempDir(t, 'stevedore-hosts-auth-tls')
  const registry = await startRegistry(t)
  const image = await buildImage(join(work, 'image'), { layers: [200_000] })
  await pushImage(registry, 'library/locked', '1', image)

  // The node agent's Secret: the CA and user:password; the mirror's: its certificate and htpasswd.
  const ca = await makeCa(join(work, 'ca'), 'stevedore test CA')
  const cert = await makeServerCert(join(work, 'tls'), ca)
  const htpasswd = join(work, 'htpasswd')
  await run('htpasswd', ['-B', '-b', '-c', htpasswd, 'node-agent', 'pull-through'])
  const authFile = join(work, 'node-auth')
  await writeFile(authFile, 'node-agent:pull-through\n')
  const mirror = await startMirror(t, {
    config: {
      storage: { filesystem: { root: join(work, 'cache') } },
      upstreams: { [registry.host]: { url: registry.url } },
      auth: { htpasswd },
      tls: { cert: cert.certPath, key: cert.keyPath },
    },
    ca: await readFile(ca.certPath, 'utf8'),
  })

  const certs = join(work, 'certs.d')
  const written = await stevedoreHosts(['--mirror', mirror.url, '--dir', certs, '--config', mirror.configPath, '--auth-file', authFile, '--ca', ca.certPath])
  t.equal(written.code, 0, `stevedore hosts${written.code === 0 ? '' : `: ${written.stderr}`}`)
  const containerd = await startContainerd(t)
  const ref = `${registry.host}/library/locked:1`
  registry.resetRequests()
  const pulled = await containerd.pull(ref, { hostsDir: certs })
  t.equal(pulled.code, 0, `pull through the mirror${pulled.code === 0 ? '' : `: ${pulled.stderr}`}`)
  t.same(registry.requests().filter((r) => r.userAgent.startsWith('containerd')), [], 'containerd never went to the registry itself: it trusted the mirror and was let in')
  await mirror.settle()
  const served = mirror.logs().filter((l) => JSON.stringify(l).includes('/v2/library/locked/') && JSON.stringify(l).includes('containerd/'))
  t.ok(served.some((l) => JSON.stringify(l).includes(image.layers[0]?.digest ?? 'none') && JSON.stringify(l).includes('200')), 'the mirror served the layer to containerd')

  // Without the header, the mirror refuses containerd, which then goes to the registry itself.
  const plain = join(work, 'certs-plain.d')
  t.equal((await stevedoreHosts(['--mirror', mirror.url, '--dir', plain, '--config', mirror.configPath, '--ca', ca.certPath])).code, 0)
  await containerd.clean()
  registry.resetRequests()
  const fellBack = await containerd.pull(ref, { hostsDir: plain })
  t.equal(fellBack.code, 0, 'the pull still works')
  t.ok(registry.requests().some((r) => r.userAgent.startsWith('containerd') && r.path.includes('/manifests/')), 'through the registry itself')
})
