import { fileURLToPath } from 'node:url'
import { credentials, loadPackageDefinition, Metadata, status as GrpcStatus, type Client, type ServiceError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'

// Two folders below the package root, from src/ (tsx) and from dist/ alike.
const PROTO = fileURLToPath(new URL('../../proto/cri-image-v1.proto', import.meta.url))

/** An image as the runtime's image store holds it. */
export interface CriImage {
  readonly id: string
  readonly repoTags: readonly string[]
  readonly repoDigests: readonly string[]
  readonly size: number
}

/** A CRI call failed: the gRPC status code and the runtime's message. */
export class CriError extends Error {
  override name = 'CriError'
  constructor(readonly method: string, readonly code: number, message: string) {
    super(`CRI ${method}: ${message}`)
  }
}

type Callback<R> = (err: ServiceError | null, response?: R) => void
// grpc-js returns the call, whose cancel() ends it on both sides (containerd then stops the pull).
type Unary<Q, R> = (request: Q, metadata: Metadata, options: { deadline: Date }, callback: Callback<R>) => { cancel(): void }

interface RawImage {
  id?: string
  repoTags?: string[]
  repoDigests?: string[]
  size?: string | number
}

interface ImageServiceClient extends Client {
  ImageStatus: Unary<{ image: { image: string } }, { image?: RawImage | null }>
  PullImage: Unary<{ image: { image: string } }, { imageRef?: string }>
  RemoveImage: Unary<{ image: { image: string } }, Record<string, never>>
}

let service: (new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options?: object) => ImageServiceClient) | undefined

function imageServiceConstructor(): NonNullable<typeof service> {
  if (service === undefined) {
    const definition = loadSync(PROTO, { keepCase: false, longs: String, defaults: true })
    const runtime = (loadPackageDefinition(definition)['runtime'] as Record<string, Record<string, unknown>> | undefined)?.['v1']
    service = runtime?.['ImageService'] as typeof service
    if (service === undefined) throw new Error(`${PROTO} defines no runtime.v1.ImageService`)
  }
  return service
}

/**
 * The node runtime's CRI ImageService (containerd's CRI plugin): the image
 * store the kubelet uses. The endpoint is `unix:///run/containerd/containerd.sock`
 * as the kubelet's --container-runtime-endpoint names it.
 */
export class CriImageService {
  private readonly client: ImageServiceClient

  constructor(endpoint: string) {
    if (!endpoint.startsWith('unix://')) throw new Error(`the CRI endpoint must be unix:///path/to/socket (got ${JSON.stringify(endpoint)})`)
    const Service = imageServiceConstructor()
    // A pull of a large image sends one small answer at the end: no message size concerns.
    this.client = new Service(`unix:${endpoint.slice('unix://'.length)}`, credentials.createInsecure())
  }

  /** The image when the store has it, undefined when not. */
  async imageStatus(image: string, timeoutMs = 30_000, signal?: AbortSignal): Promise<CriImage | undefined> {
    const res = await this.call('ImageStatus', { image: { image } }, timeoutMs, signal)
    const raw = res.image
    if (raw === undefined || raw === null || raw.id === undefined || raw.id === '') return undefined
    return { id: raw.id, repoTags: raw.repoTags ?? [], repoDigests: raw.repoDigests ?? [], size: Number(raw.size ?? 0) }
  }

  /**
   * Pulls the image into the store; resolves with the runtime's image
   * reference (its id). An abort of `signal` cancels the call, and with it
   * the runtime's pull.
   */
  async pullImage(image: string, timeoutMs: number, signal?: AbortSignal): Promise<string> {
    const res = await this.call('PullImage', { image: { image } }, timeoutMs, signal)
    return res.imageRef ?? ''
  }

  /** Removes the image (all its tags) from the store. */
  async removeImage(image: string, timeoutMs = 30_000): Promise<void> {
    await this.call('RemoveImage', { image: { image } }, timeoutMs)
  }

  /** Closes the connection: a process with none left can exit. */
  close(): void {
    this.client.close()
  }

  private call<M extends 'ImageStatus' | 'PullImage' | 'RemoveImage'>(method: M, request: Parameters<ImageServiceClient[M]>[0], timeoutMs: number, signal?: AbortSignal): Promise<NonNullable<Parameters<Parameters<ImageServiceClient[M]>[3]>[1]>> {
    type R = NonNullable<Parameters<Parameters<ImageServiceClient[M]>[3]>[1]>
    return new Promise<R>((resolve, reject) => {
      if (signal?.aborted === true) {
        reject(new CriError(method, GrpcStatus.CANCELLED, 'cancelled before it started'))
        return
      }
      const fn = this.client[method].bind(this.client) as unknown as Unary<typeof request, R>
      const cancel = (): void => call.cancel()
      const call = fn(request, new Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, response) => {
        signal?.removeEventListener('abort', cancel)
        if (err !== null) {
          reject(new CriError(method, err.code, err.code === GrpcStatus.DEADLINE_EXCEEDED ? `no answer within ${Math.round(timeoutMs / 1000)} s` : err.details || err.message))
          return
        }
        resolve(response as R)
      })
      signal?.addEventListener('abort', cancel, { once: true })
    })
  }
}
