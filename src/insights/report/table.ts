// Plain-text tables: the same on a terminal and in a pipe.

export interface Column {
  readonly head: string
  /** Numbers go right. */
  readonly align?: 'left' | 'right'
}

/** The header and rows, columns two spaces apart, each line indented by `indent`, no trailing blanks. */
export function formatTable(columns: readonly Column[], rows: ReadonlyArray<readonly string[]>, indent = ''): string {
  const widths = columns.map((c, i) => Math.max(c.head.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string => indent + columns.map((c, i) => {
    const cell = cells[i] ?? ''
    return c.align === 'right' ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0)
  }).join('  ').trimEnd()
  return [line(columns.map((c) => c.head)), ...rows.map(line)].join('\n') + '\n'
}
