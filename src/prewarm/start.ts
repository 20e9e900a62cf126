// SCAFFOLD: replaced by the Kubernetes pre-warmer (issue 11, part 2).
import type { PrewarmDeps, Prewarmer } from './types.js'

export function startPrewarm(_deps: PrewarmDeps): Prewarmer {
  throw new Error('not implemented yet')
}
