// The mirror's HTTPS listener on the real process: a certificate from a
// private CA (openssl, IP SAN 127.0.0.1, as cert-manager issues for a
// clusterIP), skopeo trusting that CA through a cert dir, plain HTTP refused,
// and the certificate reloaded when a Secret-style symlink swap replaces it.
import { X509Certificate } from 'node:crypto'
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { request } from 'undici'
import { startMirror } from '../harness/mirror.js'
import { startStack } from '../harness/stack.js'
import { makeCa, makeServerCert } from '../harness/tls-certs.js'
import { agentFor, requireTools, run, tempDir } from '../harness/tools.js'

/** The fingerprint of the certificate the server presents. */
function servedFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '')
      socket.end()
    })
    socket.once('error', reject)
  })
}

t.test('tls: HTTPS only, trusted through its CA; the certificate is reloaded on a Secret update', async (t) => {
  if (!requireTools(t, 'docker-registry', 'skopeo', 'openssl')) return
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-tls')
  const ca = await makeCa(join(dir, 'ca'), 'stevedore test CA')
  const caPem = await readFile(ca.certPath, 'utf8')
  // A mounted Secret: tls.crt → ..data/tls.crt, ..data → a timestamped folder, swapped on update.
  const secret = join(dir, 'secret')
  await mkdir(secret)
  const first = await makeServerCert(join(secret, '..2026_12_03_01'), ca)
  await symlink('..2026_12_03_01', join(secret, '..data'))
  await symlink('..data/tls.crt', join(secret, 'tls.crt'))
  await symlink('..data/tls.key', join(secret, 'tls.key'))
  const mirror = await startMirror(t, {
    config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, tls: { cert: join(secret, 'tls.crt'), key: join(secret, 'tls.key') } },
    ca: caPem,
  })
  t.match(mirror.url, /^https:/)

  const v2 = await request(`${mirror.url}/v2/`, { dispatcher: agentFor(caPem) })
  await v2.body.dump()
  t.equal(v2.statusCode, 200, 'HTTPS, verified against the CA')

  // Plain HTTP on the same port is not served.
  const plain = await new Promise<string>((resolve) => {
    const socket = connect(mirror.port, '127.0.0.1', () => socket.write('GET /v2/ HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n'))
    const got: Buffer[] = []
    socket.on('data', (b: Buffer) => got.push(b))
    socket.on('error', () => undefined)
    socket.on('close', () => resolve(Buffer.concat(got).toString('latin1')))
  })
  t.notMatch(plain, /^HTTP\/1\.1 200/, 'plain HTTP gets no registry answer')

  // skopeo trusts the CA through a cert dir, as containerd does through hosts.toml's `ca`.
  const certDir = join(dir, 'certs.d')
  await mkdir(certDir)
  await run('cp', [ca.certPath, join(certDir, 'ca.crt')])
  const ref = `docker://${mirror.host}/${s.repo}:oci`
  const inspected = await run('skopeo', ['inspect', '--cert-dir', certDir, ref], { timeoutMs: 60_000 })
  t.equal(inspected.code, 0, `skopeo over TLS: ${inspected.stderr.slice(0, 300)}`)
  t.equal((JSON.parse(inspected.stdout || '{}') as { Digest?: string }).Digest, s.oci.digest)
  const untrusted = await run('skopeo', ['inspect', ref], { timeoutMs: 60_000 })
  t.not(untrusted.code, 0, 'without the CA, skopeo refuses the certificate')
  t.match(untrusted.stderr, /certificate|x509/i)

  const before = await servedFingerprint(mirror.port, caPem)
  t.equal(before, new X509Certificate(await readFile(first.certPath)).fingerprint256, 'the first certificate is served')
  const renewed = await makeServerCert(join(secret, '..2026_12_03_02'), ca)
  await symlink('..2026_12_03_02', join(secret, '..data_tmp'))
  await rename(join(secret, '..data_tmp'), join(secret, '..data'))
  const want = new X509Certificate(await readFile(renewed.certPath)).fingerprint256
  let now = before
  for (const until = Date.now() + 10_000; now !== want && Date.now() < until;) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    now = await servedFingerprint(mirror.port, caPem)
  }
  t.equal(now, want, 'the renewed certificate is served, without a restart')
  await mirror.settle()
  t.ok(mirror.logs().some((l) => l['msg'] === 'tls: certificate reloaded'), 'logged')
  t.equal(mirror.exitStatus(), null)
})

t.test('tls: a key that is not the certificate\'s stops start-up, naming the files', async (t) => {
  if (!requireTools(t, 'openssl')) return
  const dir = await tempDir(t, 'stevedore-tls-bad')
  const ca = await makeCa(join(dir, 'ca'), 'ca')
  const a = await makeServerCert(join(dir, 'a'), ca)
  const b = await makeServerCert(join(dir, 'b'), ca)
  const config = join(dir, 'config.yaml')
  await writeFile(config, `upstreams:\n  r.test:\n    url: http://127.0.0.1:1\nstorage:\n  filesystem:\n    root: ${join(dir, 'cache')}\ntls:\n  cert: ${a.certPath}\n  key: ${b.keyPath}\n`)
  const r = await run(process.execPath, [join(import.meta.dirname, '..', '..', 'dist', 'cli.js'), 'serve', '--config', config, '--listen', '127.0.0.1:0'], { timeoutMs: 20_000 })
  t.equal(r.code, 1, 'exit 1')
  t.match(r.stderr, /^stevedore: config: tls: .*tls\.crt and .*tls\.key are not a certificate and its key/, r.stderr.slice(0, 300))
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line, no stack')
})
