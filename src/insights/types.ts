// The JSON shapes of the insights API (/api/v1/pulls, images, layers,
// summary, timeline): what the status page, `stevedore report` and users'
// own scripts read. Times are ISO 8601 strings; durations are seconds
// (3 decimals); sizes are bytes. Documented in the README ("What pulls cost").

/** How a pull's layers were served: all from the cache, all from the upstream (or a fill in progress), or a mix. */
export type PullCache = 'cold' | 'warm' | 'partial'

/** One pull: a manifest (or index, then manifest) and the blobs of it that one client fetched after it. */
export interface PullRecord {
  /** Unique per replica: `<instance>-<n>`. */
  readonly id: string
  /** `<upstream>/<repository>:<tag>`, or `…@<digest>` when pulled by digest. */
  readonly image: string
  readonly upstream: string
  readonly repository: string
  readonly tag?: string
  /** The image manifest pulled (a platform's manifest when the tag names an index). */
  readonly digest: string
  /** The index the manifest was chosen from, when there was one. */
  readonly index?: string
  /** `os/architecture[/variant]`, from the index or the image's config. */
  readonly platform?: string
  readonly client: {
    readonly address: string
    readonly userAgent?: string
    /** The Kubernetes Node with this InternalIP, when pre-warming's API access knows it. */
    readonly node?: string
  }
  readonly startedAt: string
  readonly endedAt: string
  /** From the first manifest request to the last blob byte. */
  readonly seconds: number
  /** From the first manifest request to the first byte of a layer; absent when no layer body was sent. */
  readonly firstLayerByteSeconds?: number
  readonly layers: {
    /** Layers the manifest lists. */
    readonly total: number
    /** Layers this client fetched (a node skips the ones it has). */
    readonly fetched: number
  }
  /** Blob bytes of this pull (layers and config). */
  readonly bytes: number
  readonly bytesFromCache: number
  /** From the upstream, or from a fill in progress (cold). */
  readonly bytesFromUpstream: number
  readonly cache: PullCache
  /** failed: a blob request of it got an error or was cut before its last byte. */
  readonly result: 'ok' | 'failed'
  /**
   * Blobs of it were answered with a redirect to the store (`storage.s3.redirect`): the
   * downloads themselves were not seen, so `seconds` is not its pull time, and it is left
   * out of the pull-time figures (percentiles, pullSeconds, the timeline, the histogram).
   */
  readonly redirected?: true
}

export interface LayerRef {
  readonly digest: string
  readonly size: number
}

/** Pull times of one kind (cold, warm) for one image, over its most recent pulls. */
export interface DurationStats {
  readonly count: number
  readonly p50?: number
  readonly p95?: number
  readonly max?: number
  /** The most recent durations (seconds, at most 64): what `stevedore report` merges replicas by. */
  readonly samples: readonly number[]
}

/** One image (upstream, repository, tag or digest) over every pull of it this replica saw. */
export interface ImageInsight {
  readonly image: string
  readonly upstream: string
  readonly repository: string
  readonly tag?: string
  /** The manifest of the last pull. Sizes and layers below are of this manifest. */
  readonly digest: string
  readonly platforms: readonly string[]
  readonly pulls: number
  /** Manifest requests that moved no blob (a node checking a tag it has). */
  readonly resolves: number
  readonly cold: number
  readonly warm: number
  readonly partial: number
  readonly failed: number
  /** Cold and partial pulls. */
  readonly coldSeconds: DurationStats
  readonly warmSeconds: DurationStats
  /** Compressed: config and layers. */
  readonly size: number
  readonly layerCount: number
  readonly largestLayer?: LayerRef
  /** Bytes of layers no other image known here has. */
  readonly uniqueBytes: number
  /** Base layer first, as the manifest lists them. */
  readonly layers: readonly LayerRef[]
  readonly lastPulled: string
  /** Seconds all pulls of it took, summed: the ranking key. */
  readonly pullSeconds: number
  /** The kubelet's own figures, from Pulled events (with pre-warming's Kubernetes access). */
  readonly kubelet?: {
    readonly pulls: number
    readonly pullSeconds: DurationStats
    readonly includingWaitingSeconds: DurationStats
  }
}

/** A layer and the images (known here) that have it. */
export interface LayerInsight {
  readonly digest: string
  readonly size: number
  readonly images: readonly string[]
}

export interface UpstreamHealth {
  readonly name: string
  readonly url: string
  readonly requests: number
  /** Unreachable, timeouts, digest mismatches, 5xx answers. */
  readonly errors: number
  /** The last ratelimit-remaining it announced; null when it announced none. */
  readonly rateLimitRemaining: number | null
  /** Seconds left before the mirror asks it again after a 429; 0 when not paused. */
  readonly pausedSeconds: number
}

export interface Summary {
  readonly instance: string
  /** Since when these figures count (history is kept across restarts). */
  readonly since: string
  readonly now: string
  /** Manifest and blob requests. hits: answered without asking the upstream for the body. */
  readonly requests: { readonly total: number; readonly hits: number; readonly hitRatio: number | null }
  /** Manifest and blob body bytes sent to clients. */
  readonly bytes: { readonly served: number; readonly fromCache: number; readonly fromUpstream: number; readonly hitRatio: number | null }
  /** What did not cross the upstream link because the mirror had it (or was fetching it for someone else). */
  readonly upstreamSaved: { readonly bytes: number; readonly requests: number }
  readonly pulls: { readonly total: number; readonly cold: number; readonly warm: number; readonly partial: number; readonly failed: number; readonly resolves: number }
  readonly fillsInProgress: number
  readonly cache: { readonly size: number; readonly quota: number | null; readonly usedRatio: number | null }
  readonly upstreams: readonly UpstreamHealth[]
}

/** Pulls that ended in one minute. */
export interface TimelinePoint {
  /** The minute's start. */
  readonly t: string
  readonly pulls: number
  readonly cold: number
  readonly warm: number
  readonly partial: number
  /** Mean pull seconds of the cold (and partial) and of the warm pulls; null when none. */
  readonly coldMeanSeconds: number | null
  readonly warmMeanSeconds: number | null
  readonly maxSeconds: number | null
}

/** GET /api/v1/pulls */
export interface PullsResponse { readonly instance: string; readonly pulls: readonly PullRecord[] }
/** GET /api/v1/images */
export interface ImagesResponse { readonly instance: string; readonly images: readonly ImageInsight[] }
/** GET /api/v1/layers */
export interface LayersResponse { readonly instance: string; readonly layers: readonly LayerInsight[] }
/** GET /api/v1/timeline */
export interface TimelineResponse { readonly instance: string; readonly minutes: readonly TimelinePoint[] }

/** A kubelet's own account of a pull, from a Pulled event. */
export interface KubeletPull {
  /** As the pod spec names it (not normalised). */
  readonly image: string
  readonly node?: string
  readonly pullSeconds: number
  readonly includingWaitingSeconds: number
  readonly at: Date
}

/** What the API routes and the status page read. */
export interface InsightsView {
  readonly instance: string
  summary(): Promise<Summary>
  /** Most recent first; image: a pull's `image`, or its `<upstream>/<repository>` (any tag). */
  pulls(query: { readonly limit: number; readonly image?: string }): PullsResponse
  /** By pullSeconds, highest first. */
  images(query: { readonly limit: number }): ImagesResponse
  /** Largest first. */
  layers(query: { readonly limit: number }): LayersResponse
  /** The last `minutes` minutes, oldest first, one point per minute (empty minutes included). */
  timeline(query: { readonly minutes: number }): TimelineResponse
}
