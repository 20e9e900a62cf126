// The prefetch job status as the API documents it (README, "Prefetch into the
// mirror"), written out here rather than imported from src/: a test of the
// wire shape must not follow the server's types when they change.
export interface ImageStatus {
  image: string
  reference: string
  state: string
  digest?: string
  platforms: string[]
  layers: { total: number; cached: number; fetched: number; failed: number }
  bytes: { total: number; cached: number; fetched: number }
  failures: Array<{ digest: string; reason: string }>
  error?: string
}

export interface JobStatus {
  id: string
  state: string
  createdAt: string
  finishedAt?: string
  platforms: string[]
  images: ImageStatus[]
}
