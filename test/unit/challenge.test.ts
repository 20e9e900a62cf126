import t from 'tap'
import { parseChallenges } from '../../src/upstream/challenge.js'

t.test('bearer challenge with quoted scope containing commas and a port', async (t) => {
  const [c] = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:reg.example:5000/a/b:pull,push"')
  t.same(c, { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:reg.example:5000/a/b:pull,push' } })
})

t.test('several challenges in one header, case-insensitive scheme and names', async (t) => {
  const cs = parseChallenges('basic Realm="Registry Realm", BEARER realm="http://127.0.0.1:5006/token", service=test, error="insufficient_scope"')
  t.equal(cs.length, 2)
  t.same(cs[0], { scheme: 'basic', params: { realm: 'Registry Realm' } })
  t.same(cs[1], { scheme: 'bearer', params: { realm: 'http://127.0.0.1:5006/token', service: 'test', error: 'insufficient_scope' } })
})

t.test('escaped quotes and several header lines', async (t) => {
  const cs = parseChallenges(['Bearer realm="a\\"b"', 'Basic realm=x'])
  t.same(cs.map((c) => c.params['realm']), ['a"b', 'x'])
})

t.test('junk does not throw', async (t) => {
  t.same(parseChallenges(undefined), [])
  t.same(parseChallenges(''), [])
  t.doesNotThrow(() => parseChallenges('=,,"unterminated'))
  t.same(parseChallenges('Bearer').map((c) => c.scheme), ['bearer'])
})
