// What init does to a bucket before the store serves from it: the layout
// marker, and the cleanup of what crashed processes left behind.
import { AbortMultipartUploadCommand, DeleteObjectCommand, ListMultipartUploadsCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { LAYOUT_VERSION } from './blob-store.js'
import { LayoutError } from './filesystem.js'
import type { S3Bucket } from './s3-bucket.js'
import { describe, isUnsupported, unavailable } from './s3-errors.js'

const MARKER = 'stevedore-layout.json'

/**
 * Key folders of objects that are neither blobs nor documents: write probes
 * (`writable()`), and staged uploads that versions before the direct-to-key
 * writer copied into place at commit. Nothing writes `uploads/` any more, but
 * a bucket written by an older version may still hold some: one listing each.
 */
const LEFTOVER_FOLDERS = ['uploads/', 'probes/']

/**
 * Checks the layout marker (writes it on an empty prefix), then aborts
 * multipart uploads and removes probe or staged objects older than
 * staleUploadMs. The marker is the start-up reachability check: its failures
 * throw StorageUnavailableError; a wrong version throws LayoutError. Cleanup
 * is best effort and only logs.
 */
export async function prepareBucket(bucket: S3Bucket, staleUploadMs: number): Promise<void> {
  await checkLayout(bucket)
  await abortStaleUploads(bucket, staleUploadMs)
  await removeLeftovers(bucket, staleUploadMs)
}

async function checkLayout(bucket: S3Bucket): Promise<void> {
  const markerKey = `${bucket.prefix}${MARKER}`
  let marker: Buffer | undefined
  try {
    marker = await bucket.getObjectBytes(markerKey)
  } catch (err) {
    throw unavailable(err, bucket.where, `reading ${markerKey}`)
  }
  if (marker === undefined) {
    try {
      await bucket.client.send(new PutObjectCommand({
        Bucket: bucket.name,
        Key: markerKey,
        Body: `${JSON.stringify({ version: LAYOUT_VERSION })}\n`,
        ContentType: 'application/json',
      }))
    } catch (err) {
      throw unavailable(err, bucket.where, `writing ${markerKey}`)
    }
    return
  }
  let version: unknown
  try {
    version = (JSON.parse(marker.toString('utf8')) as { version?: unknown }).version
  } catch {
    throw new LayoutError(`${bucket.where}: ${markerKey} is not valid JSON: refusing to use this bucket and prefix`)
  }
  if (version !== LAYOUT_VERSION) {
    throw new LayoutError(`${bucket.where}: ${markerKey} says layout version ${String(version)}; this Stevedore reads version ${LAYOUT_VERSION} only`)
  }
}

/** A crash leaves uploads that cost storage but are never visible objects; one younger than the cutoff may be another replica's fill. */
async function abortStaleUploads(bucket: S3Bucket, staleUploadMs: number): Promise<void> {
  const cutoff = Date.now() - staleUploadMs
  let aborted = 0
  try {
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    for (;;) {
      const page = await bucket.client.send(new ListMultipartUploadsCommand({
        Bucket: bucket.name,
        Prefix: bucket.prefix,
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
      }))
      for (const upload of page.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined) continue
        if (upload.Initiated !== undefined && upload.Initiated.getTime() > cutoff) continue
        // Not bucket.abortUpload: a failure here must reach the warning below, not be swallowed per upload.
        await bucket.client.send(new AbortMultipartUploadCommand({ Bucket: bucket.name, Key: upload.Key, UploadId: upload.UploadId }))
        aborted++
      }
      if (page.IsTruncated !== true) break
      keyMarker = page.NextKeyMarker
      uploadIdMarker = page.NextUploadIdMarker
    }
    if (aborted > 0) bucket.log.info({ aborted, olderThanMs: staleUploadMs }, 'aborted multipart uploads left by an earlier process')
  } catch (err) {
    bucket.log.warn({
      err: describe(err),
      aborted,
      hint: isUnsupported(err) ? 'this S3 endpoint does not support listing or aborting multipart uploads; add a lifecycle rule (AbortIncompleteMultipartUpload) instead' : undefined,
    }, 'could not clean up stale multipart uploads; going on')
  }
}

async function removeLeftovers(bucket: S3Bucket, staleUploadMs: number): Promise<void> {
  const cutoff = Date.now() - staleUploadMs
  try {
    for (const folder of LEFTOVER_FOLDERS) {
      for await (const obj of bucket.listObjects(`${bucket.prefix}${folder}`)) {
        if (obj.lastModified !== undefined && obj.lastModified.getTime() > cutoff) continue
        await bucket.client.send(new DeleteObjectCommand({ Bucket: bucket.name, Key: obj.key }))
      }
    }
  } catch (err) {
    bucket.log.warn({ err: describe(err) }, 'could not remove stale staged uploads; going on')
  }
}
