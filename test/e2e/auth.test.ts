// The mirror as an upstream client: Basic auth (htpasswd), the bearer-token
// flow (a token issuer of the test's own whose JWTs distribution verifies),
// token caching, and refusal that sends containerd to the registry itself.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { startMirror } from '../harness/mirror.js'
import { mirrorConfig, startStack } from '../harness/stack.js'
import { requireTools, sleep, tempDir } from '../harness/tools.js'

for (const auth of ['htpasswd', 'token'] as const) {
  t.test(`upstream behind ${auth === 'htpasswd' ? 'Basic auth' : 'token auth'}`, async (t) => {
    if (!requireTools(t, 'docker-registry', 'openssl')) return
    const s = await startStack(t, { auth })
    const base = `${s.mirror.url}/v2/${s.repo}`
    const password = s.registry.password
    if (password === undefined) throw new Error('registry has no password')

    await t.test('with credentials the mirror pulls everything', async (t) => {
      for (const [tag, m] of [['oci', s.oci], ['index', s.index]] as const) {
        const r = await fetchAll(`${base}/manifests/${tag}`)
        t.equal(r.status, 200, `${tag}`)
        t.equal(r.headers['docker-content-digest'], m.digest)
      }
      for (const b of [s.oci.config, ...s.oci.layers]) {
        const a = await fetchHashed(`${base}/blobs/${b.digest}`)
        t.equal(a.digest, b.digest, `blob ${b.digest.slice(7, 19)}`)
      }
      const layer = s.docker.layers[0]
      if (layer === undefined) throw new Error('no layer')
      t.equal((await fetchAll(`${base}/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200, 'HEAD on a miss, authenticated')
    })

    if (auth === 'token') {
      await t.test('tokens are cached and fetched once per scope at a time', async (t) => {
        const issuer = s.registry.tokenIssuer
        if (issuer === undefined) throw new Error('no issuer')
        issuer.resetRequests()
        const digests = s.docker.layers.map((l) => l.digest)
        await Promise.all([...digests, ...digests, ...digests].map((d) => fetchHashed(`${base}/blobs/${d}`)))
        await Promise.all(Array.from({ length: 10 }, () => fetchAll(`${base}/manifests/${s.docker.digest}`)))
        t.ok(issuer.count() <= 1, `one token for a burst of requests on one repository (got ${issuer.count()})`)
        t.ok(issuer.requests().every((r) => r.account === 'robot' && r.kind === 'basic'), 'the token was asked for with the configured credentials')
        t.ok(issuer.requests().every((r) => r.scopes.every((sc) => sc === `repository:${s.repo}:pull`)), 'pull scope only')
      })

      await t.test('a token service that fails for a moment is retried: the pull goes on', async (t) => {
        const issuer = s.registry.tokenIssuer
        if (issuer === undefined) throw new Error('no issuer')
        // A mirror of its own: its token cache is empty.
        const dir = await tempDir(t, 'stevedore-token-retry')
        const fresh = await startMirror(t, { config: mirrorConfig(s.registry, join(dir, 'cache')) })
        issuer.resetRequests()
        issuer.failNext(2, 503)
        const started = Date.now()
        const r = await fetchAll(`${fresh.url}/v2/${s.repo}/manifests/oci`)
        t.equal(r.status, 200, 'the manifest, after two 503s from the token service')
        t.same(issuer.requests().map((q) => q.status), [503, 503, 200], 'two failures, then a token')
        t.ok(Date.now() - started < 3000, `quickly (${Date.now() - started} ms)`)
      })
    }

    await t.test('without credentials: 403 DENIED, quickly, so containerd falls back', async (t) => {
      const dir = await tempDir(t, 'stevedore-anon')
      const anon = await startMirror(t, { config: mirrorConfig(s.registry, join(dir, 'cache'), { credentials: false }) })
      const started = Date.now()
      for (const path of [`/v2/${s.repo}/manifests/oci`, `/v2/${s.repo}/blobs/${s.oci.layers[0]?.digest}`]) {
        const r = await fetchAll(`${anon.url}${path}`)
        t.equal(r.status, 403, path)
        t.equal((JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED')
        t.notOk(r.headers['www-authenticate'], 'the upstream challenge is not leaked')
      }
      t.ok(Date.now() - started < 3000, 'answered at once')
    })

    await t.test('secrets never appear in logs', async (t) => {
      await sleep(100)
      await s.mirror.settle()
      const out = JSON.stringify(s.mirror.logs()) + s.mirror.stderr()
      t.notMatch(out, password, 'no password')
      t.notMatch(out, /Bearer [A-Za-z0-9._-]{20,}/, 'no token')
      t.notMatch(out, /Basic [A-Za-z0-9+/=]{8,}/, 'no Basic credentials')
      const config = await readFile(s.mirror.configPath, 'utf8')
      t.match(config, password, '(the password was in the config the mirror read)')
    })
  })
}
