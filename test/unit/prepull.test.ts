// The pre-pull rounds and loop against a fake image store (no runtime): the
// concurrency bound, present images left alone, failures that do not stop a
// round, cancellation, exit codes, and a loop that outlives a missing list.
import { Writable } from 'node:stream'
import { pino } from 'pino'
import t from 'tap'
import type { CriImage } from '../../src/prepull/cri-client.js'
import { mapBounded, prepullLoop, prepullOnce, prepullRound, type ImageList, type ImageStore, type PrepullOptions } from '../../src/prepull/run.js'

type Line = Record<string, unknown>

/** A pino logger at debug level whose JSON lines land in `lines`. */
function capture(): { log: PrepullOptions['log']; lines: Line[] } {
  const lines: Line[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Line)
      done()
    },
  })
  return { log: pino({ level: 'debug' }, stream), lines }
}

/**
 * FakeImageStore: an in-memory image store whose pulls each wait for a
 * release (or finish after `pullMs`), counting how many run at once.
 */
class FakeImageStore implements ImageStore {
  readonly images = new Map<string, string>()
  readonly pulls: string[] = []
  readonly statusCalls: string[] = []
  inFlight = 0
  maxInFlight = 0
  /** Images whose pull rejects with this message. */
  readonly failing = new Map<string, string>()
  /** Images whose pull never finishes unless aborted. */
  readonly hanging = new Set<string>()
  statusError: string | undefined
  cancelled: string[] = []

  constructor(private readonly pullMs = 5) {}

  async imageStatus(image: string, _timeoutMs: number, _signal: AbortSignal): Promise<CriImage | undefined> {
    this.statusCalls.push(image)
    if (this.statusError !== undefined) throw new Error(this.statusError)
    const id = this.images.get(image)
    return id === undefined ? undefined : { id, repoTags: [image], repoDigests: [], size: 1 }
  }

  pullImage(image: string, _timeoutMs: number, signal: AbortSignal): Promise<string> {
    this.pulls.push(image)
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    return new Promise<string>((resolve, reject) => {
      const finish = (): void => {
        this.inFlight--
        signal.removeEventListener('abort', abort)
      }
      const abort = (): void => {
        clearTimeout(timer)
        finish()
        this.cancelled.push(image)
        reject(new Error('CRI PullImage: cancelled'))
      }
      const timer = this.hanging.has(image) ? undefined : setTimeout(() => {
        finish()
        const failure = this.failing.get(image)
        if (failure !== undefined) return reject(new Error(failure))
        const id = `sha256:${image.length.toString(16).padStart(64, '0')}`
        this.images.set(image, id)
        resolve(id)
      }, this.pullMs)
      signal.addEventListener('abort', abort, { once: true })
    })
  }
}

const options = (store: ImageStore, list: ImageList, log: PrepullOptions['log'], concurrency = 2): PrepullOptions => ({
  store, list, log, concurrency, pullTimeoutMs: 60_000, statusTimeoutMs: 1000,
})
const fixed = (images: string[]): ImageList => async () => images
const never = new AbortController().signal

t.test('mapBounded keeps to its limit and the order of its items', async (t) => {
  let running = 0
  let peak = 0
  const out = await mapBounded([30, 5, 20, 1, 10, 2, 7], 3, async (ms) => {
    running++
    peak = Math.max(peak, running)
    await new Promise((r) => setTimeout(r, ms))
    running--
    return ms * 2
  })
  t.same(out, [60, 10, 40, 2, 20, 4, 14])
  t.equal(peak, 3)
  t.same(await mapBounded([], 3, async (x: number) => x), [])
})

t.test('a round pulls what is missing, at most `concurrency` at once, and leaves present images alone', async (t) => {
  const store = new FakeImageStore(20)
  store.images.set('docker.io/library/nginx:1.27', 'sha256:present')
  const list = ['nginx:1.27', ...Array.from({ length: 6 }, (_, i) => `ghcr.io/org/app:${i}`)]
  const { log, lines } = capture()
  const r = await prepullRound(options(store, fixed(list), log, 2), never)
  t.equal(r.kind, 'done')
  t.equal(store.maxInFlight, 2, 'never more than two pulls at once')
  t.equal(store.pulls.length, 6, 'every missing image pulled')
  t.notOk(store.pulls.includes('docker.io/library/nginx:1.27'), 'the present image is not pulled')
  t.same(store.statusCalls[0], 'docker.io/library/nginx:1.27', 'references are normalised before they reach the store')
  t.same(lines.filter((l) => l['msg'] === 'already present').map((l) => l['image']), ['docker.io/library/nginx:1.27'])
  t.equal(lines.filter((l) => l['msg'] === 'pulled').length, 6, 'a line per pulled image')
  t.match(lines.find((l) => l['msg'] === 'round done'), { images: 7, present: 1, pulled: 6, failed: 0 })
})

t.test('two spellings of one image make one pull', async (t) => {
  const store = new FakeImageStore()
  const { log } = capture()
  await prepullRound(options(store, fixed(['nginx', 'docker.io/library/nginx:latest', 'index.docker.io/library/nginx']), log), never)
  t.same(store.pulls, ['docker.io/library/nginx:latest'])
})

t.test('a failed pull is logged with its reason, the rest of the round goes on, and --once exits 1', async (t) => {
  const store = new FakeImageStore()
  store.failing.set('ghcr.io/org/gone:1', 'CRI PullImage: failed to resolve reference: not found')
  const { log, lines } = capture()
  const code = await prepullOnce(options(store, fixed(['ghcr.io/org/gone:1', 'ghcr.io/org/a:1', 'ghcr.io/org/b:1', 'not a reference!']), log, 1), never)
  t.equal(code, 1)
  t.same(store.pulls, ['ghcr.io/org/gone:1', 'ghcr.io/org/a:1', 'ghcr.io/org/b:1'], 'the images after the failure are pulled too')
  const failed = lines.filter((l) => l['msg'] === 'pull failed')
  t.same(failed.map((l) => [l['image'], l['reason']]), [
    ['ghcr.io/org/gone:1', 'CRI PullImage: failed to resolve reference: not found'],
    ['not a reference!', 'not an image reference'],
  ])
  t.ok(failed.every((l) => l['level'] === 50), 'at level error')
})

t.test('--once: 0 when every image is there or pulled; 1 without a list; a runtime that cannot answer fails each image', async (t) => {
  const store = new FakeImageStore()
  store.images.set('ghcr.io/org/a:1', 'sha256:a')
  const { log, lines } = capture()
  t.equal(await prepullOnce(options(store, fixed(['ghcr.io/org/a:1', 'ghcr.io/org/b:1']), log), never), 0)
  t.equal(await prepullOnce(options(store, fixed([]), log), never), 0, 'an empty list is nothing to do')
  t.equal(await prepullOnce(options(store, async () => { throw new Error('mirror down') }, log), never), 1)
  t.match(lines.find((l) => l['msg'] === 'list unavailable'), { reason: 'mirror down', level: 50 })
  store.statusError = 'CRI ImageStatus: connection refused'
  t.equal(await prepullOnce(options(store, fixed(['ghcr.io/org/a:1']), log), never), 1)
  t.match(lines.filter((l) => l['msg'] === 'pull failed').at(-1), { image: 'ghcr.io/org/a:1', reason: 'CRI ImageStatus: connection refused' })
})

t.test('stopping cancels the pulls in flight and starts no more', async (t) => {
  const store = new FakeImageStore()
  for (const i of ['a', 'b']) store.hanging.add(`ghcr.io/org/${i}:1`)
  const { log, lines } = capture()
  const stop = new AbortController()
  const round = prepullRound(options(store, fixed(['ghcr.io/org/a:1', 'ghcr.io/org/b:1', 'ghcr.io/org/c:1']), log, 2), stop.signal)
  await new Promise((r) => setTimeout(r, 20))
  t.equal(store.inFlight, 2, 'two pulls hang')
  stop.abort()
  const r = await round
  t.equal(r.kind, 'done')
  t.same(store.cancelled.sort(), ['ghcr.io/org/a:1', 'ghcr.io/org/b:1'], 'both cancelled')
  t.notOk(store.pulls.includes('ghcr.io/org/c:1'), 'the third never started')
  t.same(r.kind === 'done' ? r.outcomes.map((o) => o.kind) : [], ['abandoned', 'abandoned', 'abandoned'])
  t.same(lines.filter((l) => l['msg'] === 'pull failed'), [], 'a cancelled pull is not a failure')
  t.equal(lines.filter((l) => l['msg'] === 'pull abandoned: stopping').length, 2)
})

t.test('the loop outlives a missing list, picks up new images, says "already present" once, and stops with 0', async (t) => {
  const store = new FakeImageStore()
  store.images.set('ghcr.io/org/a:1', 'sha256:a')
  const { log, lines } = capture()
  const lists: Array<string[] | Error> = [['ghcr.io/org/a:1'], new Error('mirror restarting'), ['ghcr.io/org/a:1'], ['ghcr.io/org/a:1', 'ghcr.io/org/b:1']]
  let round = 0
  const stop = new AbortController()
  const list: ImageList = async () => {
    const next = lists[round++]
    if (next === undefined) {
      stop.abort()
      return []
    }
    if (next instanceof Error) throw next
    return next
  }
  const code = await prepullLoop(options(store, list, log), 1, stop.signal)
  t.equal(code, 0)
  t.equal(round, 5, 'a round after the failed one')
  t.same(store.pulls, ['ghcr.io/org/b:1'], 'the image added later is pulled')
  const info = lines.filter((l) => l['level'] === 30)
  t.same(info.filter((l) => l['msg'] === 'already present').map((l) => l['image']), ['ghcr.io/org/a:1'], 'announced once, at info')
  t.equal(lines.filter((l) => l['msg'] === 'already present' && l['level'] === 20).length, 2, 'later rounds say it at debug')
  t.equal(lines.filter((l) => l['msg'] === 'list unavailable').length, 1)
  t.equal(lines.at(-1)?.['msg'], 'stopped')
})
