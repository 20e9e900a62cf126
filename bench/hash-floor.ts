// The sha256 floor of a miss: what hashing alone costs this machine, measured
// in the same run as the figures it is printed beside. Every byte a mirror
// fills must be hashed before its last byte is served, so no cold path can
// spend less CPU per GB than this.
import { createHash, randomFillSync } from 'node:crypto'

const MiB = 1024 * 1024

/**
 * CPU seconds per GB (10^9 bytes) that node's sha256 takes on `bytes` of
 * random data in 1 MiB updates (the size hashing gets cheapest at); the
 * median of `reps` runs, each timed by this process's own CPU clock.
 */
export function sha256SecondsPerGB(bytes = 256 * MiB, reps = 3): number {
  const buffer = randomFillSync(Buffer.allocUnsafe(16 * MiB))
  const runs: number[] = []
  for (let r = 0; r < reps; r++) {
    const before = process.cpuUsage()
    const hash = createHash('sha256')
    for (let done = 0; done < bytes; done += MiB) {
      const at = done % buffer.byteLength
      hash.update(buffer.subarray(at, at + MiB))
    }
    hash.digest()
    const used = process.cpuUsage(before)
    runs.push((used.user + used.system) / 1e6 / (bytes / 1e9))
  }
  runs.sort((a, b) => a - b)
  return runs[Math.floor(runs.length / 2)] ?? NaN
}
