import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { FilesystemBlobStore, LayoutError } from '../../src/storage/filesystem.js'
import { tempDir } from '../harness/tools.js'
import { runConformance } from '../storage/conformance.js'

await runConformance(t, 'filesystem', async (t) => {
  const root = await tempDir(t, 'stevedore-fs-store')
  const store = new FilesystemBlobStore(root)
  await store.init()
  return {
    store,
    tempFiles: async () => readdir(join(root, 'tmp')),
    reopen: async () => {
      const again = new FilesystemBlobStore(root)
      await again.init()
      return again
    },
  }
})

t.test('filesystem: a layout marker of another version is refused', async (t) => {
  const root = await tempDir(t, 'stevedore-fs-layout')
  await new FilesystemBlobStore(root).init()
  await writeFile(join(root, 'stevedore-layout.json'), '{"version":2}\n')
  await t.rejects(new FilesystemBlobStore(root).init(), { name: 'LayoutError', message: /layout version 2/ })
  await writeFile(join(root, 'stevedore-layout.json'), 'not json')
  await t.rejects(new FilesystemBlobStore(root).init(), LayoutError)
})
