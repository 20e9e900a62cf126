import { Type } from '@sinclair/typebox'
import type { ApiRoute } from '../api/plugin.js'
import { PLATFORM } from '../config/warming.js'
import { RegistryError } from '../oci/errors.js'
import type { PrefetchJobs } from './jobs.js'

/** `POST /api/v1/prefetch` and `GET /api/v1/prefetch/{id}`; `ready` says whether the store can take blobs yet: until then a job would only fail. */
export function prefetchRoutes(jobs: PrefetchJobs, ready: () => boolean): ApiRoute[] {
  const body = Type.Object({
    // No maxItems: jobs.submit's 400 names prefetch.maxImagesPerJob (the schema's would not, and
    // `stevedore prefetch` re-splits by it); the body limit bounds the list until then.
    images: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1 }),
    platforms: Type.Optional(Type.Array(Type.String({ pattern: PLATFORM.source }), { minItems: 1, maxItems: 32 })),
  }, { additionalProperties: false })
  return [
    {
      url: '/prefetch',
      POST: {
        options: { schema: { body } },
        handler: async (request, reply) => {
          request.stevedore.kind = 'api'
          if (!ready()) throw new RegistryError('UNAVAILABLE', 'cache storage is not reachable yet', { headers: { 'retry-after': '2' } })
          const { images, platforms } = request.body as { images: string[]; platforms?: string[] }
          const job = jobs.submit({ images, ...(platforms !== undefined ? { platforms } : {}) })
          return reply.code(202).header('location', `/api/v1/prefetch/${job.id}`).send(job.status())
        },
      },
    },
    {
      url: '/prefetch/:id',
      GET: async (request, reply) => {
        request.stevedore.kind = 'api'
        const { id } = request.params as { id: string }
        const job = jobs.get(id)
        if (job === undefined) throw new RegistryError('NAME_UNKNOWN', 'no such prefetch job', { status: 404, detail: { id } })
        return reply.send(job.status())
      },
    },
  ]
}
