// Where an upstream may send the mirror: redirects and token realms alike.
// Internal addresses in every form the URL parser leaves them in.
import t from 'tap'
import { RedirectRules, isInternalAddress } from '../../src/upstream/redirects.js'

t.test('internal addresses, also when IPv6 carries an IPv4 one', async (t) => {
  const internal = ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fc00::1', 'fec0::1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', 'ff02::1', '224.0.0.1']
  for (const host of internal) t.ok(isInternalAddress(host), host)
  for (const host of ['8.8.8.8', '1.1.1.1', '2606:4700::1', 'registry-1.docker.io']) t.notOk(isInternalAddress(host), host)
})

t.test('redirects and realms: the URL parser\'s own forms are refused', async (t) => {
  const rules = new RedirectRules('registry.example', undefined)
  const from = new URL('https://registry.example/v2/a/blobs/sha256:x')
  for (const target of ['https://[::ffff:127.0.0.1]/x', 'https://[::ffff:169.254.169.254]/latest/meta-data/', 'https://[::ffff:10.0.0.1]:8080/', 'https://localhost/', 'https://api.localhost/', 'https://[fe80::1]/']) {
    const url = new URL(target)
    t.throws(() => rules.check(from, url, new Set()), /internal address/, `redirect to ${target}`)
    t.match(rules.refusal(url), /internal address/, `realm ${target}`)
  }
  t.equal(rules.refusal(new URL('https://auth.example/token')), undefined, 'a public realm')
  t.equal(rules.refusal(new URL('https://registry.example:5443/token')), undefined, 'the upstream\'s own host')
  t.equal(rules.refusal(new URL('file:///etc/passwd')), 'file:', 'another scheme')
  const listed = new RedirectRules('registry.example', ['*.cdn.example'])
  t.equal(listed.refusal(new URL('https://eu.cdn.example/token')), undefined, 'a listed host')
  t.match(listed.refusal(new URL('https://auth.example/token')), /not in redirectHosts/, 'an unlisted one')
})
