// docker/Dockerfile, replayed without a Docker engine (none runs here): each
// stage gets a temp "root filesystem"; COPY copies from the build context
// (the repository, less .dockerignore) or from an earlier stage; RUN steps run
// there; then the final stage's ENTRYPOINT + CMD starts, as the image's USER,
// able to write only its cache volume and a temp folder. A runtime need on a
// dev dependency, or a file the Dockerfile forgets to copy, fails here.
import { chmod, chown, cp, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { builtinModules } from 'node:module'
import { basename, dirname, isAbsolute, join, posix, relative } from 'node:path'
import t from 'tap'
import { parse as parseYaml, stringify } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { cleanEnv, REPO_ROOT } from '../harness/mirror.js'
import { freePort, httpAnswers, requireTools, run, spawnService, stopService, tailFile, tempDir, waitReady } from '../harness/tools.js'

// ------------------------------------------------------------ Dockerfile

interface Instruction {
  readonly op: string
  readonly flags: Record<string, string>
  readonly args: string
  readonly line: number
}

interface Stage {
  readonly name: string
  readonly from: string
  readonly steps: Instruction[]
}

/** Instructions (continuations joined, comments dropped), with build ARGs expanded. */
function parseDockerfile(text: string): { stages: Stage[]; args: Record<string, string> } {
  const logical: { text: string; line: number }[] = []
  let pending = ''
  let start = 0
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) return
    if (pending !== '' && line.startsWith('#')) return
    if (pending === '') start = i + 1
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `
      return
    }
    logical.push({ text: pending + line, line: start })
    pending = ''
  })
  const args: Record<string, string> = {}
  const stages: Stage[] = []
  const expand = (s: string): string => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => args[a ?? b ?? ''] ?? '')
  for (const { text: l, line } of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(l)
    if (m === null) throw new Error(`Dockerfile line ${line}: cannot parse ${JSON.stringify(l)}`)
    const op = (m[1] as string).toUpperCase()
    let rest = m[2] as string
    const flags: Record<string, string> = {}
    for (;;) {
      const f = /^--([\w-]+)(?:=(\S*))?\s+/.exec(rest)
      if (f === null) break
      flags[f[1] as string] = f[2] ?? 'true'
      rest = rest.slice(f[0].length)
    }
    if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=', 2)
      args[(k as string).trim()] = (v ?? '').trim()
      continue
    }
    if (op === 'FROM') {
      const fm = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(expand(rest))
      if (fm === null) throw new Error(`Dockerfile line ${line}: FROM ${rest}`)
      stages.push({ name: fm[2] ?? String(stages.length), from: fm[1] as string, steps: [] })
      continue
    }
    const stage = stages.at(-1)
    if (stage === undefined) throw new Error(`Dockerfile line ${line}: ${op} before FROM`)
    stage.steps.push({ op, flags, args: op === 'RUN' ? rest : expand(rest), line })
  }
  return { stages, args }
}

const jsonArray = (s: string): string[] => {
  const v: unknown = JSON.parse(s)
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`not a JSON string array: ${s}`)
  return v as string[]
}

// ------------------------------------------------------------ .dockerignore

/** A .dockerignore pattern as a RegExp over slash-separated paths relative to the context. */
function ignoreRegExp(pattern: string): RegExp {
  let p = posix.normalize(pattern.replace(/^\/+/, '')).replace(/\/+$/, '')
  let re = ''
  for (let i = 0; i < p.length; i++) {
    const c = p[i] as string
    if (c === '*' && p[i + 1] === '*') {
      re += '.*'
      i++
      if (p[i + 1] === '/') i++
    } else if (c === '*') re += '[^/]*'
    else if (c === '?') re += '[^/]'
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
  }
  p = re
  // A pattern names a path and everything below it.
  return new RegExp(`^${p}(?:/.*)?$`)
}

function dockerignore(text: string): (rel: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => (l.startsWith('!') ? { keep: true, re: ignoreRegExp(l.slice(1)) } : { keep: false, re: ignoreRegExp(l) }))
  return (rel) => {
    let ignored = false
    for (const r of rules) if (r.re.test(rel)) ignored = !r.keep
    return ignored
  }
}

// ------------------------------------------------------------ replay

interface Replayed {
  readonly rootfs: string
  readonly workdir: string
  readonly env: Record<string, string>
  readonly user?: string
  readonly entrypoint: string[]
  readonly cmd: string[]
  readonly expose: number[]
  readonly volumes: string[]
  readonly log: string[]
}

async function replay(dockerfile: string, context: string, work: string, ignored: (rel: string) => boolean): Promise<Map<string, Replayed>> {
  const { stages } = parseDockerfile(dockerfile)
  // Stages run as soon as the stages they copy from are done, in parallel otherwise (as BuildKit does).
  const done = new Map<string, Promise<Replayed>>()
  const replayStage = async (stage: Stage): Promise<Replayed> => {
    const started = Date.now()
    const rootfs = join(work, `stage-${stage.name}`)
    await mkdir(rootfs, { recursive: true })
    const inRoot = (abs: string): string => join(rootfs, abs)
    let workdir = '/'
    const env: Record<string, string> = {}
    let user: string | undefined
    let entrypoint: string[] = []
    let cmd: string[] = []
    const expose: number[] = []
    const volumes: string[] = []
    const log: string[] = []
    const resolveDest = (d: string): string => (isAbsolute(d) ? d : posix.join(workdir, d))
    for (const step of stage.steps) {
      const where = `Dockerfile line ${step.line} (${step.op} ${step.args})`
      switch (step.op) {
        case 'WORKDIR':
          workdir = resolveDest(step.args)
          await mkdir(inRoot(workdir), { recursive: true })
          break
        case 'ENV': {
          for (const m of step.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1] as string] = (m[2] as string).replace(/^"|"$/g, '')
          break
        }
        case 'COPY': {
          const parts = step.args.startsWith('[') ? jsonArray(step.args) : step.args.split(/\s+/)
          const dest = resolveDest(parts.at(-1) as string)
          const sources = parts.slice(0, -1)
          const intoDir = dest.endsWith('/') || sources.length > 1
          for (const src of sources) {
            let from: string
            const fromStage = step.flags['from']
            if (fromStage !== undefined) {
              const pending = done.get(fromStage)
              if (pending === undefined) throw new Error(`${where}: no stage ${fromStage} before this one`)
              const s = await pending
              from = join(s.rootfs, isAbsolute(src) ? src : posix.join(s.workdir, src))
            } else {
              const rel = posix.normalize(src).replace(/^\.\/|\/$/g, '')
              if (ignored(rel)) throw new Error(`${where}: ${src} is excluded by .dockerignore`)
              from = join(context, rel)
            }
            const st = await stat(from).catch(() => undefined)
            if (st === undefined) throw new Error(`${where}: ${src} does not exist`)
            const target = inRoot(intoDir && !st.isDirectory() ? posix.join(dest, basename(src)) : dest)
            await mkdir(st.isDirectory() ? target : dirname(target), { recursive: true })
            await cp(from, target, {
              recursive: true,
              filter: (p) => fromStage !== undefined || !ignored(relative(context, p).split('\\').join('/')) || p === from,
            })
            if (step.flags['chown'] !== undefined) {
              const [u, g] = step.flags['chown'].split(':').map(Number)
              await run('chown', ['-R', `${u ?? 0}:${g ?? u ?? 0}`, target])
            }
          }
          break
        }
        case 'RUN': {
          if (step.args.startsWith('[')) throw new Error(`${where}: exec-form RUN is not replayed`)
          for (const part of step.args.split('&&').map((s) => s.trim())) {
            const words = part.split(/\s+/)
            const [prog, ...rest] = words
            if (prog === 'npm') {
              // `env -u NODE_OPTIONS`: tap's process tracking adds itself to every child it spawns.
              const r = await run('env', ['-u', 'NODE_OPTIONS', 'sh', '-c', part], {
                cwd: inRoot(workdir),
                env: cleanEnv({ ...env, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }),
                timeoutMs: 240_000,
              })
              if (r.code !== 0) throw new Error(`${where}: ${part} exited ${r.code}\n${r.stdout}\n${r.stderr}`)
              log.push(`ran: ${part}`)
            } else if (prog === 'mkdir') {
              for (const p of rest.filter((w) => !w.startsWith('-'))) await mkdir(inRoot(resolveDest(p)), { recursive: true })
              log.push(`replayed in the stage root: ${part}`)
            } else if (prog === 'chown') {
              const [owner, ...paths] = rest.filter((w) => !w.startsWith('-'))
              const [u, g] = (owner as string).split(':').map(Number)
              for (const p of paths) await chown(inRoot(resolveDest(p)), u ?? 0, g ?? u ?? 0)
              log.push(`replayed in the stage root: ${part}`)
            } else {
              throw new Error(`${where}: the replay does not know how to run ${JSON.stringify(part)}; teach test/e2e/docker.test.ts`)
            }
          }
          break
        }
        case 'USER':
          user = step.args
          break
        case 'EXPOSE':
          expose.push(...step.args.split(/\s+/).map((p) => Number(p.replace(/\/tcp$/, ''))))
          break
        case 'VOLUME':
          volumes.push(...(step.args.startsWith('[') ? jsonArray(step.args) : step.args.split(/\s+/)))
          break
        case 'ENTRYPOINT':
          entrypoint = jsonArray(step.args)
          break
        case 'CMD':
          cmd = jsonArray(step.args)
          break
        case 'LABEL':
        case 'ARG':
        case 'STOPSIGNAL':
          break
        default:
          throw new Error(`${where}: the replay does not know ${step.op}`)
      }
    }
    log.push(`stage ${stage.name}: ${Math.round((Date.now() - started) / 1000)} s`)
    return { rootfs, workdir, env, ...(user !== undefined ? { user } : {}), entrypoint, cmd, expose, volumes, log }
  }
  for (const stage of stages) {
    const pending = replayStage(stage)
    pending.catch(() => undefined) // reported where it is awaited, below
    done.set(stage.name, pending)
  }
  const result = new Map<string, Replayed>()
  for (const [name, pending] of done) result.set(name, await pending)
  return result
}

/** Bare package names that dist/ imports (static and dynamic), Node built-ins left out. */
async function importedPackages(dist: string): Promise<Set<string>> {
  const names = new Set<string>()
  const builtins = new Set(builtinModules)
  async function walk(dir: string): Promise<void> {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.name.endsWith('.js')) {
        const text = await readFile(p, 'utf8')
        for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)['"]([^'"]+)['"]/g)) {
          const spec = m[1] as string
          if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) continue
          const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string)
          if (!builtins.has(name)) names.add(name)
        }
      }
    }
  }
  await walk(dist)
  return names
}

// ------------------------------------------------------------ the test

t.test('the Dockerfile, replayed in a clean copy, builds an image that serves', { timeout: 280_000 }, async (t) => {
  if (!requireTools(t, 'npm', 'setpriv', 'chown')) return
  const dockerfile = await readFile(join(REPO_ROOT, 'docker', 'Dockerfile'), 'utf8')
  const ignoreText = await readFile(join(REPO_ROOT, '.dockerignore'), 'utf8')
  const ignored = dockerignore(ignoreText)
  for (const p of ['node_modules', 'dist', 'data', '.git', 'test/e2e/x.test.ts', 'src/a.test.ts']) t.ok(ignored(p), `.dockerignore keeps ${p} out of the context`)
  for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/cli.ts', 'docker/config.yaml']) t.notOk(ignored(p), `${p} stays in the context`)

  const { stages, args } = parseDockerfile(dockerfile)
  const nodeMajor = Number(args['NODE_VERSION'])
  t.ok(nodeMajor >= 24 && nodeMajor % 2 === 0, `an LTS line of Node.js (NODE_VERSION=${args['NODE_VERSION']})`)
  t.ok(stages.length >= 2, 'multi-stage')
  for (const s of stages) t.match(s.from, /^node:\d+[-\w.]*$/, `stage ${s.name} starts from the official Node image`)
  const final = stages.at(-1) as Stage
  const runs = (s: Stage): string => s.steps.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n')
  t.notMatch(runs(final), /npm (ci|install)(?!.*--omit=dev)/, 'the runtime stage installs no dev dependencies')
  t.ok(stages.some((s) => /npm ci(?!.*--omit=dev)/.test(runs(s)) && /npm run build/.test(runs(s))), 'a build stage installs everything and builds')

  const work = await tempDir(t, 'stevedore-docker')
  await chmod(work, 0o755) // the image's user must be able to read its root filesystem
  const started = Date.now()
  const built = await replay(dockerfile, REPO_ROOT, work, ignored)
  t.comment(`replayed ${stages.length} stages in ${Math.round((Date.now() - started) / 1000)} s`)
  const image = built.get(final.name) as Replayed
  for (const s of built.values()) for (const l of s.log) t.comment(l)

  // What the image holds.
  const app = join(image.rootfs, image.workdir)
  // Not @types/node: protobufjs and @kubernetes/client-node list it among their own dependencies.
  for (const dev of ['typescript', 'tap', 'tsx', 'fast-check', 's3rver']) {
    t.notOk(await stat(join(app, 'node_modules', dev)).catch(() => undefined), `no dev dependency ${dev} in the image`)
  }
  for (const pkg of await importedPackages(join(app, 'dist'))) {
    t.ok(await stat(join(app, 'node_modules', pkg, 'package.json')).catch(() => undefined), `dist imports ${pkg}, which the image has`)
  }
  t.notOk(await stat(join(app, 'src')).catch(() => undefined), 'no sources in the runtime image')
  t.ok(await stat(join(app, 'proto', 'cri-image-v1.proto')).catch(() => undefined), 'the CRI protocol definition stevedore prepull loads')

  // The image's user: numeric (so Kubernetes' runAsNonRoot can check it) and not root.
  const user = image.user ?? '0'
  t.match(user, /^\d+(:\d+)?$/, 'USER is numeric')
  const [uid, gid] = user.split(':').map(Number) as [number, number | undefined]
  t.not(uid, 0, 'USER is not root')

  // The image's own config: port and cache folder agree with EXPOSE and VOLUME.
  const argv = [...image.entrypoint, ...image.cmd]
  const configAt = argv.indexOf('--config')
  t.ok(configAt > 0, 'CMD names its config file')
  const imageConfigPath = argv[configAt + 1] as string
  const imageConfig = loadConfig({ file: join(image.rootfs, imageConfigPath), env: {} })
  t.same(image.expose, [imageConfig.listen.port], 'EXPOSE is the port the config listens on')
  t.equal(imageConfig.listen.port, 5000)
  t.equal(imageConfig.storage.backend.kind, 'filesystem')
  const cacheRoot = imageConfig.storage.backend.kind === 'filesystem' ? imageConfig.storage.backend.root : ''
  t.equal(cacheRoot, '/var/lib/stevedore', 'the cache lives at /var/lib/stevedore')
  t.same(image.volumes, [cacheRoot], 'which is the VOLUME')
  const cacheStat = await stat(join(image.rootfs, cacheRoot))
  t.equal(cacheStat.uid, uid, 'and belongs to the image user')

  // Start it as the image would run: its user, a root filesystem it cannot
  // write (owned by root), writable only the cache volume and a /tmp.
  const tmp = join(work, 'tmp')
  await mkdir(tmp)
  await chown(tmp, uid, gid ?? uid)
  const port = await freePort()
  const doc = parseYaml(await readFile(join(image.rootfs, imageConfigPath), 'utf8')) as Record<string, unknown>
  doc['storage'] = { filesystem: { root: join(image.rootfs, cacheRoot) } } // the volume, mapped into the replayed root
  await writeFile(join(image.rootfs, imageConfigPath), stringify(doc))
  const mapped = argv.map((a) => (a.startsWith('/') && a !== '/' ? join(image.rootfs, a) : a))
  const [prog, ...progArgs] = mapped
  t.equal(prog, 'node', 'ENTRYPOINT runs node directly (no npm, no shell)')
  const logs = join(work, 'logs')
  await mkdir(logs)
  const svc = spawnService('env', ['-u', 'NODE_OPTIONS', 'setpriv', `--reuid=${uid}`, `--regid=${gid ?? uid}`, '--clear-groups', '--', process.execPath, ...progArgs], {
    cwd: app,
    env: cleanEnv({ ...image.env, HOME: tmp, TMPDIR: tmp, STEVEDORE_LISTEN: `127.0.0.1:${port}`, STEVEDORE_CONFIG: '' }),
    stdoutFile: join(logs, 'stdout'),
    stderrFile: join(logs, 'stderr'),
  })
  t.teardown(() => stopService(svc, 'SIGTERM', 5000).then(() => undefined))
  const url = `http://127.0.0.1:${port}`
  try {
    await waitReady(svc, () => httpAnswers(`${url}/v2/`, [200]), 20_000, 'the replayed image', join(logs, 'stderr'))
  } catch (err) {
    t.fail(`the image did not start: ${String(err)}\n${tailFile(join(logs, 'stdout'))}\n${tailFile(join(logs, 'stderr'))}`)
    return
  }
  const v2 = await fetch(`${url}/v2/`)
  t.equal(v2.status, 200, 'GET /v2/')
  t.equal(v2.headers.get('docker-distribution-api-version'), 'registry/2.0')
  t.same(await v2.json(), {})
  t.equal((await fetch(`${url}/healthz`)).status, 200, 'GET /healthz')
  t.equal((await fetch(`${url}/readyz`)).status, 200, 'GET /readyz')
  const status = await stopService(svc, 'SIGTERM', 10_000)
  t.equal(status.code, 0, 'stops cleanly on SIGTERM')
  t.notMatch(tailFile(join(logs, 'stderr')), /EACCES|EROFS|ERR_MODULE_NOT_FOUND/, 'no write outside the volume, no missing module')
})
