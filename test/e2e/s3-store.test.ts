// The S3 backend against a real S3 endpoint (s3rver on loopback): the shared
// conformance suite, then what only S3 has: object layout, reads cut on the
// wire, presigned redirects, start-up checks and cleanup. The writer's own
// tests (multipart streaming, backpressure, write faults) are s3-writer.test.ts.
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { pino } from 'pino'
import { LayoutError } from '../../src/storage/filesystem.js'
import { StorageUnavailableError, TruncatedReadError } from '../../src/storage/s3-errors.js'
import { S3BlobStore } from '../../src/storage/s3-store.js'
import { freePort, tempDir } from '../harness/tools.js'
import { putBlob, readAll, runConformance, testBlob } from '../storage/conformance.js'
import { captureLogger, openS3Store, startS3, startS3Proxy, type S3Server } from '../storage/s3-helpers.js'

const PART = 64 * 1024
const quiet = pino({ level: 'silent' })

const s3 = await startS3(t)
let prefixes = 0

const openStore = openS3Store(PART)

function objectsBesidesContent(server: S3Server, prefix: string): () => Promise<string[]> {
  return async () => {
    const keys = [...(await server.objects(prefix)).keys()].map((k) => k.slice(prefix.length))
    return keys.filter((k) => !k.startsWith('blobs/') && !k.startsWith('docs/') && k !== 'stevedore-layout.json')
  }
}

await runConformance(t, 's3', async (tt) => {
  const prefix = `conformance-${++prefixes}/`
  const config = s3.config({ prefix })
  const store = await openStore(tt, config)
  return {
    store,
    tempFiles: objectsBesidesContent(s3, prefix),
    reopen: async () => openStore(tt, config),
  }
})

t.test('s3: object keys follow the layout', async (t) => {
  const config = s3.config({ prefix: 'layout/' })
  const store = await openStore(t, config)
  const blob = testBlob(1000)
  await putBlob(store, blob)
  await store.putDocument('tags/up/repo/@v1', Buffer.from('{}'))
  const hex = blob.digest.slice('sha256:'.length)
  t.same(Object.fromEntries(await s3.objects('layout/')), {
    'layout/stevedore-layout.json': 14,
    [`layout/blobs/sha256/${hex}`]: 1000,
    'layout/docs/tags/up/repo/@v1': 2,
  }, 'marker, blob and document, nothing else')
  const other = await openStore(t, s3.config({ prefix: 'layout-other/' }))
  t.equal(await other.stat(blob.digest), undefined, 'another prefix is another store')
})

t.test('s3: a layout marker of another version is refused', async (t) => {
  const config = s3.config({ prefix: 'marker/' })
  const store = await openStore(t, config)
  await store.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'marker/stevedore-layout.json', Body: '{"version":7}' }))
  await t.rejects(openStore(t, config), { name: 'LayoutError', message: /layout version 7/ })
  await store.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'marker/stevedore-layout.json', Body: 'garbage' }))
  await t.rejects(openStore(t, config), LayoutError)
})

t.test('s3: a read that ends short errors, never ends cleanly', async (t) => {
  const proxy = await startS3Proxy(t, s3.endpoint)
  const store = await openStore(t, s3.config({ prefix: 'reads/', endpoint: proxy.endpoint }), { clientOverrides: { maxAttempts: 1 } })
  const blob = testBlob(1024 * 1024 + 1)
  await putBlob(store, blob)
  const cases: Array<{ what: string; fault: Parameters<typeof proxy.rules.push>[0]['fault']; range?: { start: number; end: number } }> = [
    { what: 'connection reset mid-body', fault: { kind: 'truncate' } },
    { what: 'connection closed (FIN) mid-body', fault: { kind: 'truncate', clean: true } },
    { what: 'a chunked body that ends cleanly at half (ranged read)', fault: { kind: 'short' }, range: { start: 10, end: 500_009 } },
  ]
  for (const c of cases) {
    proxy.rules.push({ match: (m, u) => m === 'GET' && u.includes('/blobs/'), fault: c.fault, times: 1 })
    const stream = await store.read(blob.digest, c.range)
    let received = 0
    const error = await (async () => {
      for await (const chunk of stream) received += (chunk as Buffer).byteLength
    })().then(() => undefined, (err: unknown) => err)
    const expected = c.range !== undefined ? c.range.end - c.range.start + 1 : blob.bytes.byteLength
    t.ok(error instanceof Error, `${c.what}: the stream errors (${String(error)})`)
    t.ok(received < expected, `after ${received} of ${expected} bytes`)
    if (c.fault.kind === 'short') t.type(error, TruncatedReadError, 'the length check catches what HTTP framing cannot')
  }
  t.ok((await readAll(await store.read(blob.digest))).equals(blob.bytes), 'without faults the read is whole')
})

t.test('s3: redirect URLs are presigned GETs', async (t) => {
  const plain = await openStore(t, s3.config({ prefix: 'redirect/' }))
  const blob = testBlob(5000)
  await putBlob(plain, blob)
  t.equal(await plain.redirectUrl(blob.digest), undefined, 'redirect: false streams through the mirror')

  const store = await openStore(t, s3.config({ prefix: 'redirect/', redirect: true }))
  const url = await store.redirectUrl(blob.digest)
  t.ok(url !== undefined && url.startsWith(`${s3.endpoint}/${s3.bucket}/redirect/blobs/sha256/`), `URL on the endpoint: ${String(url)}`)
  const parsed = new URL(url ?? '')
  t.equal(parsed.searchParams.get('X-Amz-Expires'), '300', 'valid for five minutes')
  const res = await fetch(parsed)
  t.equal(res.status, 200)
  t.ok(Buffer.from(await res.arrayBuffer()).equals(blob.bytes), 'the URL serves the blob without credentials')

  // A public endpoint: here a proxy on another port, as a client outside the cluster would see S3.
  const proxy = await startS3Proxy(t, s3.endpoint)
  const publicStore = await openStore(t, s3.config({ prefix: 'redirect/', redirect: true, publicEndpoint: proxy.endpoint }))
  const publicUrl = new URL((await publicStore.redirectUrl(blob.digest)) ?? '')
  t.equal(publicUrl.origin, proxy.endpoint, 'signed for the public endpoint')
  const viaPublic = await fetch(publicUrl)
  t.equal(viaPublic.status, 200, 'and valid there')
  t.ok(Buffer.from(await viaPublic.arrayBuffer()).equals(blob.bytes))
  t.equal(proxy.count('GET', '/blobs/'), 1, 'the fetch went through the public endpoint')
})

t.test('s3: init aborts stale multipart uploads, best effort', async (t) => {
  const { log, lines } = captureLogger()
  const plain = new S3BlobStore(s3.config({ prefix: 'stale/' }), { log })
  t.teardown(() => plain.destroy())
  await t.resolves(plain.init(), 's3rver answers 501 to ListMultipartUploads: init goes on')
  t.ok(lines.some((l) => l.level === 40 && String(l.msg).includes('stale multipart uploads') && String(l.err).includes('501')), 'and warns')

  // An endpoint that does list uploads: one from a crash two hours ago, one a live replica started just now.
  const proxy = await startS3Proxy(t, s3.endpoint)
  const old = new Date(Date.now() - 2 * 3600_000).toISOString()
  const fresh = new Date().toISOString()
  const upload = (key: string, id: string, at: string): string => `<Upload><Key>${key}</Key><UploadId>${id}</UploadId><Initiated>${at}</Initiated></Upload>`
  proxy.rules.push({
    match: (m, u) => m === 'GET' && u.includes('uploads='),
    fault: {
      kind: 'respond',
      handler: (_req, res) => {
        const body = `<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>${s3.bucket}</Bucket><IsTruncated>false</IsTruncated>${upload('stale/blobs/sha256/aa', 'crashed', old)}${upload('stale/blobs/sha256/bb', 'live', fresh)}</ListMultipartUploadsResult>`
        res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) }).end(body)
      },
    },
  })
  proxy.rules.push({ match: (m, u) => m === 'DELETE' && u.includes('uploadId='), fault: { kind: 'respond', handler: (_req, res) => res.writeHead(204).end() } })
  const listing = new S3BlobStore(s3.config({ prefix: 'stale/', endpoint: proxy.endpoint }), { log: quiet, staleUploadMs: 30 * 60_000 })
  t.teardown(() => listing.destroy())
  await listing.init()
  const aborted = proxy.requests.filter((r) => r.method === 'DELETE' && r.url.includes('uploadId='))
  t.equal(aborted.length, 1, 'one upload aborted')
  t.match(aborted[0]?.url ?? '', /blobs\/sha256\/aa\?uploadId=crashed/, 'the one older than the fill timeout')

  // Staged objects (older versions staged writers that did not know their digest) and probes older than the timeout go too.
  await plain.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'stale/uploads/left-behind', Body: 'x' }))
  await plain.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'stale/probes/left-behind', Body: 'ok' }))
  await openStore(t, s3.config({ prefix: 'stale/' }))
  t.ok((await s3.objects('stale/uploads/')).has('stale/uploads/left-behind'), 'a fresh staged object is kept (a live writer may own it)')
  t.ok((await s3.objects('stale/probes/')).has('stale/probes/left-behind'), 'so is a fresh write probe')
  await openStore(t, s3.config({ prefix: 'stale/' }), { staleUploadMs: 0 })
  t.same([...(await s3.objects('stale/uploads/')).keys(), ...(await s3.objects('stale/probes/')).keys()], [], 'stale ones are removed')
})

t.test('s3: start-up errors are clear and typed; writable follows S3', async (t) => {
  const deadPort = await freePort()
  const dead = new S3BlobStore(s3.config({ endpoint: `http://127.0.0.1:${deadPort}` }), { log: quiet })
  t.teardown(() => dead.destroy())
  const unreachable = await dead.init().then(() => undefined, (err: unknown) => err)
  t.type(unreachable, StorageUnavailableError)
  t.match(unreachable, { code: 'S3_UNREACHABLE', message: new RegExp(`S3 bucket "${s3.bucket}" at http://127.0.0.1:${deadPort}.*ECONNREFUSED`) }, String(unreachable))
  t.equal(await dead.writable(), false, 'an unreachable store is not writable')

  const noBucket = new S3BlobStore(s3.config({ bucket: 'no-such-bucket' }), { log: quiet })
  t.teardown(() => noBucket.destroy())
  await t.rejects(noBucket.init(), { name: 'StorageUnavailableError', code: 'S3_NO_SUCH_BUCKET', message: /no-such-bucket/ })

  const badKey = new S3BlobStore(s3.config({ accessKeyId: 'WRONG' }), { log: quiet })
  t.teardown(() => badKey.destroy())
  await t.rejects(badKey.init(), { name: 'StorageUnavailableError', code: 'S3_ACCESS_DENIED' })

  // A server of our own that goes away and comes back.
  const own = await startS3(t, { bucket: 'flaky' })
  const store = new S3BlobStore(own.config(), { log: quiet, probeTimeoutMs: 2000, clientOverrides: { maxAttempts: 1 } })
  t.teardown(() => store.destroy())
  await store.init()
  t.equal(await store.writable(), true, 'writable while S3 answers')
  await own.stop()
  const started = Date.now()
  t.equal(await store.writable(), false, 'not writable while S3 is down')
  t.ok(Date.now() - started < 3000, 'and the probe answers within its timeout')
  await own.start()
  t.equal(await store.writable(), true, 'writable again once S3 is back')
  t.same([...(await own.objects('probes/')).keys()], [], 'the probe leaves no object')
})

t.test('s3: without keys in the config the standard AWS chain supplies them (env, shared file, web identity)', async (t) => {
  const dir = await tempDir(t, 'stevedore-aws-chain')
  const saved = { ...process.env }
  t.teardown(() => {
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k]
    Object.assign(process.env, saved)
  })
  const reset = (env: Record<string, string>): void => {
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k]
    // No real files, no instance metadata: only what each case sets.
    Object.assign(process.env, { AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'), AWS_CONFIG_FILE: join(dir, 'none'), AWS_EC2_METADATA_DISABLED: 'true', ...env })
  }
  const keyless = s3.config({ prefix: 'chain/', accessKeyId: undefined, secretAccessKey: undefined })
  const tryInit = async (): Promise<unknown> => {
    const store = new S3BlobStore(keyless, { log: quiet })
    t.teardown(() => store.destroy())
    return store.init().then(() => 'ok', (err: unknown) => err)
  }

  reset({ AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' })
  t.equal(await tryInit(), 'ok', 'environment variables')
  reset({ AWS_ACCESS_KEY_ID: 'NOPE', AWS_SECRET_ACCESS_KEY: 'x' })
  t.match(await tryInit(), { code: 'S3_ACCESS_DENIED' }, 'a wrong key from the environment is what S3 sees')

  await writeFile(join(dir, 'credentials'), '[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n')
  reset({ AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials') })
  t.equal(await tryInit(), 'ok', 'the shared credentials file')

  // IRSA: a projected token file and a role; STS answers with temporary keys.
  const sts: string[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      sts.push(body)
      const xml = '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>' +
        '<Credentials><AccessKeyId>S3RVER</AccessKeyId><SecretAccessKey>S3RVER</SecretAccessKey><SessionToken>session</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>' +
        '<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/stevedore/pod</Arn><AssumedRoleId>AROA:pod</AssumedRoleId></AssumedRoleUser>' +
        '</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>'
      res.writeHead(200, { 'content-type': 'text/xml' }).end(xml)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  await writeFile(join(dir, 'token'), 'projected-service-account-token')
  reset({
    AWS_WEB_IDENTITY_TOKEN_FILE: join(dir, 'token'),
    AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/stevedore',
    AWS_ROLE_SESSION_NAME: 'pod',
    AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
  })
  t.equal(await tryInit(), 'ok', 'web identity (IRSA)')
  t.ok(sts.some((b) => b.includes('AssumeRoleWithWebIdentity') && b.includes('projected-service-account-token') && b.includes('role%2Fstevedore')), 'after exchanging the token with STS for the role')
})
