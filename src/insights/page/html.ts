// HTML built by a tagged template that escapes every value put into it:
// image names, tags and user agents come from clients, so nothing reaches
// the page unescaped unless it was itself built by `html`.

const RAW: unique symbol = Symbol('html')

/** A fragment of markup that is safe to insert as it is. */
export interface Html {
  readonly [RAW]: string
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** Text safe in element content and in quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c)
}

function isHtml(value: unknown): value is Html {
  return typeof value === 'object' && value !== null && RAW in value
}

function piece(value: unknown): string {
  if (value === null || value === undefined || value === false) return ''
  if (isHtml(value)) return value[RAW]
  if (Array.isArray(value)) return value.map(piece).join('')
  return escapeHtml(String(value))
}

/** Markup with its interpolations escaped; fragments built by `html` (and arrays of them) go in as they are. */
export function html(strings: TemplateStringsArray, ...values: readonly unknown[]): Html {
  let out = strings[0] ?? ''
  values.forEach((value, i) => {
    out += piece(value) + (strings[i + 1] ?? '')
  })
  return { [RAW]: out }
}

/** The markup of a fragment, to send. */
export function markup(fragment: Html): string {
  return fragment[RAW]
}
