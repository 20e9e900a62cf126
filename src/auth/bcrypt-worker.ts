// The bcrypt comparisons of client authentication, off the main thread: one
// costs milliseconds of CPU (tens at the usual cost factors), which the event
// loop serving every node's pulls must not spend.
import { parentPort } from 'node:worker_threads'
import bcrypt from 'bcryptjs'

export interface CompareRequest {
  readonly id: number
  readonly password: string
  readonly hash: string
}

export interface CompareAnswer {
  readonly id: number
  readonly match: boolean
}

parentPort?.on('message', (req: CompareRequest) => {
  let match = false
  try {
    match = bcrypt.compareSync(req.password, req.hash)
  } catch {
    // A hash bcryptjs cannot read matches nothing.
  }
  parentPort?.postMessage({ id: req.id, match } satisfies CompareAnswer)
})
