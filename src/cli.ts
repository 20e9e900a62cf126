#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { ConfigError } from './config/schema.js'
import { LayoutError } from './storage/filesystem.js'

const USAGE = `Usage: stevedore <command> [options]

Commands:
  serve   Run the mirror.
          --config FILE        YAML configuration (or STEVEDORE_CONFIG)
          --listen HOST:PORT   address to listen on (or STEVEDORE_LISTEN)
  hosts   Write containerd certs.d/<registry>/hosts.toml files that point at the mirror.
          Run "stevedore hosts --help" for its options.
  prefetch  Fetch images into a running mirror's cache before anyone pulls them.
          Run "stevedore prefetch --help" for its options.
  prepull   Pull the mirror's pre-pull list into this node's containerd, through CRI.
          Run "stevedore prepull --help" for its options.
  report    What pulls cost: top images, slow pulls, large layers, savings, size advice.
          Run "stevedore report --help" for its options.
`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'serve': {
      const { values } = parseArgs({
        args: rest,
        options: { config: { type: 'string' }, listen: { type: 'string' }, help: { type: 'boolean' } },
        strict: true,
      })
      if (values.help === true) {
        process.stdout.write(USAGE)
        return 0
      }
      const { serve } = await import('./main.js')
      const code = await serve({
        ...(values.config !== undefined ? { file: values.config } : {}),
        ...(values.listen !== undefined ? { listen: values.listen } : {}),
      })
      // Sockets of abandoned upstream transfers must not keep a stopped server alive.
      process.exit(code)
    }
    case 'hosts': {
      const { runHostsCommand } = await import('./hosts/command.js')
      return runHostsCommand(rest)
    }
    case 'prefetch': {
      const { runPrefetchCommand } = await import('./prefetch/command.js')
      return runPrefetchCommand(rest)
    }
    case 'prepull': {
      const { runPrepullCommand } = await import('./prepull/command.js')
      return runPrepullCommand(rest)
    }
    case 'report': {
      const { runReportCommand } = await import('./insights/report/command.js')
      return runReportCommand(rest)
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return command === undefined ? 2 : 0
    default:
      process.stderr.write(`stevedore: unknown command ${JSON.stringify(command)}\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    // One clear line for the operator; a stack only for what we did not foresee.
    if (err instanceof ConfigError || err instanceof LayoutError || (err instanceof TypeError && (err as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')) {
      process.stderr.write(`stevedore: ${err.message}\n`)
    } else {
      process.stderr.write(`stevedore: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    }
    process.exitCode = 1
  },
)
