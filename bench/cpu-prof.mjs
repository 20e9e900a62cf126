// Preloaded into Stevedore by `npm run bench -- --cpu-prof DIR`
// (NODE_OPTIONS=--import=<this file>; node refuses --cpu-prof in NODE_OPTIONS):
// profiles the whole process and writes DIR/stevedore-<pid>-<time>.cpuprofile
// when it exits (after SIGTERM, as the bench stops it). Open the file in
// Chrome DevTools or speedscope.
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { join } from 'node:path'

const dir = process.env.STEVEDORE_BENCH_CPU_PROF_DIR
if (dir) {
  const session = new Session()
  session.connect()
  session.post('Profiler.enable')
  session.post('Profiler.setSamplingInterval', { interval: 500 })
  session.post('Profiler.start')
  process.on('exit', () => {
    // the in-thread session answers synchronously
    session.post('Profiler.stop', (err, res) => {
      if (!err && res) writeFileSync(join(dir, `stevedore-${process.pid}-${Date.now()}.cpuprofile`), JSON.stringify(res.profile))
    })
  })
}
