import { randomBytes } from 'node:crypto'
import { lstat, mkdir, open, readdir, readFile, rename, rmdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { alternateHostDirName, CA_FILE, HOSTS_FILE, hostDirName, isMarked, renderCaFile, renderHostsToml } from './toml.js'
import type { UpstreamTarget } from './upstreams.js'

export type HostsAction = 'written' | 'unchanged' | 'skipped' | 'removed' | 'absent' | 'error' | 'would write' | 'would remove'

export interface HostsReport {
  readonly action: HostsAction
  /** The registry host, when the entry is about one. */
  readonly registry?: string
  readonly path: string
  readonly reason?: string
  /** For `would write`: the file's bytes. */
  readonly content?: string
}

export interface ApplyOptions {
  /** containerd's `config_path`, e.g. /etc/containerd/certs.d. */
  readonly dir: string
  readonly mirror: URL
  readonly targets: readonly UpstreamTarget[]
  readonly dialTimeout: string
  /** Replace hosts.toml files that Stevedore did not write. */
  readonly force: boolean
  readonly dryRun: boolean
  /** Also remove Stevedore's files for registries not in `targets` (they are no longer upstreams). */
  readonly prune: boolean
  /** The Authorization header for the mirror; the file holding it is then readable by root only. */
  readonly authorization?: string
  /** PEM of the CA the mirror's certificate is trusted through: copied beside each hosts.toml. */
  readonly caPem?: string
}

export interface RemoveOptions {
  readonly dir: string
  /** Undefined: every Stevedore file under `dir`. */
  readonly registries?: readonly string[]
  readonly dryRun: boolean
}

type Existing =
  | { readonly kind: 'none' }
  | { readonly kind: 'marked'; readonly text: string }
  | { readonly kind: 'foreign'; readonly why: string }

const errorCode = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err))
const errorText = (err: unknown): string => {
  const e = err as NodeJS.ErrnoException
  return e.code !== undefined ? `${e.code}: ${e.message}` : err instanceof Error ? err.message : String(err)
}

async function inspectFile(file: string): Promise<Existing> {
  let st
  try {
    st = await lstat(file)
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return { kind: 'none' }
    throw err
  }
  if (!st.isFile()) return { kind: 'foreign', why: st.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a regular file' }
  const text = await readFile(file, 'utf8')
  return isMarked(text) ? { kind: 'marked', text } : { kind: 'foreign', why: 'its first line is not the stevedore mark' }
}

/** Files in a registry folder other than hosts.toml: the legacy layout (certificates), which containerd reads only when there is no hosts.toml. */
async function otherFiles(folder: string): Promise<string[]> {
  try {
    return (await readdir(folder)).filter((n) => n !== HOSTS_FILE && n !== CA_FILE && !n.startsWith('.hosts.toml.'))
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return []
    throw err
  }
}

/** Writes through a temp file in the same folder and a rename, so containerd never reads half a file. */
async function writeAtomically(file: string, folder: string, content: string, mode = 0o644): Promise<void> {
  await mkdir(folder, { recursive: true, mode: 0o755 })
  const tmp = join(folder, `.hosts.toml.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const handle = await open(tmp, 'wx', mode)
  try {
    await handle.writeFile(content, 'utf8')
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await rename(tmp, file)
  } catch (err) {
    await unlink(tmp).catch(() => undefined)
    throw err
  }
}

/** Removes the CA file Stevedore wrote beside a hosts.toml, if there is one. */
async function removeOurCa(folder: string): Promise<void> {
  const file = join(folder, CA_FILE)
  if ((await inspectFile(file)).kind === 'marked') await unlink(file)
}

/** Removes a folder if it is empty now; a folder that holds anything else stays. */
async function removeFolderIfEmpty(folder: string): Promise<void> {
  try {
    await rmdir(folder)
  } catch (err) {
    if (!['ENOTEMPTY', 'EEXIST', 'ENOENT'].includes(errorCode(err))) throw err
  }
}

async function listSubfolders(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true })
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort()
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return []
    throw err
  }
}

/**
 * The folder to write for a registry: the first one containerd would read
 * (`host_port_`, then `host:port`) that already holds a hosts.toml, else the
 * plain registry host.
 */
async function chooseFolder(dir: string, registry: string): Promise<{ folder: string; existing: Existing }> {
  const names = [alternateHostDirName(registry), hostDirName(registry)].filter((n): n is string => n !== undefined)
  for (const name of names) {
    const folder = join(dir, name)
    const existing = await inspectFile(join(folder, HOSTS_FILE))
    if (existing.kind !== 'none') return { folder, existing }
  }
  const folder = join(dir, hostDirName(registry))
  return { folder, existing: { kind: 'none' } }
}

/** Writes (or, with dryRun, describes) one hosts.toml per target. Never throws for one file's trouble: that is an `error` entry. */
export async function applyHosts(options: ApplyOptions): Promise<HostsReport[]> {
  const reports: HostsReport[] = []
  const used = new Set<string>()
  for (const target of options.targets) {
    const registry = target.name
    let path = join(options.dir, hostDirName(registry), HOSTS_FILE)
    try {
      const { folder, existing } = await chooseFolder(options.dir, registry)
      path = join(folder, HOSTS_FILE)
      used.add(folder)
      const caPath = join(folder, CA_FILE)
      const caContent = options.caPem !== undefined ? renderCaFile(options.caPem) : undefined
      const caExisting = caContent !== undefined ? await inspectFile(caPath) : undefined
      const content = renderHostsToml({
        registry,
        server: target.url,
        mirror: options.mirror,
        dialTimeout: options.dialTimeout,
        ...(options.authorization !== undefined ? { authorization: options.authorization } : {}),
        // Relative: containerd reads it from the hosts.toml's own folder, wherever the node mounts it.
        ...(caContent !== undefined ? { ca: CA_FILE } : {}),
      })
      const caCurrent = caContent === undefined || (caExisting?.kind === 'marked' && caExisting.text === caContent)
      if (existing.kind === 'marked' && existing.text === content && caCurrent) {
        reports.push({ action: 'unchanged', registry, path })
        continue
      }
      if (!options.force) {
        if (existing.kind === 'foreign') {
          reports.push({ action: 'skipped', registry, path, reason: `not written by stevedore (${existing.why}); left untouched, --force replaces it` })
          continue
        }
        if (caExisting?.kind === 'foreign') {
          reports.push({ action: 'skipped', registry, path: caPath, reason: `not written by stevedore (${caExisting.why}); left untouched, --force replaces it` })
          continue
        }
        if (existing.kind === 'none') {
          const others = await otherFiles(folder)
          if (others.length > 0) {
            reports.push({
              action: 'skipped',
              registry,
              path,
              reason: `the folder holds ${others.join(', ')} and no hosts.toml (containerd's older layout, read only without a hosts.toml); left untouched, --force writes anyway`,
            })
            continue
          }
        }
      }
      if (options.dryRun) {
        if (caContent !== undefined && !caCurrent) reports.push({ action: 'would write', registry, path: caPath, content: caContent })
        reports.push({ action: 'would write', registry, path, content: options.authorization !== undefined ? content.replace(options.authorization, 'Basic <from --auth-file>') : content })
        continue
      }
      // The CA first: a hosts.toml must never name a file that is not there yet.
      if (caContent !== undefined && !caCurrent) {
        await writeAtomically(caPath, folder, caContent)
        reports.push({ action: 'written', registry, path: caPath })
      }
      // It holds a credential: root only, as containerd runs.
      await writeAtomically(path, folder, content, options.authorization !== undefined ? 0o600 : 0o644)
      reports.push({ action: 'written', registry, path })
    } catch (err) {
      reports.push({ action: 'error', registry, path, reason: errorText(err) })
    }
  }
  if (options.prune) {
    try {
      for (const name of await listSubfolders(options.dir)) {
        const folder = join(options.dir, name)
        if (used.has(folder)) continue
        const path = join(folder, HOSTS_FILE)
        try {
          if ((await inspectFile(path)).kind !== 'marked') continue
          if (options.dryRun) {
            reports.push({ action: 'would remove', path, reason: 'no longer an upstream in the config' })
            continue
          }
          await unlink(path)
          await removeOurCa(folder)
          await removeFolderIfEmpty(folder)
          reports.push({ action: 'removed', path, reason: 'no longer an upstream in the config' })
        } catch (err) {
          reports.push({ action: 'error', path, reason: errorText(err) })
        }
      }
    } catch (err) {
      reports.push({ action: 'error', path: options.dir, reason: errorText(err) })
    }
  }
  return reports
}

/** Deletes Stevedore's hosts.toml files (and their folders, when that leaves them empty). Foreign files stay. */
export async function removeHosts(options: RemoveOptions): Promise<HostsReport[]> {
  const reports: HostsReport[] = []
  let candidates: { folder: string; registry?: string; named: boolean }[]
  try {
    candidates = options.registries !== undefined
      ? options.registries.flatMap((registry) =>
          [alternateHostDirName(registry), hostDirName(registry)]
            .filter((n): n is string => n !== undefined)
            .map((name, i, all) => ({ folder: join(options.dir, name), registry, named: i === all.length - 1 })))
      : (await listSubfolders(options.dir)).map((name) => ({ folder: join(options.dir, name), named: false }))
  } catch (err) {
    return [{ action: 'error', path: options.dir, reason: errorText(err) }]
  }
  const found = new Set<string>()
  for (const { folder, registry, named } of candidates) {
    const path = join(folder, HOSTS_FILE)
    const base = registry !== undefined ? { registry, path } : { path }
    try {
      const existing = await inspectFile(path)
      if (existing.kind === 'none') {
        if (named && registry !== undefined && !found.has(registry)) reports.push({ ...base, action: 'absent' })
        continue
      }
      if (registry !== undefined) found.add(registry)
      if (existing.kind === 'foreign') {
        reports.push({ ...base, action: 'skipped', reason: `not written by stevedore (${existing.why}); left untouched` })
        continue
      }
      if (options.dryRun) {
        reports.push({ ...base, action: 'would remove' })
        continue
      }
      await unlink(path)
      await removeOurCa(folder)
      await removeFolderIfEmpty(folder)
      reports.push({ ...base, action: 'removed' })
    } catch (err) {
      reports.push({ ...base, action: 'error', reason: errorText(err) })
    }
  }
  return reports
}
