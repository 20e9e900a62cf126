import type { ApiRoute } from '../api/plugin.js'
import { parseImageReference } from '../oci/reference.js'

/**
 * `GET /api/v1/prepull`: the images every node pre-pulls (`stevedore
 * prepull`): `prepull.images`, then those of annotated workloads, each once,
 * normalised.
 */
export function prepullRoutes(configured: readonly string[], annotated: () => readonly string[]): ApiRoute[] {
  return [{
    url: '/prepull',
    GET: async (request, reply) => {
      request.stevedore.kind = 'api'
      const images = new Set<string>()
      for (const image of [...configured, ...annotated()]) {
        const ref = parseImageReference(image)
        if (ref !== undefined) images.add(ref.text)
      }
      return reply.send({ images: [...images] })
    },
  }]
}
