import { Type, type StaticDecode } from '@sinclair/typebox'
import { Invalid } from './errors.js'
import { Bool, DAY_MS, Duration, MIB, Size, Text, UrlText } from './fields.js'

const DEFAULT_ROOT = './data'

const Filesystem = Type.Object({ root: Text() }, { additionalProperties: false })

const S3 = Type.Transform(Type.Object({
  bucket: Text(),
  prefix: Type.String({ default: '' }),
  region: Type.Optional(Text({ description: 'Default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1.' })),
  endpoint: Type.Optional(UrlText()),
  publicEndpoint: Type.Optional(UrlText()),
  forcePathStyle: Bool(false),
  redirect: Bool(false),
  accessKeyId: Type.Optional(Text()),
  secretAccessKey: Type.Optional(Text()),
  spoolDir: Text({ default: '/tmp/stevedore-spool' }),
  // Not a timer: compared with upload dates at start-up. Under a minute it
  // would abort another replica's fill in progress on a shared bucket.
  staleUploadAge: Duration({ default: '30m', minMs: 60_000, maxMs: 365 * DAY_MS }),
}, { additionalProperties: false })).Decode(({ prefix, staleUploadAge, ...s3 }) => {
  if ((s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined)) throw new Invalid('', 'accessKeyId and secretAccessKey go together')
  return {
    kind: 's3' as const,
    ...s3,
    /** All objects live under this key prefix ('' or ending in '/'). */
    prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`,
    /** Multipart uploads older than this at start-up are crash leftovers, aborted. */
    staleUploadAgeMs: staleUploadAge,
  }
}).Encode(({ kind: _, staleUploadAgeMs, ...s3 }) => ({ ...s3, staleUploadAge: staleUploadAgeMs }))

/** `storage`: one backend (the disk by default), an optional quota, and whether this replica evicts. */
export const Storage = Type.Transform(Type.Object({
  filesystem: Type.Optional(Filesystem),
  s3: Type.Optional(S3),
  /** Quota in bytes (blobs and manifests); none when unset. Below 1MiB not even a manifest or two fit. */
  maxSize: Type.Optional(Size({ minBytes: MIB })),
  evict: Bool(true),
}, { additionalProperties: false, default: {} })).Decode(({ filesystem, s3, ...rest }) => {
  if (filesystem !== undefined && s3 !== undefined) throw new Invalid('', 'set either filesystem or s3, not both')
  const backend = s3 ?? { kind: 'filesystem' as const, root: filesystem?.root ?? DEFAULT_ROOT }
  return { backend, ...rest }
}).Encode(({ backend, ...rest }) => ({ ...rest, ...(backend.kind === 's3' ? { s3: backend } : { filesystem: { root: backend.root } }) }))

type StorageDocument = StaticDecode<typeof Storage>
type S3Document = Extract<StorageDocument['backend'], { kind: 's3' }>

export type FilesystemStorageConfig = Readonly<Extract<StorageDocument['backend'], { kind: 'filesystem' }>>
export type S3StorageConfig = Readonly<Omit<S3Document, 'region'> & { readonly region: string }>
export type StorageConfig = Readonly<Omit<StorageDocument, 'backend'> & { readonly backend: FilesystemStorageConfig | S3StorageConfig }>

/** Fills in what comes from the environment: the S3 region. */
export function resolveStorage(doc: StorageDocument, env: NodeJS.ProcessEnv): StorageConfig {
  const { backend } = doc
  if (backend.kind !== 's3') return { ...doc, backend }
  const region = backend.region ?? (env['AWS_REGION'] || undefined) ?? (env['AWS_DEFAULT_REGION'] || undefined) ?? 'us-east-1'
  return { ...doc, backend: { ...backend, region } }
}
