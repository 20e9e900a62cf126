import t from 'tap'
import { validateConfig } from '../../src/config/schema.js'
import { compileRepositoryPattern, Router } from '../../src/upstream/router.js'

const config = validateConfig({
  upstreams: {
    'docker.io': { url: 'https://registry-1.docker.io' },
    'ghcr.io': { url: 'https://ghcr.io', repositories: ['myorg/**', 'other/app'] },
    'reg.example:5443': { url: 'https://reg.example:5443' },
    localhost: { url: 'http://localhost:5000' },
  },
  defaultUpstream: 'docker.io',
}, {})
const router = new Router(config.upstreams, config.defaultUpstream)

const denied = { name: 'RegistryError', code: 'DENIED', status: 403 }

t.test('routes by ns, by host prefix, else to the default', async (t) => {
  const cases: Array<[string, string | undefined, string, string]> = [
    ['alpine', 'docker.io', 'docker.io', 'library/alpine'],
    ['library/alpine', 'docker.io', 'docker.io', 'library/alpine'],
    ['alpine', undefined, 'docker.io', 'library/alpine'],
    ['bitnami/redis', undefined, 'docker.io', 'bitnami/redis'],
    ['docker.io/library/alpine', undefined, 'docker.io', 'library/alpine'],
    ['docker.io/alpine', undefined, 'docker.io', 'library/alpine'],
    ['index.docker.io/alpine', undefined, 'docker.io', 'library/alpine'],
    ['myorg/app', 'ghcr.io', 'ghcr.io', 'myorg/app'],
    ['ghcr.io/myorg/a/b', undefined, 'ghcr.io', 'myorg/a/b'],
    ['app', 'reg.example:5443', 'reg.example:5443', 'app'],
    ['reg.example:5443/team/app', undefined, 'reg.example:5443', 'team/app'],
    ['localhost/app', undefined, 'localhost', 'app'],
  ]
  for (const [name, ns, upstream, repository] of cases) {
    const r = router.route(name, ns)
    t.equal(r.upstream.name, upstream, `${name} ns=${ns} → ${upstream}`)
    t.equal(r.repository, repository, `${name} ns=${ns} → ${repository}`)
  }
})

t.test('never an open proxy', async (t) => {
  t.throws(() => router.route('alpine', 'evil.example.com'), denied, 'unknown ns')
  t.throws(() => router.route('evil.example.com/x', undefined), denied, 'unknown host prefix')
  t.throws(() => router.route('169.254.169.254:80/latest', undefined), denied, 'metadata address')
  t.throws(() => router.route('otherorg/app', 'ghcr.io'), denied, 'outside repositories')
  t.throws(() => router.route('ghcr.io/other/app2', undefined), denied, 'outside repositories via prefix')
  t.equal(router.route('other/app', 'ghcr.io').repository, 'other/app')
  const noDefault = new Router(config.upstreams, undefined)
  t.throws(() => noDefault.route('alpine', undefined), denied, 'no default upstream')
})

t.test('bad names are 400 NAME_INVALID', async (t) => {
  t.throws(() => router.route('Alpine', 'docker.io'), { code: 'NAME_INVALID', status: 400 })
  t.throws(() => router.route('docker.io/UPPER', undefined), { code: 'NAME_INVALID' })
})

t.test('repository patterns', async (t) => {
  const one = compileRepositoryPattern('library/*')
  t.ok(one.test('library/alpine'))
  t.notOk(one.test('library/a/b'))
  const deep = compileRepositoryPattern('org/**')
  t.ok(deep.test('org/a/b/c'))
  t.notOk(deep.test('orgx/a'))
  t.notOk(compileRepositoryPattern('a.b').test('axb'), 'dots are literal')
})
