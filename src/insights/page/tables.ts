// The page's tables, each described once: the server renders its rows from
// the description, and puts the description into the page as a <template>
// row (data-col, data-format, data-tone) that ui/status.js fills on refresh.
import type { ImageInsight, PullRecord, UpstreamHealth } from '../types.js'
import { format, get, tone, type FormatName, type ToneName } from '../../../ui/view.js'
import { html, type Html } from './html.js'

export interface Column {
  readonly label: string
  /** Dotted path into a row; '' is the row itself. */
  readonly path: string
  /** The cell's data-col (tests and the script find it by this); the path by default. */
  readonly id?: string
  readonly format: FormatName
  /** Shown as a badge coloured by this. */
  readonly tone?: ToneName
  /** Path of the value shown as the cell's tooltip. */
  readonly title?: string
  /** Right-aligned, tabular figures. */
  readonly numeric?: boolean
}

export interface TableSpec<Row> {
  /** The table's data-rows: which list the script fills it from. */
  readonly name: 'images' | 'pulls' | 'upstreams'
  /** The row's data-key. */
  readonly key: keyof Row & string
  readonly columns: readonly Column[]
  /** Said instead of the table when there are no rows. */
  readonly empty: string
}

export const IMAGES: TableSpec<ImageInsight> = {
  name: 'images',
  key: 'image',
  empty: 'No pulls yet.',
  columns: [
    { label: 'Image', path: 'image', format: 'text', title: 'digest' },
    { label: 'Total pull time', path: 'pullSeconds', format: 'seconds', numeric: true },
    { label: 'Pulls', path: 'pulls', format: 'count', numeric: true },
    { label: 'Cold p50', path: 'coldSeconds.p50', format: 'seconds', numeric: true },
    { label: 'Cold p95', path: 'coldSeconds.p95', format: 'seconds', numeric: true },
    { label: 'Warm p50', path: 'warmSeconds.p50', format: 'seconds', numeric: true },
    { label: 'Warm p95', path: 'warmSeconds.p95', format: 'seconds', numeric: true },
    { label: 'Size', path: 'size', format: 'bytes', numeric: true },
    { label: 'Layers', path: 'layerCount', format: 'count', numeric: true },
    { label: 'Largest layer', path: 'largestLayer.size', format: 'bytes', numeric: true, title: 'largestLayer.digest' },
    { label: 'Unique', path: 'uniqueBytes', format: 'bytes', numeric: true },
    { label: 'Last pulled', path: 'lastPulled', format: 'ago', title: 'lastPulled' },
  ],
}

export const PULLS: TableSpec<PullRecord> = {
  name: 'pulls',
  key: 'id',
  empty: 'No pulls yet.',
  columns: [
    { label: 'Ended', path: 'endedAt', format: 'ago', title: 'endedAt' },
    { label: 'Image', path: 'image', format: 'text', title: 'digest' },
    { label: 'Client', path: 'client', format: 'client', title: 'client.userAgent' },
    { label: 'Cache', path: 'cache', format: 'text', tone: 'cache' },
    { label: 'Layers', path: 'layers', format: 'layers', numeric: true },
    { label: 'Bytes', path: 'bytes', format: 'bytes', numeric: true },
    { label: 'From upstream', path: 'bytesFromUpstream', format: 'bytes', numeric: true },
    { label: 'First layer byte', path: 'firstLayerByteSeconds', format: 'seconds', numeric: true },
    { label: 'Time', path: 'seconds', format: 'seconds', numeric: true },
    { label: 'Result', path: 'result', format: 'text', tone: 'result' },
  ],
}

export const UPSTREAMS: TableSpec<UpstreamHealth> = {
  name: 'upstreams',
  key: 'name',
  empty: 'No upstreams configured.',
  columns: [
    { label: 'Upstream', path: 'name', format: 'text', title: 'url' },
    { label: 'URL', path: 'url', format: 'text' },
    { label: 'Requests', path: 'requests', format: 'count', numeric: true },
    { label: 'Errors', path: 'errors', format: 'count', numeric: true },
    { label: 'Rate-limit budget', path: 'rateLimitRemaining', format: 'budget', numeric: true },
    { label: 'State', path: '', id: 'health', format: 'health', tone: 'health' },
  ],
}

const columnId = (c: Column): string => c.id ?? c.path

function cell(c: Column, row: unknown, now: string): Html {
  const cls = c.numeric === true ? html` class="num"` : ''
  const toneBy = c.tone !== undefined ? html` data-tone-by="${c.tone}"` : ''
  const id = columnId(c)
  if (row === undefined) {
    // The template's cell: where the script reads the value and the tooltip from.
    const where = html`${id !== c.path ? html` data-path="${c.path}"` : ''}${c.title !== undefined ? html` data-title-path="${c.title}"` : ''}`
    return html`<td data-col="${id}" data-format="${c.format}"${toneBy}${where}${cls}>${c.tone !== undefined ? html`<span class="badge"></span>` : ''}</td>`
  }
  const value = get(row, c.path)
  const shown = format(c.format, value, now)
  const title = c.title === undefined ? undefined : get(row, c.title)
  const tip = typeof title === 'string' && title !== '' ? html` title="${title}"` : ''
  const content = c.tone === undefined ? shown : html`<span class="badge" data-tone="${tone(c.tone, value)}">${shown}</span>`
  return html`<td data-col="${id}" data-format="${c.format}"${toneBy}${cls}${tip}>${content}</td>`
}

function tableRow<Row>(spec: TableSpec<Row>, row: Row | undefined, now: string): Html {
  const key = row === undefined ? undefined : get(row, spec.key)
  return html`<tr${key !== undefined ? html` data-key="${String(key)}"` : ''}>${spec.columns.map((c) => cell(c, row, now))}</tr>`
}

/** The table with its rows, the empty-state line, and the row template the script refreshes it by. */
export function renderTable<Row>(spec: TableSpec<Row>, rows: readonly Row[], now: string): Html {
  const head = spec.columns.map((c) => html`<th scope="col"${c.numeric === true ? html` class="num"` : ''}>${c.label}</th>`)
  return html`<div class="table-wrap">
<table data-rows="${spec.name}"${rows.length === 0 ? html` hidden` : ''}>
<thead><tr>${head}</tr></thead>
<tbody>${rows.map((r) => tableRow(spec, r, now))}</tbody>
</table>
<template data-row-for="${spec.name}" data-key-path="${spec.key}">${tableRow(spec, undefined, now)}</template>
<p class="empty" data-empty-for="${spec.name}"${rows.length > 0 ? html` hidden` : ''}>${spec.empty}</p>
</div>`
}
