// s3rver 3.x ships no types: what the tests use of it.
declare module 's3rver' {
  import type { AddressInfo } from 'node:net'

  interface S3rverOptions {
    port?: number
    address?: string
    silent?: boolean
    directory?: string
    resetOnClose?: boolean
    configureBuckets?: Array<{ name: string; configs?: unknown[] }>
  }

  export default class S3rver {
    constructor(options: S3rverOptions)
    run(): Promise<AddressInfo>
    close(): Promise<void>
  }
}
