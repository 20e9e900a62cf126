import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'

/** Every file under dir with its bytes (and every folder, as an entry ending in /). */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {}
  async function walk(rel: string): Promise<void> {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      if (e.isDirectory()) {
        result[`${r}/`] = ''
        await walk(r)
      } else result[r] = await readFile(join(dir, r), 'utf8')
    }
  }
  await walk('')
  return result
}
