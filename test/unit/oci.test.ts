import t from 'tap'
import { digestOf, parseDigest, requireDigest } from '../../src/oci/digest.js'
import { RegistryError } from '../../src/oci/errors.js'
import { isValidName, isValidTag, looksLikeRegistryHost } from '../../src/oci/names.js'
import { parseV2Path } from '../../src/routes/v2-path.js'

const HEX64 = 'a'.repeat(64)

t.test('digests', async (t) => {
  const cases: Array<[string, boolean]> = [
    [`sha256:${HEX64}`, true],
    [`sha512:${'b'.repeat(128)}`, true],
    [`sha256:${'A'.repeat(64)}`, false], // upper-case hex is not canonical
    [`sha256:${HEX64.slice(1)}`, false],
    [`sha512:${HEX64}`, false],
    [`md5:${'a'.repeat(32)}`, false],
    ['sha256', false],
    [`sha256:${HEX64}g`, false],
    ['', false],
  ]
  for (const [text, ok] of cases) t.equal(parseDigest(text) !== undefined, ok, text)
  t.equal(digestOf(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  t.throws(() => requireDigest('sha256:x'), { code: 'DIGEST_INVALID', status: 400 })
})

t.test('repository names and tags', async (t) => {
  for (const name of ['alpine', 'library/alpine', 'a/b/c', 'my-org/my_app', 'a.b/c__d', 'x--y']) t.ok(isValidName(name), name)
  for (const name of ['Alpine', '/a', 'a/', 'a//b', '-a', 'a_', 'a..b', 'a/../b', '', 'a'.repeat(256), 'a b']) t.notOk(isValidName(name), name)
  for (const tag of ['latest', 'v1.2.3', '_x', 'A-b.c_d', 'a'.repeat(128)]) t.ok(isValidTag(tag), tag)
  for (const tag of ['', '.x', '-x', 'a'.repeat(129), 'a:b', 'a/b']) t.notOk(isValidTag(tag), tag)
  for (const host of ['docker.io', 'localhost', 'reg:5000', '127.0.0.1:5001']) t.ok(looksLikeRegistryHost(host), host)
  for (const host of ['library', 'myorg']) t.notOk(looksLikeRegistryHost(host), host)
})

t.test('v2 paths', async (t) => {
  t.same(parseV2Path('/v2/'), { kind: 'base' })
  t.same(parseV2Path('/v2/library/alpine/manifests/3.20'), { kind: 'manifest', name: 'library/alpine', reference: '3.20' })
  t.same(parseV2Path(`/v2/a/b/c/blobs/sha256:${HEX64}`), { kind: 'blob', name: 'a/b/c', digest: `sha256:${HEX64}` })
  t.same(parseV2Path(`/v2/a/blobs/sha256%3A${HEX64}`), { kind: 'blob', name: 'a', digest: `sha256:${HEX64}` })
  t.same(parseV2Path('/v2/docker.io/library/alpine/tags/list'), { kind: 'tags', name: 'docker.io/library/alpine' })
  t.same(parseV2Path(`/v2/x/referrers/sha256:${HEX64}`), { kind: 'referrers', name: 'x', digest: `sha256:${HEX64}` })
  t.same(parseV2Path('/v2/x/blobs/uploads/'), { kind: 'upload', name: 'x' })
  t.throws(() => parseV2Path('/v2/x/things/y'), { code: 'NAME_UNKNOWN', status: 404 })
})

t.test('error bodies follow the spec', async (t) => {
  const err = new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { detail: { digest: 'x' } })
  t.equal(err.status, 404)
  t.same(err.body(), { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: { digest: 'x' } }] })
  t.equal(new RegistryError('UPSTREAM_ERROR', 'x').body().errors[0]?.code, 'UNAVAILABLE')
})
