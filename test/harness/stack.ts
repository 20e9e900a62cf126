// A real upstream registry seeded with images built here, and a Stevedore
// process mirroring it: the starting point of most end-to-end tests.
import { join } from 'node:path'
import type { Test } from 'tap'
import { buildImage, buildIndex, pushImage, pushIndex, type BuiltImage, type BuiltIndex } from './images.js'
import { startMirror, type Mirror } from './mirror.js'
import { startRegistry, type Registry, type RegistryAuth } from './registry.js'
import { tempDir } from './tools.js'

export interface Stack {
  registry: Registry
  mirror: Mirror
  /** the mirror's filesystem cache root */
  cacheRoot: string
  repo: string
  oci: BuiltImage
  docker: BuiltImage
  index: BuiltIndex
  list: BuiltIndex
  /** the config document the mirror was started with */
  config: Record<string, unknown>
}

export interface StackOptions {
  auth?: RegistryAuth
  /** give the mirror the registry's credentials (default true) */
  credentials?: boolean
  layers?: number[]
  cache?: Record<string, unknown>
  timeouts?: Record<string, unknown>
  repo?: string
  /** extra environment of the mirror process */
  env?: NodeJS.ProcessEnv
  /** further top-level keys of the mirror's config document (prewarm, prepull, ...) */
  extraConfig?: Record<string, unknown>
}

/** Path of a blob in a filesystem cache root. */
export function cachedBlobPath(cacheRoot: string, digest: string): string {
  const hex = digest.slice('sha256:'.length)
  return join(cacheRoot, 'blobs', 'sha256', hex.slice(0, 2), hex)
}

export function mirrorConfig(registry: Registry, cacheRoot: string, opts: StackOptions = {}): Record<string, unknown> {
  const upstream: Record<string, unknown> = { url: registry.url }
  if ((opts.credentials ?? true) && registry.username !== undefined) {
    upstream['username'] = registry.username
    upstream['password'] = registry.password
  }
  return {
    storage: { filesystem: { root: cacheRoot } },
    upstreams: { [registry.host]: upstream },
    defaultUpstream: registry.host,
    ...(opts.cache !== undefined ? { cache: opts.cache } : {}),
    ...(opts.timeouts !== undefined ? { timeouts: opts.timeouts } : {}),
    ...opts.extraConfig,
  }
}

export async function startStack(t: Test, opts: StackOptions = {}): Promise<Stack> {
  const work = await tempDir(t, 'stevedore-stack')
  const registry = await startRegistry(t, { auth: opts.auth ?? 'none' })
  const repo = opts.repo ?? 'team/app'
  const layers = opts.layers ?? [300_000, 120_000]
  const oci = await buildImage(join(work, 'oci'), { layers, format: 'oci' })
  const docker = await buildImage(join(work, 'docker'), { layers, format: 'docker' })
  const arm = await buildImage(join(work, 'arm'), { layers: [50_000], format: 'oci', platform: { os: 'linux', architecture: oci.platform.architecture === 'arm64' ? 'amd64' : 'arm64' } })
  const armDocker = await buildImage(join(work, 'armd'), { layers: [50_000], format: 'docker', platform: arm.platform })
  const index = buildIndex([oci, arm], 'oci')
  const list = buildIndex([docker, armDocker], 'docker')
  await pushImage(registry, repo, 'oci', oci)
  await pushImage(registry, repo, 'docker', docker)
  await pushIndex(registry, repo, 'index', index, [oci, arm])
  await pushIndex(registry, repo, 'list', list, [docker, armDocker])
  const cacheRoot = join(work, 'cache')
  const config = mirrorConfig(registry, cacheRoot, opts)
  const mirror = await startMirror(t, { config, ...(opts.env !== undefined ? { env: opts.env } : {}) })
  registry.resetRequests()
  return { registry, mirror, cacheRoot, repo, oci, docker, index, list, config }
}
