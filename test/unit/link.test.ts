import t from 'tap'
import { validateConfig } from '../../src/config/schema.js'
import { rewriteLink } from '../../src/routes/registry.js'

const config = validateConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } }, {})
const upstream = config.upstreams.get('docker.io')
if (upstream === undefined) throw new Error('no upstream')

t.test('pagination links point at the mirror under the client\'s name', async (t) => {
  const route = { upstream, repository: 'library/alpine', clientName: 'alpine' }
  t.equal(rewriteLink('</v2/library/alpine/tags/list?last=3.19&n=2>; rel="next"', route, 'docker.io'), '</v2/alpine/tags/list?last=3.19&n=2&ns=docker.io>; rel="next"')
  t.equal(rewriteLink('<https://registry-1.docker.io/v2/library/alpine/tags/list?last=b>; rel="next"', route, undefined), '</v2/alpine/tags/list?last=b>; rel="next"', 'absolute upstream URLs become mirror paths')
  const prefixed = { upstream, repository: 'library/alpine', clientName: 'docker.io/library/alpine' }
  t.equal(rewriteLink('</v2/library/alpine/tags/list?n=1&last=a>; rel="next"', prefixed, undefined), '</v2/docker.io/library/alpine/tags/list?n=1&last=a>; rel="next"')
  t.equal(rewriteLink('</elsewhere>; rel="next"', route, undefined), '</elsewhere>; rel="next"', 'foreign links untouched')
})
