import { readFileSync } from 'node:fs'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { ConfigError, DEFAULT_CONFIG_DOCUMENT, parseListen, validateConfig, type Config } from './schema.js'

export interface LoadOptions {
  /** A YAML file; falls back to STEVEDORE_CONFIG, then to the embedded default. */
  readonly file?: string
  /** `--listen HOST:PORT`; beats STEVEDORE_LISTEN, which beats the file. */
  readonly listen?: string
  readonly env?: NodeJS.ProcessEnv
}

const readSecret = (path: string): string => readFileSync(path, 'utf8')

/**
 * The configuration document, unvalidated: the YAML file named by `file`,
 * else by STEVEDORE_CONFIG, else the embedded default.
 */
export function readConfigDocument(file: string | undefined, env: NodeJS.ProcessEnv): unknown {
  const path = file ?? (env['STEVEDORE_CONFIG'] || undefined)
  if (path === undefined) return DEFAULT_CONFIG_DOCUMENT
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(path, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  try {
    return parseYaml(text) ?? {}
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : ''
    throw new ConfigError(path, `is not valid YAML${where}`)
  }
}

/**
 * Loads the configuration. Precedence: command-line flags, then environment
 * variables (STEVEDORE_LISTEN, STEVEDORE_LOG_LEVEL, STEVEDORE_PREWARM_KUBERNETES,
 * STEVEDORE_INSIGHTS_INSTANCE), then the file, then the
 * embedded defaults.
 */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  const raw = readConfigDocument(options.file, env)
  const config = validateConfig(raw, { env, readSecret })
  const listen = options.listen ?? (env['STEVEDORE_LISTEN'] || undefined)
  const logLevel = env['STEVEDORE_LOG_LEVEL'] || undefined
  const prewarm = prewarmFromEnv(env['STEVEDORE_PREWARM_KUBERNETES'])
  // Every replica reads one config file: each one's history name comes from its own environment (a pod name).
  const instance = env['STEVEDORE_INSIGHTS_INSTANCE'] || undefined
  return {
    ...config,
    ...(instance !== undefined ? { insights: { ...config.insights, instance: validateConfig({ ...DEFAULT_CONFIG_DOCUMENT, insights: { instance } }, { env }).insights.instance } } : {}),
    ...(prewarm !== undefined ? { prewarm: { ...config.prewarm, kubernetes: { ...config.prewarm.kubernetes, enabled: prewarm } } } : {}),
    ...(listen !== undefined ? { listen: parseListen(listen, options.listen !== undefined ? '--listen' : 'STEVEDORE_LISTEN') } : {}),
    ...(logLevel !== undefined ? { logLevel: validateConfig({ ...DEFAULT_CONFIG_DOCUMENT, log: { level: logLevel } }, { env }).logLevel } : {}),
  }
}

/**
 * STEVEDORE_PREWARM_KUBERNETES=true|false: the one replica that pre-warms is
 * chosen by its Deployment (k8s/components/prewarm), while every replica
 * reads the same config file.
 */
function prewarmFromEnv(value: string | undefined): boolean | undefined {
  if (value === undefined || value === '') return undefined
  if (value === 'true') return true
  if (value === 'false') return false
  throw new ConfigError('STEVEDORE_PREWARM_KUBERNETES', `must be true or false (got ${JSON.stringify(value)})`)
}
