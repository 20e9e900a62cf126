// The insights history in the store: one document per instance, written
// every persistInterval when something changed and at shutdown, read at
// start-up. A document that does not read as this version's shape is left
// alone (logged), never half-trusted.
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { Logger } from 'pino'
import type { BlobStore } from '../storage/blob-store.js'
import type { ImageState } from './images.js'
import type { Insights, InsightsHistory } from './insights.js'
import { DurationSamples } from './samples.js'

const VERSION = 1

// Bounded as the code bounds them: a document edited (or corrupted) into huge values is not trusted.
const Num = Type.Number({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
// Times are ms since the epoch, within what Date can print.
const Time = Type.Number({ minimum: 0, maximum: 8.64e15 })
const Str = Type.String({ maxLength: 4096 })
const Opt = <T extends Parameters<typeof Type.Optional>[0]>(t: T) => Type.Optional(t)
const Layer = Type.Object({ digest: Str, size: Num })
const List = <T extends Parameters<typeof Type.Array>[0]>(t: T, maxItems: number) => Type.Array(t, { maxItems })
const Samples = Type.Object({ count: Num, samples: List(Num, 64) })

const PullRecordSchema = Type.Object({
  id: Str, image: Str, upstream: Str, repository: Str, tag: Opt(Str), digest: Str, index: Opt(Str), platform: Opt(Str),
  client: Type.Object({ address: Str, userAgent: Opt(Str), node: Opt(Str) }),
  startedAt: Str, endedAt: Str, seconds: Num, firstLayerByteSeconds: Opt(Num),
  layers: Type.Object({ total: Num, fetched: Num }),
  bytes: Num, bytesFromCache: Num, bytesFromUpstream: Num,
  cache: Type.Union([Type.Literal('cold'), Type.Literal('warm'), Type.Literal('partial')]),
  result: Type.Union([Type.Literal('ok'), Type.Literal('failed')]),
  redirected: Opt(Type.Literal(true)),
})

const ImageSchema = Type.Object({
  image: Str, upstream: Str, repository: Str, tag: Opt(Str), digest: Str, platforms: List(Str, 64),
  pulls: Num, resolves: Num, cold: Num, warm: Num, partial: Num, failed: Num,
  coldSeconds: Samples, warmSeconds: Samples, configSize: Num, layers: List(Layer, 10_000),
  lastPulled: Time, pullSeconds: Num,
  kubelet: Opt(Type.Object({ pulls: Num, pull: Samples, waiting: Samples })),
})

const TotalsSchema = Type.Object({
  requests: Num, hits: Num, bytesServed: Num, bytesFromCache: Num, bytesFromUpstream: Num, savedBytes: Num, savedRequests: Num,
  pulls: Num, cold: Num, warm: Num, partial: Num, failed: Num, resolves: Num,
})

const Bucket = Type.Object({ t: Time, cold: Num, warm: Num, partial: Num, coldSum: Num, warmSum: Num, max: Num })

const HistoryDocument = Type.Object({
  version: Type.Literal(VERSION),
  instance: Str,
  savedAt: Time,
  since: Time,
  seq: Num,
  totals: TotalsSchema,
  pulls: List(PullRecordSchema, 100_000),
  images: List(ImageSchema, 100_000),
  timeline: List(Bucket, 2 * 24 * 60),
})
type HistoryDocument = Static<typeof HistoryDocument>

export const historyKey = (instance: string): string => `insights/${instance}.json`

const samplesOf = (s: DurationSamples): { count: number; samples: number[] } => ({ count: s.count, samples: s.recent() })

function encode(instance: string, h: InsightsHistory, savedAt: number): HistoryDocument {
  return {
    version: VERSION,
    instance,
    savedAt,
    since: h.since,
    seq: h.seq,
    totals: h.totals,
    pulls: h.pulls as HistoryDocument['pulls'],
    images: h.images.map((s) => ({
      ...s,
      coldSeconds: samplesOf(s.coldSeconds),
      warmSeconds: samplesOf(s.warmSeconds),
      kubelet: s.kubelet === undefined ? undefined : { pulls: s.kubelet.pulls, pull: samplesOf(s.kubelet.pull), waiting: samplesOf(s.kubelet.waiting) },
    })),
    timeline: [...h.timeline],
  }
}

function decode(doc: HistoryDocument): InsightsHistory {
  const samples = (s: { count: number; samples: number[] }): DurationSamples => DurationSamples.from(s.count, s.samples)
  const images: ImageState[] = doc.images.map((i) => ({
    ...i,
    coldSeconds: samples(i.coldSeconds),
    warmSeconds: samples(i.warmSeconds),
    kubelet: i.kubelet === undefined ? undefined : { pulls: i.kubelet.pulls, pull: samples(i.kubelet.pull), waiting: samples(i.kubelet.waiting) },
  }))
  return { since: doc.since, seq: doc.seq, totals: doc.totals, pulls: doc.pulls, images, timeline: doc.timeline }
}

/**
 * Reads the saved history of `instance`; undefined when there is none or it
 * is not in a shape this version reads. A store that cannot be read (S3
 * throttling, credentials not there yet) is asked again until it answers:
 * starting a new history then would overwrite the saved one at the first save.
 */
export async function loadHistory(store: BlobStore, instance: string, log: Logger, stopped: () => boolean = () => false, retryMs = 2000): Promise<InsightsHistory | undefined> {
  const key = historyKey(instance)
  let bytes: Buffer | undefined
  for (;;) {
    try {
      bytes = await store.getDocument(key)
      break
    } catch (err) {
      if (stopped()) return undefined
      log.warn({ err, key }, `insights: could not read the saved history; trying again in ${retryMs / 1000} s (pulls are recorded once it is read)`)
      await new Promise((resolve) => setTimeout(resolve, retryMs).unref())
    }
  }
  if (bytes === undefined) return undefined
  let doc: unknown
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    doc = undefined
  }
  if (!Value.Check(HistoryDocument, doc)) {
    log.warn({ key }, 'insights: the saved history is not in a shape this version reads; starting a new one (the document is left as it is until the next save)')
    return undefined
  }
  return decode(doc)
}

/** Saves `insights` to the store every intervalMs when it changed, and once more on stop(). */
export class HistoryWriter {
  private readonly timer: NodeJS.Timeout
  private writing: Promise<void> = Promise.resolve()

  constructor(private readonly store: BlobStore, private readonly insights: Insights, intervalMs: number, private readonly log: Logger, private readonly now: () => number = Date.now) {
    this.timer = setInterval(() => void this.save(), intervalMs)
    this.timer.unref()
  }

  /** One save at a time; a save that fails is logged and tried again at the next tick. */
  save(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (!this.insights.dirty) return
      this.insights.dirty = false
      const doc = encode(this.insights.instance, this.insights.history(), this.now())
      try {
        await this.store.putDocument(historyKey(this.insights.instance), Buffer.from(JSON.stringify(doc)))
      } catch (err) {
        this.insights.dirty = true
        this.log.warn({ err }, 'insights: could not save the history; trying again later')
      }
    })
    return this.writing
  }

  /** The last save: after the open sessions have ended. */
  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.insights.flush()
    await this.save()
  }
}
