// The kubelet's Pulled messages and Go durations (src/insights/kubelet-message.ts).
// The messages are as kubelets wrote them (pkg/kubelet/images/image_manager.go
// of each era, and events people posted from real clusters); the durations
// are checked against a port of Go's time.Duration.String().
import fc from 'fast-check'
import t from 'tap'
import { goDurationSeconds, parseGoDuration, parsePulledMessage } from '../../src/insights/kubelet-message.js'
import { holds, nasty } from './fakes/property.js'

t.test('Pulled messages of every kubelet era', async (t) => {
  const cases: Array<[string, string, ReturnType<typeof parsePulledMessage>]> = [
    ['1.30+: ms, image size',
      'Successfully pulled image "zabbix/zabbix-web-nginx-pgsql:latest" in 717ms (718ms including waiting). Image size: 78005565 bytes.',
      { image: 'zabbix/zabbix-web-nginx-pgsql:latest', pullSeconds: 0.717, includingWaitingSeconds: 0.718, imageSizeBytes: 78005565 }],
    ['1.30+: minutes',
      'Successfully pulled image "acrusw3391575s4halwincont.azurecr.io/run48-lsc2019:latest" in 3m10.96s (3m10.96s including waiting). Image size: 3072610852 bytes.',
      { image: 'acrusw3391575s4halwincont.azurecr.io/run48-lsc2019:latest', pullSeconds: 190.96, includingWaitingSeconds: 190.96, imageSizeBytes: 3072610852 }],
    ['1.30+: a whole minute keeps its zero seconds',
      'Successfully pulled image "nginx" in 1m0.809s (1m0.809s including waiting). Image size: 187694648 bytes.',
      { image: 'nginx', pullSeconds: 60.809, includingWaitingSeconds: 60.809, imageSizeBytes: 187694648 }],
    ['1.30+: queued behind other pulls',
      'Successfully pulled image "nginx:1.27" in 3.2s (4.1s including waiting). Image size: 123 bytes.',
      { image: 'nginx:1.27', pullSeconds: 3.2, includingWaitingSeconds: 4.1, imageSizeBytes: 123 }],
    ['1.26-1.29: nanoseconds, no size',
      'Successfully pulled image "public.ecr.aws/eks-distro/kubernetes-csi/external-provisioner:v3.4.1-eks-1-26-7" in 1.315633737s (1.315641898s including waiting)',
      { image: 'public.ecr.aws/eks-distro/kubernetes-csi/external-provisioner:v3.4.1-eks-1-26-7', pullSeconds: 1.315633737, includingWaitingSeconds: 1.315641898 }],
    ['1.26-1.29: short',
      'Successfully pulled image "registry.k8s.io/echoserver:1.4" in 7.46s (7.46s including waiting)',
      { image: 'registry.k8s.io/echoserver:1.4', pullSeconds: 7.46, includingWaitingSeconds: 7.46 }],
    ['1.19-1.25: one figure, timed from before the queue',
      'Successfully pulled image "nginx" in 49.657983991s',
      { image: 'nginx', pullSeconds: undefined, includingWaitingSeconds: 49.657983991 }],
    ['1.19-1.25: hours',
      'Successfully pulled image "docker.m.daocloud.io/library/ubuntu:22.10" in 1h0m3s',
      { image: 'docker.m.daocloud.io/library/ubuntu:22.10', pullSeconds: undefined, includingWaitingSeconds: 3603 }],
    ['the correlator\'s aggregate of similar events',
      '(combined from similar events): Successfully pulled image "ghcr.io/shop/web:2" in 512ms (2.5s including waiting). Image size: 1 bytes.',
      { image: 'ghcr.io/shop/web:2', pullSeconds: 0.512, includingWaitingSeconds: 2.5, imageSizeBytes: 1 }],
    ['a digest reference, microseconds (µ, u and μ)',
      `Successfully pulled image "registry:5000/a/b@sha256:${'a'.repeat(64)}" in 850µs (1.2ms including waiting). Image size: 0 bytes.`,
      { image: `registry:5000/a/b@sha256:${'a'.repeat(64)}`, pullSeconds: 0.00085, includingWaitingSeconds: 0.0012, imageSizeBytes: 0 }],
    ['microseconds as us',
      'Successfully pulled image "a:1" in 850us (900μs including waiting)',
      { image: 'a:1', pullSeconds: 0.00085, includingWaitingSeconds: 0.0009 }],
    ['a zero duration', 'Successfully pulled image "a:1" in 0s (0s including waiting). Image size: 5 bytes.', { image: 'a:1', pullSeconds: 0, includingWaitingSeconds: 0, imageSizeBytes: 5 }],
    ['before 1.19: no figure', 'Successfully pulled image "docker.io/library/fedora:32"', undefined],
    ['already present', 'Container image "python:3.11-alpine" already present on machine', undefined],
    ['already present (1.33+)', 'Container image "busybox:1.36" already present on machine and can be accessed by the pod', undefined],
    ['a failure', 'Failed to pull image "x:1": rpc error: code = NotFound desc = not found', undefined],
    ['a back-off', 'Back-off pulling image "x:1"', undefined],
    ['Pulling', 'Pulling image "x:1"', undefined],
    ['a negative duration', 'Successfully pulled image "x:1" in -3s (3s including waiting)', undefined],
    ['a unit Go does not know', 'Successfully pulled image "x:1" in 3sec', undefined],
    ['a space in a duration', 'Successfully pulled image "x:1" in 3 s', undefined],
    ['a bad waiting figure', 'Successfully pulled image "x:1" in 3s (soon including waiting)', undefined],
    ['empty', '', undefined],
  ]
  for (const [name, message, expected] of cases) t.same(parsePulledMessage(message), expected, name)
  t.equal(parsePulledMessage('Successfully pulled image "we\\"ird" in 1s (1s including waiting)')?.image, 'we"ird', 'Go %q escapes are undone')
})

t.test('Go durations: the syntax of time.ParseDuration', async (t) => {
  const cases: Array<[string, bigint | undefined]> = [
    ['0', 0n], ['0s', 0n], ['1ns', 1n], ['850µs', 850_000n], ['850us', 850_000n], ['850μs', 850_000n],
    ['1.5ms', 1_500_000n], ['512ms', 512_000_000n], ['3.204s', 3_204_000_000n], ['1m2.5s', 62_500_000_000n],
    ['1h0m3s', 3_603_000_000_000n], ['-1.5h', -5_400_000_000_000n], ['+5s', 5_000_000_000n], ['.5s', 500_000_000n],
    ['1.s', 1_000_000_000n], ['1h1h', 7_200_000_000_000n], ['1.0000000009s', 1_000_000_000n],
    ['2562047h47m16.854775807s', (1n << 63n) - 1n], ['-2562047h47m16.854775808s', -(1n << 63n)],
    ['2562047h47m16.854775808s', undefined], ['9223372036854775808ns', undefined],
    ['', undefined], ['s', undefined], ['.s', undefined], ['5', undefined], ['1d', undefined], ['1hh', undefined],
    ['1h 2m', undefined], ['1S', undefined], ['-', undefined], ['--1s', undefined], ['1e3s', undefined],
  ]
  for (const [text, ns] of cases) t.equal(parseGoDuration(text), ns, JSON.stringify(text))
  t.equal(goDurationSeconds('1m2.5s'), 62.5)
  t.equal(goDurationSeconds('soon'), undefined)
})

/** Go's time.Duration.String(), written again from its documented behaviour: the property below checks the parser against it. */
function goDurationString(d: bigint): string {
  if (d === 0n) return '0s'
  const sign = d < 0n ? '-' : ''
  const u = d < 0n ? -d : d
  const frac = (v: bigint, digits: number): string => {
    const s = v.toString().padStart(digits, '0').replace(/0+$/, '')
    return s === '' ? '' : `.${s}`
  }
  if (u < 1_000_000_000n) {
    // Under a second: the largest unit below it that fits, with the fraction of that unit.
    const [digits, unit] = u < 1_000n ? [0, 'ns'] : u < 1_000_000n ? [3, 'µs'] : [6, 'ms']
    const scale = 10n ** BigInt(digits)
    return `${sign}${u / scale}${digits > 0 ? frac(u % scale, digits) : ''}${unit}`
  }
  let rest = u / 1_000_000_000n
  let out = `${rest % 60n}${frac(u % 1_000_000_000n, 9)}s`
  rest /= 60n
  if (rest > 0n) {
    out = `${rest % 60n}m${out}`
    rest /= 60n
    if (rest > 0n) out = `${rest}h${out}`
  }
  return sign + out
}

t.test('the port of Duration.String() writes what Go writes', async (t) => {
  // Examples from Go's own time package documentation and tests.
  const go: Array<[bigint, string]> = [
    [0n, '0s'], [1n, '1ns'], [1_100n, '1.1µs'], [2_200_000n, '2.2ms'], [3_300_000_000n, '3.3s'],
    [4n * 60_000_000_000n + 5_000_000_000n, '4m5s'], [4n * 60_000_000_000n + 5_001_000_000n, '4m5.001s'],
    [5n * 3_600_000_000_000n + 6n * 60_000_000_000n + 7_001_000_000n, '5h6m7.001s'], [8n * 60_000_000_000n + 1n, '8m0.000000001s'],
    [(1n << 63n) - 1n, '2562047h47m16.854775807s'], [-(1n << 63n), '-2562047h47m16.854775808s'], [3_600_000_000_000n, '1h0m0s'],
  ]
  for (const [ns, s] of go) t.equal(goDurationString(ns), s, s)
})

const int64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })
// Mostly the sizes pulls take: milliseconds to hours.
const pullNanos = fc.oneof(fc.bigInt({ min: 0n, max: 10n ** 9n }), fc.bigInt({ min: 0n, max: 7_200n * 10n ** 9n }), fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }))
const imageRef = fc.stringMatching(/^[a-z0-9.-]{1,20}(?::\d{1,5})?(?:\/[a-z0-9._-]{1,12}){1,3}(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,20}|@sha256:[0-9a-f]{64})$/)

t.test('properties: Go durations and Pulled messages', async (t) => {
  holds(t, 'any int64 written as Go writes it parses back to itself', fc.property(int64, (ns) => parseGoDuration(goDurationString(ns)) === ns))
  holds(t, 'and truncated to milliseconds, as kubelets 1.30+ do', fc.property(pullNanos, (ns) => {
    const ms = (ns / 1_000_000n) * 1_000_000n
    return parseGoDuration(goDurationString(ms)) === ms
  }))
  holds(t, 'any text: a bigint within int64 or undefined, never a throw', fc.property(fc.oneof(nasty, fc.stringMatching(/^[-+]?(?:\d{0,25}(?:\.\d{0,25})?(?:ns|us|µs|ms|s|m|h|x)?){0,4}$/)), (s) => {
    const ns = parseGoDuration(s)
    return ns === undefined || (ns >= -(1n << 63n) && ns < 1n << 63n)
  }))
  holds(t, 'a message of any image and durations gives them back', fc.property(imageRef, pullNanos, pullNanos, fc.option(fc.nat(), { nil: undefined }), (image, a, b, size) => {
    const pull = a <= b ? a : b
    const waiting = a <= b ? b : a
    const message = `Successfully pulled image "${image}" in ${goDurationString(pull)} (${goDurationString(waiting)} including waiting)${size !== undefined ? `. Image size: ${size} bytes.` : ''}`
    const p = parsePulledMessage(message)
    return p !== undefined && p.image === image && p.pullSeconds === Number(pull) / 1e9 && p.includingWaitingSeconds === Number(waiting) / 1e9 && p.imageSizeBytes === size
  }))
  holds(t, 'any text: a parse or undefined, never a throw; "already present" never parses', fc.property(nasty, imageRef, (s, image) =>
    (parsePulledMessage(s) === undefined || typeof parsePulledMessage(s)?.includingWaitingSeconds === 'number')
    && parsePulledMessage(`Container image "${image}" already present on machine${s}`) === undefined))
})
