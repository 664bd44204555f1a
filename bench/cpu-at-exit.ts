// Loaded with `node --import` into each CLI command the benchmark runs: when the process exits it
// writes the CPU time it used (user and system microseconds, all its threads) to the file named
// by BENCH_CPU_FILE. A process that has exited can no longer be read in /proc, so it tells us.
import { writeFileSync } from 'node:fs'

const file = process.env.BENCH_CPU_FILE
if (file != null && file !== '') {
  process.on('exit', () => {
    const { user, system } = process.cpuUsage()
    writeFileSync(file, `${user} ${system}\n`)
  })
}
