// What a manifest JSON says of itself: an index's entries by platform, or an
// image's config and layers. Read by prefetch (what to fetch) and insights (what a pull is).
import { parseDigest } from './digest.js'
import { MediaType } from './media-types.js'

export interface Descriptor {
  readonly digest: string
  readonly size: number
}

export interface PlatformEntry extends Descriptor {
  /** `os/architecture[/variant]`. */
  readonly platform: string
}

export type ParsedManifest =
  | { readonly kind: 'index'; readonly entries: readonly PlatformEntry[] }
  | { readonly kind: 'image'; readonly config: Descriptor; readonly layers: readonly Descriptor[] }

const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.OciIndex, MediaType.DockerManifestList])

function descriptor(d: unknown): Descriptor | undefined {
  if (typeof d !== 'object' || d === null) return undefined
  const { digest, size, urls } = d as { digest?: unknown; size?: unknown; urls?: unknown }
  // Foreign layers (with urls) live outside the registry: nothing to fetch through it.
  if (Array.isArray(urls) && urls.length > 0) return undefined
  if (typeof digest !== 'string' || parseDigest(digest) === undefined) return undefined
  return { digest, size: typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : 0 }
}

function platformOf(p: unknown): string | undefined {
  if (typeof p !== 'object' || p === null) return undefined
  const { os, architecture, variant } = p as { os?: unknown; architecture?: unknown; variant?: unknown }
  if (typeof os !== 'string' || typeof architecture !== 'string') return undefined
  return typeof variant === 'string' && variant !== '' ? `${os}/${architecture}/${variant}` : `${os}/${architecture}`
}

/** Reads a manifest or index; throws an Error saying what is wrong with it. */
export function parseManifest(mediaType: string, bytes: Buffer): ParsedManifest {
  let doc: Record<string, unknown>
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'))
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object')
    doc = parsed as Record<string, unknown>
  } catch {
    throw new Error('the manifest is not JSON')
  }
  if (INDEX_TYPES.has(mediaType) || (Array.isArray(doc['manifests']) && doc['layers'] === undefined)) {
    const entries: PlatformEntry[] = []
    for (const m of (doc['manifests'] as unknown[] | undefined) ?? []) {
      const d = descriptor(m)
      const platform = platformOf((m as { platform?: unknown } | null)?.platform)
      if (d !== undefined && platform !== undefined) entries.push({ ...d, platform })
    }
    return { kind: 'index', entries }
  }
  const config = descriptor(doc['config'])
  if (config === undefined || !Array.isArray(doc['layers'])) throw new Error(`unsupported manifest type ${mediaType}`)
  const layers = (doc['layers'] as unknown[]).map(descriptor).filter((d): d is Descriptor => d !== undefined)
  return { kind: 'image', config, layers }
}

/** The platform an image config names (`os`, `architecture`, `variant`). */
export function platformOfConfig(bytes: Buffer): string | undefined {
  try {
    return platformOf(JSON.parse(bytes.toString('utf8')))
  } catch {
    return undefined
  }
}

/**
 * The index entry for a wanted platform, as containerd picks one: os and
 * architecture must match; a wanted variant must match too; with none
 * wanted (Node objects name none), containerd's default variant wins:
 * v8 for arm64, v7 for arm; then an entry without a variant; then the first.
 */
export function pickPlatform(entries: readonly PlatformEntry[], wanted: string): PlatformEntry | undefined {
  const [os, arch, variant] = wanted.split('/')
  const candidates = entries.filter((e) => {
    const [eo, ea, ev] = e.platform.split('/')
    if (eo !== os || ea !== arch) return false
    return variant === undefined || ev === variant || (ev === undefined && arch === 'arm64' && variant === 'v8')
  })
  if (variant !== undefined || candidates.length <= 1) return candidates[0]
  const variantOf = (e: PlatformEntry): string | undefined => e.platform.split('/')[2]
  const preferred = arch === 'arm64' ? 'v8' : arch === 'arm' ? 'v7' : undefined
  return candidates.find((e) => preferred !== undefined && variantOf(e) === preferred) ?? candidates.find((e) => variantOf(e) === undefined) ?? candidates[0]
}
