import { unwatchFile, watchFile, type Stats } from 'node:fs'

export interface FileWatch {
  close(): void
}

/**
 * Calls onChange when any of the files changes, by polling their stat
 * (every pollMs). Polling, not inotify: a mounted Kubernetes Secret is
 * replaced by swapping a symlink two levels up, which an inotify watch on
 * the file never sees, while stat follows the links to the new inode.
 * Several files changing in one poll (a certificate and its key) call
 * onChange once.
 */
export function watchFiles(paths: readonly string[], onChange: () => void, pollMs = 2000): FileWatch {
  let scheduled: NodeJS.Timeout | undefined
  const changed = (curr: Stats, prev: Stats): void => {
    if (curr.ino === prev.ino && curr.mtimeMs === prev.mtimeMs && curr.size === prev.size) return
    clearTimeout(scheduled)
    // Let the other files of one update land before reading them.
    scheduled = setTimeout(onChange, Math.min(500, pollMs))
    scheduled.unref()
  }
  for (const path of paths) watchFile(path, { interval: pollMs, persistent: false }, changed)
  return {
    close: () => {
      clearTimeout(scheduled)
      for (const path of paths) unwatchFile(path, changed)
    },
  }
}
