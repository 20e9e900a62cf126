/** Users and their bcrypt hashes, as `htpasswd -B` writes them; lines that are not that are skipped, with why. */
export interface Htpasswd {
  readonly users: ReadonlyMap<string, string>
  readonly skipped: ReadonlyArray<{ readonly line: number; readonly why: string }>
}

// $2y$ is what Apache's htpasswd writes; $2a$ and $2b$ are the same algorithm.
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/

export function parseHtpasswd(text: string): Htpasswd {
  const users = new Map<string, string>()
  const skipped: Array<{ line: number; why: string }> = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const colon = line.indexOf(':')
    const user = colon < 0 ? '' : line.slice(0, colon)
    const hash = colon < 0 ? '' : line.slice(colon + 1)
    if (user === '') skipped.push({ line: i + 1, why: 'not user:hash' })
    else if (!BCRYPT.test(hash)) skipped.push({ line: i + 1, why: 'not a bcrypt hash (write it with htpasswd -B)' })
    else users.set(user, hash)
  })
  return { users, skipped }
}
