// Client authentication with real bcrypt hashes (bcryptjs, cost 4 for speed)
// and a real htpasswd file on disk: parsing, the verified-header cache, the
// per-address limit on failures, and reloading the file when it changes.
import { mkdtempSync } from 'node:fs'
import { rename, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { pino } from 'pino'
import t from 'tap'
import { ClientAuth } from '../../src/auth/client-auth.js'
import { parseHtpasswd } from '../../src/auth/htpasswd.js'

const log = pino({ level: 'silent' })
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const hash = (password: string): string => bcrypt.hashSync(password, 4).replace(/^\$2b\$/, '$2y$')

t.test('htpasswd: bcrypt entries kept, anything else skipped with its line', async (t) => {
  const text = `# users\nalice:${hash('a')}\n\nbob:$apr1$abc$def\ncarol\n:${hash('x')}\r\ndave:${hash('d')}\r\n`
  const parsed = parseHtpasswd(text)
  t.same([...parsed.users.keys()], ['alice', 'dave'])
  t.same(parsed.skipped.map((s) => s.line), [4, 5, 6], 'MD5, no hash, no user')
  t.match(parsed.skipped[0]?.why, /htpasswd -B/)
})

t.test('check: a verified header is remembered; wrong, unknown and malformed credentials are denied', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-auth-'))
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hash('wonderland')}\n`)
  let compares = 0
  const auth = new ClientAuth({ htpasswd: file, log, compare: async (p, h) => (compares++, bcrypt.compareSync(p, h)) })
  await auth.start()
  t.teardown(() => auth.close())
  t.same(await auth.check(basic('alice', 'wonderland'), '10.0.0.1'), { kind: 'ok', user: 'alice' })
  t.same(await auth.check(basic('alice', 'wonderland'), '10.0.0.2'), { kind: 'ok', user: 'alice' })
  t.equal(compares, 1, 'hashed once: the second was remembered')
  const together = await Promise.all(Array.from({ length: 5 }, () => auth.check(basic('alice', 'other'), '10.0.0.3')))
  t.ok(together.every((o) => o.kind === 'denied'), 'a wrong password')
  t.equal(compares, 2, 'five at once, one comparison')
  t.same(await auth.check(basic('nobody', 'x'), '10.0.0.3'), { kind: 'denied' }, 'an unknown user (hashed too, so it takes as long)')
  t.same(await auth.check('Basic !!!', '10.0.0.3'), { kind: 'denied' }, 'not base64')
  t.same(await auth.check('Bearer abc', '10.0.0.3'), { kind: 'denied' }, 'another scheme')
  t.same(await auth.check(undefined, '10.0.0.3'), { kind: 'denied' }, 'no header')
})

t.test('failures: past the limit an address is refused before any hashing, until its window ends', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-auth-'))
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hash('wonderland')}\n`)
  let compares = 0
  const auth = new ClientAuth({ htpasswd: file, log, compare: async (p, h) => (compares++, bcrypt.compareSync(p, h)), failures: { max: 3, windowMs: 400 } })
  await auth.start()
  t.teardown(() => auth.close())
  for (let i = 0; i < 3; i++) t.equal((await auth.check(basic('alice', `guess${i}`), '10.9.9.9')).kind, 'denied')
  const limited = await auth.check(basic('alice', 'guess4'), '10.9.9.9')
  t.equal(limited.kind, 'limited', 'the fourth is refused')
  t.ok(limited.kind === 'limited' && limited.retryAfterS >= 1, 'with a Retry-After')
  t.equal(compares, 3, 'without hashing')
  t.equal((await auth.check(basic('alice', 'wonderland'), '10.9.9.8')).kind, 'ok', 'another address is not limited')
  t.equal((await auth.check(basic('alice', 'wonderland'), '10.9.9.8')).kind, 'ok')
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal((await auth.check(basic('alice', 'wonderland'), '10.9.9.9')).kind, 'ok', 'after the window')
  t.same(await auth.check(undefined, '10.9.9.9'), { kind: 'denied' }, 'no header is never counted')
})

t.test('the file is re-read when it changes, also when a symlink swap replaces it; what was verified is forgotten', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-auth-'))
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hash('old')}\n`)
  const auth = new ClientAuth({ htpasswd: file, log, compare: async (p, h) => bcrypt.compareSync(p, h), pollMs: 50 })
  await auth.start()
  t.teardown(() => auth.close())
  t.equal((await auth.check(basic('alice', 'old'), '1.1.1.1')).kind, 'ok')
  // Replaced whole, as a Secret's update swaps it.
  await writeFile(join(dir, 'next'), `alice:${hash('new')}\nbob:${hash('b')}\n`)
  await rename(join(dir, 'next'), file)
  const until = Date.now() + 5000
  while (auth.userCount !== 2 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(auth.userCount, 2, 'reloaded')
  t.equal((await auth.check(basic('alice', 'old'), '1.1.1.2')).kind, 'denied', 'the old password, though verified before, no longer works')
  t.equal((await auth.check(basic('alice', 'new'), '1.1.1.2')).kind, 'ok')
  t.equal((await auth.check(basic('bob', 'b'), '1.1.1.2')).kind, 'ok')
})

t.test('start-up names the key when the file cannot be read', async (t) => {
  const auth = new ClientAuth({ htpasswd: '/nonexistent/htpasswd', log, compare: async () => false })
  await t.rejects(auth.start(), /config: auth\.htpasswd: \/nonexistent\/htpasswd: ENOENT/)
})

t.test('attempts sent at once count before hashing: at most the limit is hashed; unknown users cost a real entry\'s hash', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-auth-'))
  const file = join(dir, 'htpasswd')
  const cheap = hash('a')
  const dear = bcrypt.hashSync('b', 6).replace(/^\$2b\$/, '$2y$')
  await writeFile(file, `alice:${cheap}\nbob:${dear}\n`)
  const hashedWith: string[] = []
  const auth = new ClientAuth({ htpasswd: file, log, compare: async (p, h) => (hashedWith.push(h), bcrypt.compareSync(p, h)), failures: { max: 3, windowMs: 60_000 } })
  await auth.start()
  t.teardown(() => auth.close())
  // Before the fix: all twenty were hashed before the first failure was counted.
  const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => auth.check(basic('alice', `guess-${i}`), '10.7.7.7')))
  t.equal(hashedWith.length, 3, 'three hashed')
  t.equal(outcomes.filter((o) => o.kind === 'limited').length, 17, 'the other seventeen refused unhashed')
  hashedWith.length = 0
  t.equal((await auth.check(basic('mallory', 'x'), '10.7.7.8')).kind, 'denied', 'an unknown user')
  t.same(hashedWith, [dear], 'hashed against the costliest real entry')
  t.equal((await auth.check(basic('bob', 'b'), '10.7.7.8')).kind, 'ok', 'a success gives its attempt back')
  for (let i = 0; i < 2; i++) t.equal((await auth.check(basic('bob', `no-${i}`), '10.7.7.8')).kind, 'denied')
  t.equal((await auth.check(basic('bob', 'no-3'), '10.7.7.8')).kind, 'limited', 'the unknown user and two wrong passwords: three')
})
