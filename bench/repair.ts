// The repair measurement of `npm run bench`: a file at replicas 2 on 4 vendors, one vendor killed
// for good; how fast the FAT brings every chunk back to two copies (MB/s re-replicated, time from
// the vendor's death being declared to full health), and what that costs a user downloading
// meanwhile (the download's speed against the same download once repair is done).
import { join } from 'node:path'
import { openClient, startCluster, type Cluster, type StatusReport } from '../src/index.ts'
import { runCli } from './transfer.ts'

const MiB = 1024 * 1024
/** Short timers, so the bench measures the copying, not the waiting: the default --repair-after is 10m. */
const FAT_ARGS = ['--heartbeat', '500ms', '--repair-after', '5s']

export interface RepairResult {
  /** bytes the dead vendor held, copied elsewhere */
  bytes: number
  /** from the death declared to every chunk at two copies */
  seconds: number
  MBs: number
  /** the download while repair ran, and the same download after */
  downloadDuringMBs: number
  downloadAfterMBs: number
  /** share of the download's time repair was running */
  overlap: number
}

interface Cleanup { add: (what: string, fn: () => Promise<void>) => void }

export async function measureRepair (cleanup: Cleanup, dir: string, total: number, log: (msg: string) => void): Promise<RepairResult> {
  const deviceSize = `${Math.max(1024, Math.ceil((2 * total) / MiB) + 256)}MiB`
  log(`repair: starting 1 FAT (${FAT_ARGS.join(' ')}) and 4 vendors`)
  let cluster: Cluster | undefined
  cleanup.add('repair cluster processes', async () => { await cluster?.stop() })
  cluster = await startCluster({ dir: join(dir, 'repair-cluster'), vendors: 4, devicesPerVendor: 1, deviceSize, fatArgs: FAT_ARGS })
  const c = cluster
  const userDir = join(dir, 'repair-user')
  const user = ['--bootstrap', c.bootstrap, '--data-dir', userDir, '--json']
  const limit = Math.max(300, (total / MiB) * 4) * 1000
  const src = join(dir, 'input.bin')
  const up = await runCli(['upload', src, ...user, '--replicas', '2'], limit)
  if (up.code !== 0) throw new Error(`repair: upload: ${up.stderr.slice(-2000)}`)
  const { fileId } = JSON.parse(up.stdout)
  // the watcher is its own identity: the CLI commands of the user keep theirs
  const watcher = await openClient({ dataDir: join(dir, 'repair-watcher'), bootstrap: [c.bootstrap] })
  cleanup.add('repair watcher', async () => { await watcher.close() })
  try {
    const status = async (): Promise<StatusReport> => await watcher.status()
    const before = await status()
    const victim = [...before.vendors].sort((a, b) => b.used - a.used)[0]
    const vendor = c.vendors.find(v => v.peerId === victim.vendor)
    if (vendor == null) throw new Error('repair: no vendor holds the file')
    log(`repair: killing vendor ${victim.vendor.slice(-8)} holding ${(victim.used / MiB).toFixed(0)} MiB of the file`)
    await vendor.kill('SIGKILL')
    const poll = async (what: string, ok: (s: StatusReport) => boolean, timeoutMs: number): Promise<StatusReport> => {
      const until = Date.now() + timeoutMs
      for (;;) {
        const s = await status()
        if (ok(s)) return s
        if (Date.now() > until) throw new Error(`repair: ${what} did not happen within ${timeoutMs / 1000} s: ${JSON.stringify(s.repair)}`)
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    }
    const dead = await poll('the vendor declared dead', s => s.vendors.find(v => v.vendor === victim.vendor)?.state === 'dead', 60_000)
    const declared = performance.now()
    const copiesBefore = dead.repair?.bytes ?? 0
    log(`repair: vendor declared dead; ${dead.repair?.under} chunks to repair; a download starts`)
    let healthyAt: number | undefined
    const health = poll('full health', s => s.repair?.under === 0, limit).then(s => { healthyAt = performance.now(); return s })
    const downStart = performance.now()
    const during = await runCli(['download', fileId, join(dir, 'repair-during.bin'), ...user, '--no-resume'], limit)
    const downEnd = performance.now()
    if (during.code !== 0) throw new Error(`repair: download during repair: ${during.stderr.slice(-2000)}`)
    const healed = await health
    const seconds = ((healthyAt as number) - declared) / 1000
    const bytes = (healed.repair?.bytes ?? 0) - copiesBefore
    const overlap = Math.max(0, Math.min(downEnd, healthyAt as number) - downStart) / (downEnd - downStart)
    const after = await runCli(['download', fileId, join(dir, 'repair-after.bin'), ...user, '--no-resume'], limit)
    if (after.code !== 0) throw new Error(`repair: download after repair: ${after.stderr.slice(-2000)}`)
    const result = { bytes, seconds, MBs: bytes / 1e6 / seconds, downloadDuringMBs: total / 1e6 / during.seconds, downloadAfterMBs: total / 1e6 / after.seconds, overlap }
    log(`repair: ${(bytes / MiB).toFixed(0)} MiB re-replicated in ${seconds.toFixed(1)} s (${result.MBs.toFixed(1)} MB/s); download ${result.downloadDuringMBs.toFixed(1)} MB/s during repair (${(overlap * 100).toFixed(0)}% of it overlapped), ${result.downloadAfterMBs.toFixed(1)} MB/s after`)
    return result
  } finally {
    await watcher.close()
    await c.stop()
  }
}
