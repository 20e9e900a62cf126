// Client authentication on the real mirror process, with an htpasswd file
// written by Apache's own `htpasswd -B` and skopeo as the client; the
// upstream is the real registry. Probes and metrics stay open.
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { fetchAll } from '../harness/http.js'
import { startMirror, type Mirror } from '../harness/mirror.js'
import { startStack } from '../harness/stack.js'
import { requireTools, run, runOk, tempDir } from '../harness/tools.js'

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const code = (body: Buffer): string | undefined => (JSON.parse(body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code

t.test('with auth.htpasswd: strangers get 401 with the Basic challenge, users pull, probes stay open', async (t) => {
  if (!requireTools(t, 'docker-registry', 'skopeo', 'htpasswd')) return
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-client-auth')
  const file = join(dir, 'htpasswd')
  await runOk('htpasswd', ['-B', '-b', '-c', file, 'node-agent', 'pull-secret'])
  const mirror = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, auth: { htpasswd: file } } })
  const v2 = `${mirror.url}/v2/`

  for (const path of ['/v2/', `/v2/${s.repo}/manifests/oci`, `/v2/${s.repo}/blobs/${s.oci.config.digest}`, '/', '/api/status']) {
    const r = await fetchAll(`${mirror.url}${path}`)
    t.equal(r.status, 401, `${path}: 401 without credentials`)
    t.equal(r.headers['www-authenticate'], 'Basic realm="stevedore"', `${path}: the challenge`)
    t.equal(code(r.body), 'UNAUTHORIZED', `${path}: the spec's error body`)
  }
  for (const path of ['/healthz', '/readyz', '/metrics']) t.equal((await fetchAll(`${mirror.url}${path}`)).status, 200, `${path} stays open`)
  t.equal((await fetchAll(v2, { headers: { authorization: basic('node-agent', 'wrong') } })).status, 401, 'a wrong password')
  t.equal((await fetchAll(v2, { headers: { authorization: basic('node-agent', 'pull-secret') } })).status, 200, 'the right one')

  const ref = `docker://${mirror.host}/${s.repo}:oci`
  const ok = await run('skopeo', ['inspect', '--tls-verify=false', '--creds', 'node-agent:pull-secret', ref], { timeoutMs: 60_000 })
  t.equal(ok.code, 0, `skopeo with credentials: ${ok.stderr.slice(0, 200)}`)
  t.equal((JSON.parse(ok.stdout) as { Digest: string }).Digest, s.oci.digest, 'the manifest, through the mirror')
  const copy = await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', 'node-agent:pull-secret', ref, `oci:${join(dir, 'out')}:oci`], { timeoutMs: 60_000 })
  t.equal(copy.code, 0, `skopeo copies every blob: ${copy.stderr.slice(0, 200)}`)
  const refused = await run('skopeo', ['inspect', '--tls-verify=false', ref], { timeoutMs: 60_000 })
  t.not(refused.code, 0, 'skopeo without credentials is refused')
  t.match(refused.stderr, /unauthorized|authentication required/i)
})

async function authMirror(t: Test, users: Array<[string, string]>): Promise<{ mirror: Mirror; file: string; v2: string }> {
  const s = await startStack(t)
  const dir = await tempDir(t, 'stevedore-client-auth')
  const file = join(dir, 'htpasswd')
  for (const [i, [user, password]] of users.entries()) await runOk('htpasswd', ['-B', '-b', ...(i === 0 ? ['-c'] : []), file, user, password])
  const mirror = await startMirror(t, { config: { ...s.config, storage: { filesystem: { root: join(dir, 'cache') } }, auth: { htpasswd: file } } })
  return { mirror, file, v2: `${mirror.url}/v2/` }
}

t.test('failed attempts are limited per address before any hashing', async (t) => {
  if (!requireTools(t, 'docker-registry', 'htpasswd')) return
  const { mirror, v2 } = await authMirror(t, [['alice', 'first']])
  t.equal((await fetchAll(v2, { headers: { authorization: basic('alice', 'first') } })).status, 200)
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) statuses.push((await fetchAll(v2, { headers: { authorization: basic('alice', `guess-${i}`) } })).status)
  t.same(statuses.slice(0, 10), Array<number>(10).fill(401), 'ten wrong passwords: 401')
  t.same(statuses.slice(10), [429, 429], 'then 429, without hashing')
  const limited = await fetchAll(v2, { headers: { authorization: basic('alice', 'guess-x') } })
  t.equal(code(limited.body), 'TOOMANYREQUESTS')
  t.ok(Number(limited.headers['retry-after']) >= 1, `with Retry-After (${limited.headers['retry-after']})`)
  t.equal((await fetchAll(v2, { headers: { authorization: basic('alice', 'first') } })).status, 200, 'a header verified before is still served')
  t.equal(mirror.exitStatus(), null)
})

t.test('the htpasswd file is re-read when it changes', async (t) => {
  if (!requireTools(t, 'docker-registry', 'htpasswd')) return
  const { mirror, file, v2 } = await authMirror(t, [['alice', 'first']])
  t.equal((await fetchAll(v2, { headers: { authorization: basic('alice', 'first') } })).status, 200, 'alice, verified and remembered')
  await runOk('htpasswd', ['-B', '-b', file, 'bob', 'second'])
  let status = 0
  for (const until = Date.now() + 10_000; status !== 200 && Date.now() < until;) {
    // Slowly: each refusal counts against this address.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    status = (await fetchAll(v2, { headers: { authorization: basic('bob', 'second') } })).status
  }
  t.equal(status, 200, 'a user added to the file is let in without a restart')
  await runOk('htpasswd', ['-D', file, 'alice'])
  for (const until = Date.now() + 10_000; status !== 401 && Date.now() < until;) {
    await new Promise((resolve) => setTimeout(resolve, 1000))
    status = (await fetchAll(v2, { headers: { authorization: basic('alice', 'first') } })).status
  }
  t.equal(status, 401, 'a user removed from it is refused, though verified before')
  await mirror.settle()
  t.ok(mirror.logs().some((l) => l['msg'] === 'htpasswd reloaded'), 'logged')
})
