// A private containerd 1.6 (own root/state/socket in a temp dir, namespace
// `test`), driven with `ctr`. Stopped at t.teardown; anything it left mounted
// under its root is unmounted before the dir is removed.
import { readdir, readFile, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'tap'
import { makeTemp, mountsUnderSync, removeDir, run, spawnService, stopService, tailFile, waitReady, type RunResult, type Service } from './tools.js'

export const CONTAINERD_NAMESPACE = 'test'

export interface PullOptions {
  /** `--hosts-dir`: folder of `<host>/hosts.toml` (see writeHostsToml) */
  hostsDir?: string
  plainHttp?: boolean
  /** default 120 s; ctr is SIGKILLed after it */
  timeoutMs?: number
  /** `--user user:password` */
  user?: string
  /** `--platform`, e.g. linux/arm64 (default: the host's) */
  platform?: string
  /** pull all platforms of an index (no unpack) */
  allPlatforms?: boolean
  /** extra ctr pull flags */
  extraArgs?: string[]
}

export interface Containerd {
  /** socket path (ctr --address) */
  address: string
  /** temp dir holding root/, state/, certs.d/, config.toml, logs */
  dir: string
  root: string
  /** CRI registry config_path (unused by ctr unless passed as hostsDir) */
  certsDir: string
  /** `ctr images pull`, unpacking into the default snapshotter (overlayfs) */
  pull(ref: string, opts?: PullOptions): Promise<RunResult>
  /** run any ctr command against this daemon and namespace: ctr(['images', 'ls', '-q']) */
  ctr(args: string[], timeoutMs?: number): Promise<RunResult>
  /** image refs (`ctr images ls -q`) */
  images(): Promise<string[]>
  /** digests in the content store (`ctr content ls -q`) */
  content(): Promise<string[]>
  /** remove every image, then every content blob and partial download, so the next pull is real */
  clean(): Promise<void>
  /** containerd's own log (stderr) */
  log(): string
  stop(): Promise<void>
}

/** Mount points at or under `prefix`, deepest first. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  return mountsUnderSync(prefix)
}

async function unmountAll(prefix: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const mps = await mountsUnder(prefix)
    if (mps.length === 0) return
    for (const mp of mps) {
      const r = await run('umount', [mp], { timeoutMs: 10_000 })
      if (r.code !== 0) await run('umount', ['-l', mp], { timeoutMs: 10_000 })
    }
  }
  const left = await mountsUnder(prefix)
  if (left.length > 0) process.stderr.write(`harness: mounts left under ${prefix}: ${left.join(', ')}\n`)
}

/** Kill processes whose command line mentions `needle` (containerd shims started for `ctr run`). */
async function killMentioning(needle: string): Promise<void> {
  let pids: string[]
  try {
    pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p))
  } catch {
    return
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue
    let cmdline: string
    try {
      cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    } catch {
      continue
    }
    if (cmdline.includes(needle)) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {
        /* gone */
      }
    }
  }
}

export async function startContainerd(t: Test): Promise<Containerd> {
  // short prefix: the socket path must stay under 108 bytes
  const dir = await makeTemp('sv-ctrd')
  const root = join(dir, 'root')
  const state = join(dir, 'state')
  const certsDir = join(dir, 'certs.d')
  const address = join(dir, 'containerd.sock')
  const configPath = join(dir, 'config.toml')
  const stdoutFile = join(dir, 'stdout.log')
  const stderrFile = join(dir, 'containerd.log')
  let svc: Service | undefined

  const stop = async (): Promise<void> => {
    if (svc) await stopService(svc, 'SIGTERM', 10_000)
    await killMentioning(address)
    await unmountAll(dir)
  }
  t.teardown(async () => {
    try {
      await stop()
    } catch (err) {
      process.stderr.write(`harness: containerd teardown: ${String(err)}\n`)
    }
    await removeDir(dir)
  })

  await mkdir(certsDir, { recursive: true })
  await writeFile(
    configPath,
    [
      'version = 2',
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(state)}`,
      '[grpc]',
      `  address = ${JSON.stringify(address)}`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${JSON.stringify(join(dir, 'opt'))}`,
      '[plugins."io.containerd.grpc.v1.cri".registry]',
      `  config_path = ${JSON.stringify(certsDir)}`,
      '',
    ].join('\n'),
  )

  const ctr = (args: string[], timeoutMs = 60_000): Promise<RunResult> => run('ctr', ['--address', address, '-n', CONTAINERD_NAMESPACE, ...args], { timeoutMs })
  const ctrOk = async (args: string[]): Promise<string> => {
    const r = await ctr(args)
    if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    return r.stdout
  }
  const lines = (s: string): string[] =>
    s
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)

  svc = spawnService('containerd', ['--config', configPath], { cwd: dir, stdoutFile, stderrFile })
  const s = svc
  await waitReady(s, async () => (await run('ctr', ['--address', address, 'version'], { timeoutMs: 5000 })).code === 0, 15_000, 'containerd', stderrFile)

  const images = async (): Promise<string[]> => lines(await ctrOk(['images', 'ls', '-q']))
  const content = async (): Promise<string[]> => lines(await ctrOk(['content', 'ls', '-q']))

  return {
    address,
    dir,
    root,
    certsDir,
    ctr,
    images,
    content,
    pull: (ref, opts = {}) => {
      const args = ['images', 'pull']
      if (opts.hostsDir !== undefined) args.push('--hosts-dir', opts.hostsDir)
      if (opts.plainHttp) args.push('--plain-http')
      if (opts.user !== undefined) args.push('--user', opts.user)
      if (opts.platform !== undefined) args.push('--platform', opts.platform)
      if (opts.allPlatforms) args.push('--all-platforms')
      if (opts.extraArgs) args.push(...opts.extraArgs)
      args.push(ref)
      return ctr(args, opts.timeoutMs ?? 120_000)
    },
    clean: async () => {
      const imgs = await images()
      if (imgs.length > 0) await ctrOk(['images', 'rm', '--sync', ...imgs])
      const digests = await content()
      if (digests.length > 0) await ctrOk(['content', 'rm', ...digests])
      // partial downloads would make the next pull resume with Range requests
      await removeDir(join(root, 'io.containerd.content.v1.content', 'ingest'))
      await mkdir(join(root, 'io.containerd.content.v1.content', 'ingest'), { recursive: true })
      // unpacked snapshots normally go with the images (GC); remove any
      // left, children before parents, hence the rounds
      for (let round = 0; round < 10; round++) {
        const keys = lines(await ctrOk(['snapshots', 'ls']))
          .slice(1) // header: KEY PARENT KIND
          .map((l) => l.split(/\s+/)[0] ?? '')
          .filter(Boolean)
        if (keys.length === 0) break
        for (const k of keys) await ctr(['snapshots', 'rm', k])
      }
    },
    log: () => tailFile(stderrFile, 1 << 20),
    stop,
  }
}

/**
 * Write `dir/<registryHost>/hosts.toml`: upstream `serverUrl`, mirror
 * `mirrorUrl` with pull+resolve capabilities.
 */
export async function writeHostsToml(dir: string, registryHost: string, serverUrl: string, mirrorUrl: string): Promise<void> {
  const d = join(dir, registryHost)
  await mkdir(d, { recursive: true })
  await writeFile(join(d, 'hosts.toml'), `server = ${JSON.stringify(serverUrl)}\n\n[host.${JSON.stringify(mirrorUrl)}]\n  capabilities = ["pull", "resolve"]\n`)
}
