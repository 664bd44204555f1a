// mocha's spec output, then the counts as one plain line that CI reads: "N passed, M failed".
const Mocha = require('mocha')
const { EVENT_RUN_END } = Mocha.Runner.constants

class CountingSpec extends Mocha.reporters.Spec {
  constructor (runner, options) {
    super(runner, options)
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats
      process.stdout.write(`\n${s.passes} passed, ${s.failures} failed${s.pending > 0 ? `, ${s.pending} skipped` : ''}\n`)
    })
  }
}

module.exports = CountingSpec
