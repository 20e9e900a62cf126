// What a manifest fetched through an upstream vouches for: what its registry
// must hold to accept it, and nothing a pusher could name freely.
import t from 'tap'
import { pino } from 'pino'
import { ContentScopes, referencedDigests } from '../../src/cache/scopes.js'
import { MemoryStore } from './fakes/memory-store.js'

const d = (c: string): string => `sha256:${c.repeat(64)}`

t.test('config, layers and an index\'s manifests are referenced; a subject and foreign layers are not', async (t) => {
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('a'), size: 1 },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('b'), size: 1 },
      // A foreign layer: the registry need not hold it, so the manifest proves nothing about it.
      { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: d('c'), size: 1, urls: ['https://example.com/layer'] },
    ],
    // Anyone can push a referrer naming any digest as its subject (before the fix: recorded as held).
    subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('e'), size: 1 },
  }
  t.same(referencedDigests(Buffer.from(JSON.stringify(manifest))), [d('a'), d('b')])
  const index = { schemaVersion: 2, manifests: [{ digest: d('1'), size: 1 }, { digest: 'not a digest', size: 1 }, { digest: d('2'), size: 1, urls: [] }] }
  t.same(referencedDigests(Buffer.from(JSON.stringify(index))), [d('1'), d('2')], 'an index; an empty urls list is no foreign layer')
  t.same(referencedDigests(Buffer.from('not json')), [])
  t.same(referencedDigests(Buffer.from('null')), [])
})

t.test('storage that cannot be read when a scope is looked up: 503, never a 500', async (t) => {
  const store = new MemoryStore()
  // FAULT: the store's document read fails (an S3 error, EACCES on disk).
  store.getDocument = async () => {
    throw Object.assign(new Error('access denied'), { code: 'EACCES' })
  }
  const scopes = new ContentScopes(store, pino({ level: 'silent' }))
  let confirmed = 0
  const err = await scopes.ensure('https://b.example', d('f'), async () => {
    confirmed++
    return 'present'
  }, () => new Error('not found') as never).then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'UNAVAILABLE', status: 503 }, 'before the fix: the store error itself, a 500')
  t.equal(confirmed, 0, 'the upstream was not asked')
})
