// The kubelet's Pulled event messages, as pkg/kubelet/images/image_manager.go
// has written them (durations by Go's time.Duration.String()):
//   1.26 and later: Successfully pulled image "nginx:1.27" in 3.2s (4.1s including waiting). Image size: 123 bytes.
//                   (the ". Image size" part came later; 1.30 and later truncate both durations to ms)
//   1.19 to 1.25:   Successfully pulled image "nginx:1.27" in 49.18401355s
//                   (timed from before the pull queue: it includes the waiting, kubernetes#111704)
//   before 1.19:    Successfully pulled image "nginx:1.27"             (no figure: not read)
//   any version:    Container image "nginx:1.27" already present on machine[ and can be accessed by the pod]
//                   (reason Pulled too, but no pull: not read)
// The event correlator may prefix "(combined from similar events): ". Pure.

/** A pull the kubelet reported. */
export interface PulledMessage {
  /** As the message quotes it: the pod spec's reference, not normalised. */
  readonly image: string
  /** The pull itself; undefined for kubelets before 1.26, whose one figure includes the queueing. */
  readonly pullSeconds: number | undefined
  /** Pull plus waiting behind other pulls (serialized pulls, maxParallelImagePulls). */
  readonly includingWaitingSeconds: number
  readonly imageSizeBytes?: number
}

const PULLED = /Successfully pulled image "((?:[^"\\]|\\.)*)" in (\S+?)(?: \((\S+) including waiting\))?(?:\. Image size: (\d+) bytes\.)?\s*$/

/** The figures of a "Successfully pulled image" message; undefined for any other message (an image already present, a format not known). */
export function parsePulledMessage(message: string): PulledMessage | undefined {
  const m = PULLED.exec(message)
  if (m === null) return undefined
  const [, quoted = '', first = '', waiting, size] = m
  const firstSeconds = goDurationSeconds(first)
  if (firstSeconds === undefined || firstSeconds < 0) return undefined
  if (waiting === undefined) return { image: unquote(quoted), pullSeconds: undefined, includingWaitingSeconds: firstSeconds }
  const waitingSeconds = goDurationSeconds(waiting)
  if (waitingSeconds === undefined || waitingSeconds < 0) return undefined
  return {
    image: unquote(quoted),
    pullSeconds: firstSeconds,
    includingWaitingSeconds: waitingSeconds,
    ...(size !== undefined ? { imageSizeBytes: Number(size) } : {}),
  }
}

// Go's %q escapes `"` and `\` (and unprintable runes, which no valid image reference has).
const unquote = (s: string): string => s.replace(/\\(.)/g, '$1')

const NANOS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  'µs': 1_000n, // U+00B5 micro sign: what Duration.String() writes
  'μs': 1_000n, // U+03BC Greek mu: also accepted by time.ParseDuration
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
}
const MAX_NANOS = (1n << 63n) - 1n
const UNIT_PART = /^(\d*)(?:\.(\d*))?([a-zµμ]+)/

/**
 * A Go duration (time.ParseDuration's syntax: `[-+]` then one or more
 * `<decimal><unit>`, units ns us µs ms s m h; `0` alone) as integer
 * nanoseconds; undefined when it is not one or overflows int64.
 */
export function parseGoDuration(text: string): bigint | undefined {
  let s = text
  let negative = false
  if (s.startsWith('-') || s.startsWith('+')) {
    negative = s.startsWith('-')
    s = s.slice(1)
  }
  if (s === '0') return 0n
  if (s === '') return undefined
  let total = 0n
  while (s !== '') {
    const m = UNIT_PART.exec(s)
    if (m === null) return undefined
    const [whole, int = '', frac, unit = ''] = m
    const scale = NANOS[unit]
    if (scale === undefined || (int === '' && (frac === undefined || frac === ''))) return undefined
    let part = BigInt(int === '' ? '0' : int) * scale
    if (frac !== undefined && frac !== '') {
      // Digits past the unit's nanosecond resolution are dropped, as Go does.
      const digits = Math.min(frac.length, 18)
      const ten = 10n ** BigInt(digits)
      part += (BigInt(frac.slice(0, digits)) * scale) / ten
    }
    total += part
    if (total > MAX_NANOS + (negative ? 1n : 0n)) return undefined
    s = s.slice(whole.length)
  }
  return negative ? -total : total
}

/** A Go duration in seconds (a float); undefined when it is not one. */
export function goDurationSeconds(text: string): number | undefined {
  const ns = parseGoDuration(text)
  return ns === undefined ? undefined : Number(ns) / 1e9
}
