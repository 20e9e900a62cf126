/** One challenge from a WWW-Authenticate header: `Bearer realm="...",service="..."`. */
export interface Challenge {
  /** Lowercased: "bearer", "basic", ... */
  readonly scheme: string
  /** Parameter names lowercased; values unquoted. */
  readonly params: Readonly<Record<string, string>>
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y
const SPACE = /[ \t]*/y

/**
 * Parses every challenge in a WWW-Authenticate value (RFC 7235): several
 * challenges per header, quoted strings with escapes, commas inside quotes
 * (scopes such as `repository:a/b:pull,push`), case-insensitive schemes.
 */
export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return []
  if (typeof header !== 'string') return header.flatMap((h) => parseChallenges(h))
  const out: Array<{ scheme: string; params: Record<string, string> }> = []
  let pos = 0
  const s = header
  const skipSpace = (): void => {
    SPACE.lastIndex = pos
    SPACE.exec(s)
    pos = SPACE.lastIndex
  }
  const readToken = (): string | undefined => {
    TOKEN.lastIndex = pos
    const m = TOKEN.exec(s)
    if (m === null) return undefined
    pos = TOKEN.lastIndex
    return m[0]
  }
  const readQuoted = (): string => {
    let value = ''
    pos++ // opening quote
    while (pos < s.length && s[pos] !== '"') {
      if (s[pos] === '\\' && pos + 1 < s.length) pos++
      value += s[pos]
      pos++
    }
    pos++ // closing quote
    return value
  }
  while (pos < s.length) {
    skipSpace()
    if (s[pos] === ',') {
      pos++
      continue
    }
    const word = readToken()
    if (word === undefined) {
      pos++ // junk: skip a character and go on
      continue
    }
    skipSpace()
    if (s[pos] === '=' && out.length > 0) {
      // auth-param of the current challenge
      pos++
      skipSpace()
      const value = s[pos] === '"' ? readQuoted() : (readToken() ?? '')
      ;(out[out.length - 1] as { params: Record<string, string> }).params[word.toLowerCase()] = value
    } else if (s[pos] === '=') {
      pos++ // a parameter before any scheme: ignore it
      skipSpace()
      if (s[pos] === '"') readQuoted()
      else readToken()
    } else {
      // No prototype: a parameter named `__proto__` or `constructor` is data like any other.
      out.push({ scheme: word.toLowerCase(), params: Object.create(null) as Record<string, string> })
      // token68 form (`Basic abc==`) carries no params we use; skip it.
    }
  }
  return out
}
