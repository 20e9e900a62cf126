import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Every Prometheus metric the mirror exports, on a registry of its own. */
export class Metrics {
  readonly registry = new Registry()

  readonly requests = new Counter({
    name: 'stevedore_http_requests_total',
    help: 'Requests answered, by route and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  })

  readonly prefetchImages = new Counter({
    name: 'stevedore_prefetch_images_total',
    help: 'Images of prefetch jobs that ended, by state (done, failed, refused).',
    labelNames: ['state'] as const,
    registers: [this.registry],
  })

  readonly prefetchBlobs = new Counter({
    name: 'stevedore_prefetch_blobs_total',
    help: 'Blobs of prefetched images, by result: cached (there already), fetched, failed.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  readonly prewarms = new Counter({
    name: 'stevedore_prewarm_total',
    help: 'Images pre-warmed because a workload in the cluster names them, by result: warm, failed, ignored (not a mirrored registry).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  readonly prewarmSeconds = new Histogram({
    name: 'stevedore_prewarm_seconds',
    help: 'From a workload change seen on the Kubernetes API to its new image warm in the cache.',
    buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  })

  readonly imagePullDuration = new Histogram({
    name: 'stevedore_image_pull_duration_seconds',
    help: 'Image pulls through the mirror, from the first manifest request to the last blob byte, by upstream and cache (cold, warm, partial).',
    labelNames: ['upstream', 'cache'] as const,
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  })

  readonly imagePulls = new Counter({
    name: 'stevedore_image_pulls_total',
    help: 'Image pulls through the mirror, by upstream and cache (cold, warm, partial).',
    labelNames: ['upstream', 'cache'] as const,
    registers: [this.registry],
  })

  readonly imageResolves = new Counter({
    name: 'stevedore_image_resolves_total',
    help: 'Manifest requests that moved no blob (a node checking a tag it has), by upstream.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })

  readonly upstreamBytesSaved = new Counter({
    name: 'stevedore_upstream_bytes_saved_total',
    help: 'Manifest and blob bytes sent to clients that did not cross the upstream link for them: from the cache, or from a fill another client started.',
    registers: [this.registry],
  })

  readonly upstreamRequestsSaved = new Counter({
    name: 'stevedore_upstream_requests_saved_total',
    help: 'Manifest and blob requests answered without asking the upstream.',
    registers: [this.registry],
  })

  readonly kubeletPullDuration = new Histogram({
    name: 'stevedore_kubelet_pull_duration_seconds',
    help: 'Image pull times the kubelets report in Pulled events, by phase: pull, or including_waiting (pull plus queueing behind other pulls).',
    labelNames: ['phase'] as const,
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  })

  readonly cacheResults = new Counter({
    name: 'stevedore_cache_results_total',
    help: 'Cache results (hit, miss, joined, stale, revalidated) by kind (manifest, blob).',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  })

  readonly bytesServed = new Counter({
    name: 'stevedore_bytes_served_total',
    help: 'Body bytes sent to clients, by source: cache (stored) or upstream (a fill in progress).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  })

  readonly upstreamRequests = new Counter({
    name: 'stevedore_upstream_requests_total',
    help: 'Requests sent to upstream registries, by upstream, method and status.',
    labelNames: ['upstream', 'method', 'status'] as const,
    registers: [this.registry],
  })

  readonly upstreamErrors = new Counter({
    name: 'stevedore_upstream_errors_total',
    help: 'Upstream failures (unreachable, timeout, digest mismatch), by upstream and reason.',
    labelNames: ['upstream', 'reason'] as const,
    registers: [this.registry],
  })

  readonly upstreamRetries = new Counter({
    name: 'stevedore_upstream_retries_total',
    help: 'Upstream requests retried after a transient failure (a blob resumed from the byte reached), by upstream and reason.',
    labelNames: ['upstream', 'reason'] as const,
    registers: [this.registry],
  })

  readonly upstreamLatency = new Histogram({
    name: 'stevedore_upstream_request_duration_seconds',
    help: 'Time to upstream response headers, by upstream and status.',
    labelNames: ['upstream', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  })

  readonly upstreamBytes = new Counter({
    name: 'stevedore_upstream_bytes_total',
    help: 'Blob bytes received from upstreams.',
    registers: [this.registry],
  })

  readonly rateLimitRemaining = new Gauge({
    name: 'stevedore_upstream_ratelimit_remaining',
    help: 'Last ratelimit-remaining an upstream announced (Docker Hub pulls left).',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })

  readonly fillsInProgress = new Gauge({
    name: 'stevedore_blob_fills_in_progress',
    help: 'Blob fills from upstream running now.',
    registers: [this.registry],
  })

  readonly fills = new Counter({
    name: 'stevedore_blob_fills_total',
    help: 'Blob fills ended, by outcome (published, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })

  readonly cacheSize = new Gauge({
    name: 'stevedore_cache_size_bytes',
    help: 'Bytes of blobs and manifests stored.',
    registers: [this.registry],
  })

  readonly evictions = new Counter({
    name: 'stevedore_evictions_total',
    help: 'Blobs evicted to stay under the quota.',
    registers: [this.registry],
  })

  readonly evictedBytes = new Counter({
    name: 'stevedore_evicted_bytes_total',
    help: 'Bytes evicted to stay under the quota.',
    registers: [this.registry],
  })

  readonly timeToFirstByte = new Histogram({
    name: 'stevedore_time_to_first_byte_seconds',
    help: 'Time from request to the first body byte, by kind and cache result.',
    labelNames: ['kind', 'result'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })

  readonly requestDuration = new Histogram({
    name: 'stevedore_request_duration_seconds',
    help: 'Time to answer a request completely, by kind and cache result.',
    labelNames: ['kind', 'result'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  })

  readonly clusterMembers = new Gauge({
    name: 'stevedore_cluster_members',
    help: 'Replicas this one knows (known) and those in its ring now, healthy (live); self included.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  })

  readonly clusterForwards = new Counter({
    name: 'stevedore_cluster_forwards_total',
    help: 'Fills of blobs another replica owns, by outcome: forwarded (served through the owner), or why the upstream was asked instead (unreachable, refused, owner_error, mid_stream).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })

  readonly clusterPeerBytes = new Counter({
    name: 'stevedore_cluster_peer_bytes_received_total',
    help: 'Blob bytes received from owner replicas.',
    registers: [this.registry],
  })

  readonly clusterPeerRequests = new Counter({
    name: 'stevedore_cluster_peer_requests_total',
    help: 'Blob requests from other replicas for blobs this one owns, by result (hit, miss, joined; refused: a bad or missing signature).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'stevedore_process_' })
  }
}
