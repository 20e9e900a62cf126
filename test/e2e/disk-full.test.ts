// A real full disk: the cache lives on a small tmpfs, so the fill hits ENOSPC
// half-way. The client that started the fill still gets every byte, verified;
// joiners get every byte or are cut; nothing is cached; the process stays up.
import { existsSync } from 'node:fs'
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { fetchAll, fetchHashed } from '../harness/http.js'
import { pushBlob, randomBytesFile } from '../harness/images.js'
import { startMirror } from '../harness/mirror.js'
import { startRegistry } from '../harness/registry.js'
import { cachedBlobPath, mirrorConfig } from '../harness/stack.js'
import { requireTools, run, tempDir, waitFor } from '../harness/tools.js'

const MB = 1024 * 1024

t.test('disk full (ENOSPC on a 16 MiB tmpfs) while filling a 40 MB blob', async (t) => {
  if (!requireTools(t, 'docker-registry', 'mount', 'umount')) return
  if (process.getuid?.() !== 0) {
    t.fail('mounting a tmpfs needs root')
    return
  }
  const dir = await tempDir(t, 'stevedore-enospc')
  const cacheRoot = join(dir, 'cache')
  await mkdir(cacheRoot)
  const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', cacheRoot])
  t.equal(mounted.code, 0, `mount tmpfs: ${mounted.stderr}`)
  t.teardown(async () => {
    await run('umount', ['-l', cacheRoot])
  })
  const registry = await startRegistry(t)
  const small = join(dir, 'small')
  const smallDigest = await randomBytesFile(small, 1 * MB)
  const big = join(dir, 'big')
  const digest = await randomBytesFile(big, 40 * MB)
  await pushBlob(registry, 'big/blob', big, digest)
  await pushBlob(registry, 'big/blob', small, smallDigest)
  const mirror = await startMirror(t, { config: mirrorConfig(registry, cacheRoot) })
  const url = `${mirror.url}/v2/big/blob/blobs/${digest}`

  const originator = fetchHashed(url)
  // Joiners arrive once the fill is under way.
  await waitFor(async () => mirror.logs().length > 0 && (await readdir(join(cacheRoot, 'tmp'))).length > 0, 5000, 'fill started')
  // A joiner may arrive once storage has failed: refused with 503 before any byte, or cut before its headers.
  const joiners = await Promise.all(Array.from({ length: 3 }, () => fetchHashed(url).catch((err: unknown) => ({ status: 0, bytes: 0, digest: '', error: String(err) }))))
  const first = await originator
  if (first.error !== undefined) t.comment(JSON.stringify(mirror.logs().filter((l) => l['msg'] !== 'request' || l['digest'] === digest).map((l) => ({ msg: l['msg'], err: (l['err'] as { message?: string } | undefined)?.message, written: l['written'], bytes: l['bytes'], cache: l['cache'], aborted: l['aborted'] }))))
  t.equal(first.status, 200)
  t.equal(first.error, undefined, 'the client that started the fill was not cut')
  t.equal(first.bytes, 40 * MB, 'it got every byte')
  t.equal(first.digest, digest, 'and they hash to the digest')
  for (const j of joiners) {
    const complete = j.status === 200 && j.error === undefined && j.bytes === 40 * MB && j.digest === digest
    const cut = j.error !== undefined && j.bytes < 40 * MB
    const refused = j.status === 503
    t.ok(complete || cut || refused, `a joiner got every byte, was cut or was told to retry; never a clean short end (${j.status}, ${j.bytes} bytes, ${j.error ?? 'clean'})`)
  }
  await waitFor(async () => mirror.logs().some((l) => l['msg'] === 'blob served but not cached'), 5000, 'logged')
  t.ok(mirror.logs().some((l) => l['msg'] === 'storage failed mid-fill: passing the blob through uncached' && JSON.stringify(l).includes('ENOSPC')), 'the ENOSPC is logged')
  t.notOk(existsSync(cachedBlobPath(cacheRoot, digest)), 'nothing cached')
  await waitFor(async () => (await readdir(join(cacheRoot, 'tmp'))).filter((n) => !n.startsWith('.probe')).length === 0, 5000, 'temp space given back')
  const metrics = (await fetchAll(`${mirror.url}/metrics`)).body.toString()
  t.match(metrics, /stevedore_upstream_errors_total\{upstream="[^"]+",reason="storage"\} [1-9]/, 'counted')
  t.equal((await fetchAll(`${mirror.url}/healthz`)).status, 200, 'the process stays up')
  const again = await fetchHashed(`${mirror.url}/v2/big/blob/blobs/${smallDigest}`)
  t.equal(again.digest, smallDigest, 'and still caches what fits')
  await waitFor(async () => existsSync(cachedBlobPath(cacheRoot, smallDigest)), 5000, 'small blob cached')
})
