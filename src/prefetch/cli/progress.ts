import { MultiBar, Presets, type SingleBar } from 'cli-progress'
import type { ImageStatus } from '../warm-image.js'
import { formatBytes } from '../../cli/format.js'

/** What the command shows while jobs run: bars on a terminal, lines in a log, nothing for --json. */
export interface Progress {
  /** Told each poll's statuses: every image of every job, in the order they were given. */
  update(images: readonly ImageStatus[]): void
  /** A line about the command itself (a retry, a wait), shown without breaking the display. */
  note(text: string): void
  /** Ends the display; nothing is drawn after it. */
  stop(): void
}

const FINISHED = new Set(['done', 'failed', 'refused'])
const finished = (s: ImageStatus): boolean => FINISHED.has(s.state)
const layersDone = (s: ImageStatus): number => s.layers.cached + s.layers.fetched

/** For --json: stdout holds the JSON only, stderr the notes (a retry is worth knowing in a script too). */
export function silentProgress(write: (text: string) => void): Progress {
  return { update: () => undefined, note: (text) => write(`${text}\n`), stop: () => undefined }
}

/** The line a change of an image is logged with. */
export function progressLine(position: number, count: number, s: ImageStatus): string {
  const head = `[${position}/${count}] ${s.image}: ${s.state}`
  // No layers yet: the image is being resolved, or ended before it was.
  if (s.state === 'running' && s.layers.total === 0) return `${head}, resolving`
  if (s.state === 'queued' || s.layers.total === 0) return s.error !== undefined ? `${head} (${s.error})` : head
  const layers = `layers ${layersDone(s)}/${s.layers.total} (${s.layers.fetched} fetched, ${s.layers.cached} cached${s.layers.failed > 0 ? `, ${s.layers.failed} failed` : ''})`
  const bytes = `${formatBytes(s.bytes.cached + s.bytes.fetched)} of ${formatBytes(s.bytes.total)}`
  return `${head}, ${layers}, ${bytes}${s.error !== undefined ? ` (${s.error})` : ''}`
}

/**
 * One line per change of an image's state or layer counts: a CI log or a
 * pipe gets a readable record, not a line per byte (bytes move on every poll).
 */
export function lineProgress(write: (text: string) => void): Progress {
  const seen = new Map<number, string>()
  return {
    update(images) {
      images.forEach((s, i) => {
        const key = `${s.state} ${s.layers.total} ${s.layers.cached} ${s.layers.fetched} ${s.layers.failed}`
        if (seen.get(i) === key) return
        seen.set(i, key)
        write(`${progressLine(i + 1, images.length, s)}\n`)
      })
    },
    note: (text) => write(`${text}\n`),
    stop: () => undefined,
  }
}

/** What a terminal needs of its stream; a tty.WriteStream has it. */
export interface TerminalStream extends NodeJS.WritableStream {
  readonly isTTY?: boolean
  readonly rows?: number
  readonly columns?: number
}

const MAX_NAME = 48

function shortName(name: string): string {
  // The tail of a reference (repository and tag) is what tells images apart.
  return name.length <= MAX_NAME ? name : `…${name.slice(name.length - MAX_NAME + 1)}`
}

interface BarPayload {
  name: string
  state: string
  layers: string
  bytes: string
}

function payloadOf(name: string, s: ImageStatus): BarPayload {
  if (s.layers.total === 0) return { name, state: s.state.padEnd(7), layers: s.state === 'running' ? 'resolving' : '', bytes: '' }
  return {
    name,
    state: s.state.padEnd(7),
    layers: `${layersDone(s)}/${s.layers.total} layers`,
    bytes: `${formatBytes(s.bytes.cached + s.bytes.fetched)}/${formatBytes(s.bytes.total)}`,
  }
}

/**
 * A cli-progress bar per image (bytes cached or fetched of the image's total,
 * its layer count and state). More images than the terminal has rows would
 * scroll the bars apart: then one bar for all of them counts images instead.
 */
export function barProgress(stream: TerminalStream, images: readonly string[]): Progress {
  const multi = new MultiBar({
    stream,
    format: ' {name} |{bar}| {state} {layers} {bytes}',
    hideCursor: true,
    clearOnComplete: false,
    stopOnComplete: false,
    // Our own SIGINT handler stops the bars (restoring the cursor) and says which jobs go on.
    gracefulExit: false,
    barsize: 24,
    fps: 5,
  }, Presets.shades_classic)
  // A pseudo-terminal nobody sized says 0 rows: take a common terminal's.
  const rows = stream.rows !== undefined && stream.rows > 0 ? stream.rows : 24
  const perImage = images.length <= Math.max(1, rows - 4)
  const width = Math.min(MAX_NAME, Math.max(...images.map((i) => i.length), 'all images'.length))
  const names = images.map((i) => shortName(i).padEnd(width))
  let bars: SingleBar[] = []
  let overall: SingleBar | undefined
  let stopped = false

  if (perImage) {
    bars = images.map((_, i) => multi.create(1, 0, { name: names[i] ?? '', state: 'queued ', layers: '', bytes: '' }))
  } else {
    overall = multi.create(images.length, 0, { name: `all ${images.length} images`.padEnd(width), state: 'queued ', layers: '', bytes: '' })
  }

  return {
    update(statuses) {
      if (stopped) return
      if (overall !== undefined) {
        const done = statuses.filter(finished).length
        const running = statuses.filter((s) => s.state === 'running').length
        const bytes = statuses.reduce((n, s) => n + s.bytes.cached + s.bytes.fetched, 0)
        const total = statuses.reduce((n, s) => n + s.bytes.total, 0)
        overall.update(done, { state: `${running} running`, layers: `${done}/${statuses.length} images`, bytes: `${formatBytes(bytes)}/${formatBytes(total)}` })
        return
      }
      statuses.forEach((s, i) => {
        const bar = bars[i]
        if (bar === undefined) return
        // Until the image is resolved its size is unknown: an empty bar, not a full one of 0 of 0.
        bar.setTotal(Math.max(1, s.bytes.total))
        const value = finished(s) && s.state === 'done' ? Math.max(1, s.bytes.total) : s.bytes.cached + s.bytes.fetched
        bar.update(value, payloadOf(names[i] ?? '', s))
      })
    },
    note: (text) => {
      if (!stopped) multi.log(`${text}\n`)
    },
    stop: () => {
      if (stopped) return
      stopped = true
      multi.stop()
    },
  }
}
