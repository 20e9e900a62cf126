// Preloaded into a mirror process (NODE_OPTIONS=--import=<this file>) by tests
// that must prove no request reached an unhandled rejection or an uncaught
// exception: each one is reported on stderr with this marker. The monitor
// event changes nothing about how node handles the error.
process.on('uncaughtExceptionMonitor', (err, origin) => {
  process.stderr.write(`CRASH-WATCH ${origin}: ${err && err.stack ? err.stack : String(err)}\n`)
})
process.on('unhandledRejection', (reason) => {
  process.stderr.write(`CRASH-WATCH unhandledRejection: ${reason && reason.stack ? reason.stack : String(reason)}\n`)
})
// Tests check this line, so a preload that silently failed to load cannot pass for "nothing happened".
process.stderr.write('CRASH-WATCH armed\n')
