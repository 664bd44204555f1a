// Benchmark, all in one run on loopback: a plain TCP socket and one raw libp2p stream between two
// processes (the references); then, on 1 FAT and 4 vendors as processes (warmed up with 64 MiB up
// and down, not measured, as the raw stream is with its first round), a 1 GiB file uploaded and
// downloaded at replicas 1 and 2 and 1,000 files of 4 KiB up and down, each transfer one
// `stordaemon` command run as a child process (its wall time, peak RSS and CPU time measured);
// the raw stream again at the end, so drift shows. Prints a table with ratios and targets, the CPU
// time per MB of the CLI and of the vendors (per copy) beside the raw stream's sender and receiver,
// and a final JSON line. Then repair (bench/repair.ts): a vendor holding a share of the file dies,
// and a download runs during repair.
// BENCH_MB sets the file size in MiB (default 1024), BENCH_FILES the small-file count (default 1000),
// BENCH_CPU_PROF=DIR runs every CLI command and daemon with node --cpu-prof, its profiles in DIR.
// BENCH_ONLY=gateway runs only `stordaemon upload` x2 and the S3 gateway's upload and download of the
// same file, and prints the gateway's ratio (for working on the gateway; no table, no targets).
//   npm run bench            BENCH_MB=64 BENCH_FILES=200 node dist/bench/index.js   (quick, about a minute)
import '../src/polyfill.ts'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, readdirSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { loadavg as osLoadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster, type Cluster } from '../src/index.ts'
import type { StorNode } from '../src/node/index.ts'
import { rawSender, sendRaw, startRawPeer, type RawPeer, type RawResult } from './raw.ts'
import { benchNodeArgs, cpuSeconds, measureTcp, runCli, type CliRun } from './transfer.ts'
import { measureRepair, type RepairResult } from './repair.ts'
import { measureGateway } from './gateway.ts'
import { floors, measureFloor, type Floor } from './floor.ts'

const MiB = 1024 * 1024
const WRITE_SIZES = [256 * 1024, 1024 * 1024]

const log = (msg: string): void => { process.stderr.write(`[bench ${(performance.now() / 1000).toFixed(1)}s] ${msg}\n`) }
const mbs = (bytes: number, seconds: number): number => bytes / 1e6 / seconds
const round = (n: number, digits = 2): number => Number(n.toFixed(digits))

function benchSize (): number {
  const text = process.env.BENCH_MB ?? '1024'
  const n = Number(text)
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < 1) throw new Error(`BENCH_MB: "${text}" is not a whole number of MiB >= 1`)
  return n
}

/** Cleanup steps, run last-in first-out, each at most once, even when an earlier one fails. */
class Cleanup {
  private readonly steps: Array<{ what: string, fn: () => Promise<void> }> = []
  private running: Promise<void> | undefined
  add (what: string, fn: () => Promise<void>): void { this.steps.push({ what, fn }) }
  async run (): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) {
        const step = this.steps.pop()!
        try {
          await withTimeout(step.fn(), 20_000, `cleanup: ${step.what}`)
        } catch (err: any) {
          log(`cleanup: ${step.what} failed: ${err.message ?? err}`)
        }
      }
    })()
    await this.running
  }
}

async function withTimeout<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what} took longer than ${ms} ms`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}

/** Writes `bytes` random bytes to `path` and returns their sha256. */
async function randomFile (path: string, bytes: number): Promise<string> {
  const h = createHash('sha256')
  const fh = await open(path, 'w')
  try {
    for (let off = 0; off < bytes; off += 16 * MiB) {
      const block = randomBytes(Math.min(16 * MiB, bytes - off))
      h.update(block)
      await fh.write(block)
    }
  } finally {
    await fh.close()
  }
  return h.digest('hex')
}

async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const part of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(part as Buffer)
  return h.digest('hex')
}

/** CPU seconds per daemon process of the cluster so far, to see where a transfer spends its time. */
function cpuSnapshot (cluster: Cluster): Map<string, number | undefined> {
  const m = new Map<string, number | undefined>([['fat', cpuSeconds(cluster.fat.child.pid)]])
  cluster.vendors.forEach((v, i) => m.set(`vendor${i}`, cpuSeconds(v.child.pid)))
  return m
}

/** CPU seconds each process used between two snapshots. */
function cpuUsed (before: Map<string, number | undefined>, after: Map<string, number | undefined>): Map<string, number> {
  return new Map([...after].map(([k, v]) => [k, (v ?? NaN) - (before.get(k) ?? NaN)]))
}

/** The 1, 5 and 15 minute load averages: the machine is shared, and wall times move with them. */
function loadavg (): string {
  return osLoadavg().map(n => n.toFixed(2)).join(' ')
}

/** Pids of this process's children still alive (Linux), for a last sweep at cleanup. */
function childPids (): number[] {
  const out: number[] = []
  let entries: string[] = []
  try { entries = readdirSync('/proc') } catch { return out }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === process.pid && fields[0] !== 'Z') out.push(Number(e))
    } catch {}
  }
  return out
}

/** Ends children that an interrupted start left behind: SIGTERM, then SIGKILL after a grace period. */
async function endChildren (): Promise<void> {
  let pids = childPids()
  if (pids.length === 0) return
  log(`cleanup: ending ${pids.length} leftover child process(es) ${pids.join(', ')}`)
  for (const pid of pids) { try { process.kill(pid, 'SIGTERM') } catch {} }
  for (let i = 0; i < 50 && pids.length > 0; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    pids = pids.filter(pid => childPids().includes(pid))
  }
  for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
}

/** The CPU figures of one big transfer, from the command's own CPU time and the daemons' deltas. */
function bigResult (total: number, run: CliRun, used: Map<string, number>, copies: number): BigResult {
  const MB = total / 1e6
  const vendors = [...used].filter(([k]) => k.startsWith('vendor')).reduce((a, [, v]) => a + v, 0)
  return {
    seconds: run.seconds,
    MBs: MB / run.seconds,
    peakRss: run.peakRss,
    cliMsPerMB: run.cpuSeconds * 1e3 / MB,
    vendorMsPerMB: vendors * 1e3 / MB / copies,
    fatMsPerMB: (used.get('fat') ?? NaN) * 1e3 / MB,
    load: loadavg()
  }
}

function cpuLine (run: CliRun, used: Map<string, number>): string {
  return `cpu cli ${run.cpuSeconds.toFixed(2)}s, ${[...used].map(([k, v]) => `${k} ${v.toFixed(2)}s`).join(', ')} (wall ${run.seconds.toFixed(1)}s); load ${loadavg()}`
}

/** One raw-stream round: wall rate and each side's CPU time per MB. */
interface RawRound extends RawResult {
  /** CPU ms per MB (10^6 bytes) of the sending process (this one) and of the receiving one. */
  senderMsPerMB: number
  receiverMsPerMB: number
}

/** The raw libp2p stream reference, measured at one point of the run. */
interface RawMeasure {
  /** The best round of each write size (by MB/s). */
  best: RawRound[]
  /** The mean CPU per MB of the rounds in 1 MiB writes (the size the product's chunks go out in). */
  senderMsPerMB: number
  receiverMsPerMB: number
}

async function measureRaw (cleanup: Cleanup, total: number, when: string): Promise<RawMeasure> {
  log(`raw (${when}): starting the receiver process`)
  const peer: RawPeer = await startRawPeer()
  cleanup.add('raw-peer process', async () => { await peer.stop() })
  const signal = AbortSignal.timeout(Math.max(120, total / MiB) * 1000)
  const node: StorNode = await rawSender(peer.addr, signal)
  cleanup.add('raw sender node', async () => { await node.stop() })
  try {
    // a short warm-up, not reported: connection, JIT
    await sendRaw(node, peer.addr, Math.min(16 * MiB, total), WRITE_SIZES[0], signal)
    // two rounds in opposite orders, the best of each write size kept: the machine may be busy
    const best = new Map<number, RawRound>()
    const cpuRounds: RawRound[] = []
    for (const order of [WRITE_SIZES, [...WRITE_SIZES].reverse()]) {
      for (const w of order) {
        const sender0 = process.cpuUsage()
        const receiver0 = cpuSeconds(peer.child.pid) ?? NaN
        const r = await sendRaw(node, peer.addr, total, w, signal)
        const sender = process.cpuUsage(sender0)
        const receiver = (cpuSeconds(peer.child.pid) ?? NaN) - receiver0
        const round: RawRound = { ...r, senderMsPerMB: (sender.user + sender.system) / 1e3 / (total / 1e6), receiverMsPerMB: receiver * 1e3 / (total / 1e6) }
        log(`raw (${when}): ${total / MiB} MiB in ${w / 1024} KiB writes: ${r.seconds.toFixed(2)} s, ${r.MBs.toFixed(1)} MB/s (receiver saw ${r.receiverMBs.toFixed(1)}), cpu sender ${round.senderMsPerMB.toFixed(2)} ms/MB, receiver ${round.receiverMsPerMB.toFixed(2)} ms/MB, at most ${(r.maxQueued / MiB).toFixed(2)} MiB queued, ${r.drains} drain waits, sender rss at most ${(r.maxRss / MiB).toFixed(0)} MiB; load ${loadavg()}`)
        if (r.MBs > (best.get(w)?.MBs ?? 0)) best.set(w, round)
        if (w === MiB) cpuRounds.push(round)
      }
    }
    const mean = (f: (r: RawRound) => number): number => cpuRounds.reduce((a, r) => a + f(r), 0) / cpuRounds.length
    return { best: WRITE_SIZES.map(w => best.get(w) as RawRound), senderMsPerMB: mean(r => r.senderMsPerMB), receiverMsPerMB: mean(r => r.receiverMsPerMB) }
  } catch (err: any) {
    const e = peer.stderr()
    if (e !== '') log(`raw-peer stderr:\n${e.slice(-4000)}`)
    throw err
  } finally {
    await Promise.resolve(node.stop()).catch(() => {})
    await peer.stop().catch(() => {})
  }
}

interface CommandResult { seconds: number, MBs: number, peakRss: number }
/** A big transfer: the command's wall time and memory, and CPU per MB of the command and of the vendors. */
interface BigResult extends CommandResult {
  /** CPU ms per MB (10^6 bytes) of the CLI process, start-up included. */
  cliMsPerMB: number
  /** CPU ms per MB of all vendors together, divided by the copies stored or served (replicas for upload, 1 for download). */
  vendorMsPerMB: number
  fatMsPerMB: number
  load: string
}
interface Transfer {
  upload: Map<number, BigResult>
  download: Map<number, BigResult>
  smallUp: CommandResult
  smallDown: CommandResult
  files: number
  /** CPU seconds of an upload and a download of one byte: what a command costs whatever its size (start-up, connections, the FAT's rounds) */
  fixedCpu: { upload: number, download: number }
  /** the same file through the S3 gateway (SDK multipart upload, GetObject), replicas 2 */
  gateway?: { up: CommandResult, down: CommandResult, cpu: GatewayCpu }
}

/**
 * Where the CPU of the upload x2 goes, through the gateway and through the CLI, in ms per MB: all
 * processes run on the same cores, so the ratio of the totals predicts the ratio of the speeds;
 * `bound` is that ratio if the gateway spent nothing beyond the CLI's own work but S3's MD5 (the
 * ETag) and the signed payload's SHA-256, with the SDK's CPU as measured.
 */
interface GatewayCpu { gateway: number, sdk: number, cluster: number, cliPath: number, predicted: number, bound: number }

function gatewayCpu (total: number, g: { upCpuSeconds: number, upClientCpuSeconds: number, upClusterCpuSeconds: number }, up2: BigResult, floor: Floor): GatewayCpu {
  const per = (s: number): number => s * 1e3 / (total / 1e6)
  const gateway = per(g.upCpuSeconds)
  const sdk = per(g.upClientCpuSeconds)
  const cluster = per(g.upClusterCpuSeconds)
  const cliPath = up2.cliMsPerMB + up2.vendorMsPerMB * 2 + up2.fatMsPerMB
  const predicted = cliPath / (gateway + sdk + cluster)
  const bound = cliPath / (cliPath + floor.md5 + floor.sha256 + sdk)
  return { gateway, sdk, cluster, cliPath, predicted, bound }
}

function gatewayCpuLine (c: GatewayCpu): string {
  return `CPU per MB: gateway ${c.gateway.toFixed(2)} + SDK ${c.sdk.toFixed(2)} + FAT and vendors ${c.cluster.toFixed(2)} ms, against ${c.cliPath.toFixed(2)} for the CLI's upload x2 with its FAT and vendors: predicts ${c.predicted.toFixed(2)}; at best ${c.bound.toFixed(2)} if the gateway added only MD5 and SHA-256 to the CLI's work`
}

/** BENCH_ONLY=gateway: only the upload x2 and the gateway, the rest left out. */
function gatewayOnly (): boolean {
  const only = process.env.BENCH_ONLY
  if (only != null && only !== 'gateway') throw new Error(`BENCH_ONLY: "${only}" is not a part the benchmark can run alone (only "gateway")`)
  return only === 'gateway'
}

function benchFiles (): number {
  const text = process.env.BENCH_FILES ?? '1000'
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) throw new Error(`BENCH_FILES: "${text}" is not a whole number >= 1`)
  return Number(text)
}

/** One CLI command, timed, with its peak RSS; fails the run on a non-zero exit. */
async function command (what: string, args: string[], timeoutMs: number): Promise<{ out: any, run: CliRun }> {
  const run = await runCli(args, timeoutMs)
  if (run.code !== 0) throw new Error(`${what}: exit ${run.code}: ${run.stderr.slice(-2000)}`)
  return { out: JSON.parse(run.stdout), run }
}

/**
 * 1 FAT and 4 vendors as processes; each transfer is one `stordaemon` command as a child process
 * (so its own wall time and peak RSS are measured): the big file up and down at replicas 1 and 2,
 * then `files` files of 4 KiB up in one command and down in one command.
 */
async function measureCluster (cleanup: Cleanup, dir: string, total: number, files: number, floor: Floor): Promise<Transfer> {
  const deviceSize = `${Math.max(1024, Math.ceil((2 * total) / MiB) + 256)}MiB`
  log(`cluster: starting 1 FAT and 4 vendors (1 device of ${deviceSize} each) under ${dir}`)
  let cluster: Cluster | undefined
  cleanup.add('cluster processes', async () => { await cluster?.stop() })
  cluster = await startCluster({ dir: join(dir, 'cluster'), vendors: 4, devicesPerVendor: 1, deviceSize, nodeArgs: benchNodeArgs() })
  const c = cluster
  const user = ['--bootstrap', c.bootstrap, '--data-dir', join(dir, 'user'), '--json']
  const limit = Math.max(300, (total / MiB) * 4) * 1000
  const result: Transfer = { upload: new Map(), download: new Map(), smallUp: { seconds: 0, MBs: 0, peakRss: 0 }, smallDown: { seconds: 0, MBs: 0, peakRss: 0 }, files, fixedCpu: { upload: NaN, download: NaN } }
  try {
    const src = join(dir, 'input.bin')
    log(`cluster: writing ${total / MiB} MiB of random bytes to ${src}`)
    const srcHash = await randomFile(src, total)
    // the daemons warmed up first, as the raw stream's peer is by its warm-up round: a vendor's
    // first transfer fills its buffer pool from fresh memory and compiles its hot paths (at 512 MiB,
    // 5.2 ms/MB and 88 page faults per MB, against 2.9 and 4-8 from the second transfer on); real
    // vendors are long-running daemons
    const warm = join(dir, 'warm-up.bin')
    await writeFile(warm, randomBytes(Math.min(total, 64 * MiB)))
    for (const replicas of [1, 2]) {
      const up = await command('warm-up upload', ['upload', warm, ...user, '--replicas', String(replicas)], limit)
      await command('warm-up download', ['download', up.out.fileId, join(dir, 'warm-up.out'), ...user], limit)
      await command('release', ['release', up.out.fileId, ...user], 60_000)
      await rm(join(dir, 'warm-up.out'), { force: true })
    }
    await rm(warm, { force: true })
    log('cluster: warmed up (64 MiB up and down at replicas 1 and 2, not measured)')
    // what a command costs whatever its size, run twice (the first warms the FAT and vendors up)
    const tiny = join(dir, 'one-byte.bin')
    await writeFile(tiny, Buffer.from([1]))
    for (let i = 0; i < 2; i++) {
      const up = await command('upload of 1 byte', ['upload', tiny, ...user], limit)
      const down = await command('download of 1 byte', ['download', up.out.fileId, join(dir, 'one-byte.out'), ...user], limit)
      await command('release', ['release', up.out.fileId, ...user], 60_000)
      await rm(join(dir, 'one-byte.out'), { force: true })
      result.fixedCpu = { upload: up.run.cpuSeconds, download: down.run.cpuSeconds }
    }
    log(`fixed cost of a command: upload of 1 byte ${result.fixedCpu.upload.toFixed(2)} s CPU, download ${result.fixedCpu.download.toFixed(2)} s`)
    const only = gatewayOnly()
    for (const replicas of only ? [2] : [1, 2]) {
      let cpu = cpuSnapshot(c)
      const up = await command(`upload x${replicas}`, ['upload', src, ...user, '--replicas', String(replicas)], limit)
      let used = cpuUsed(cpu, cpuSnapshot(c))
      result.upload.set(replicas, bigResult(total, up.run, used, replicas))
      log(`upload x${replicas}: ${up.out.chunks} chunks in ${up.run.seconds.toFixed(2)} s (whole command), ${mbs(total, up.run.seconds).toFixed(1)} MB/s, peak RSS ${(up.run.peakRss / MiB).toFixed(0)} MiB; ${cpuLine(up.run, used)}`)
      if (only) {
        await command('release', ['release', up.out.fileId, ...user], 60_000)
        continue
      }
      const out = join(dir, `output-${replicas}.bin`)
      cpu = cpuSnapshot(c)
      const down = await command(`download x${replicas}`, ['download', up.out.fileId, out, ...user], limit)
      used = cpuUsed(cpu, cpuSnapshot(c))
      result.download.set(replicas, bigResult(total, down.run, used, 1))
      const per = new Map<string, number>()
      for (const s of down.out.sources as Array<{ vendor: string }>) per.set(s.vendor.slice(-6), (per.get(s.vendor.slice(-6)) ?? 0) + 1)
      log(`download x${replicas}: ${down.out.chunks} chunks in ${down.run.seconds.toFixed(2)} s, ${mbs(total, down.run.seconds).toFixed(1)} MB/s, peak RSS ${(down.run.peakRss / MiB).toFixed(0)} MiB, ${down.out.fallbacks} fallbacks, ${down.out.duplicates} tail re-asks, per vendor ${JSON.stringify(Object.fromEntries(per))}; ${cpuLine(down.run, used)}`)
      const outHash = await sha256File(out)
      if (outHash !== srcHash) throw new Error(`download x${replicas}: sha256 ${outHash} does not match the uploaded file's ${srcHash}`)
      await rm(out, { force: true })
      await command('release', ['release', up.out.fileId, ...user], 60_000)
    }
    const g = await measureGateway(c, dir, src, total, srcHash, 2)
    const gcpu = gatewayCpu(total, g, result.upload.get(2) as BigResult, floor)
    result.gateway = { up: { seconds: g.upSeconds, MBs: mbs(total, g.upSeconds), peakRss: g.upPeakRss }, down: { seconds: g.downSeconds, MBs: mbs(total, g.downSeconds), peakRss: g.downPeakRss }, cpu: gcpu }
    log(`gateway x2: SDK upload ${g.upSeconds.toFixed(2)} s (${result.gateway.up.MBs.toFixed(1)} MB/s, gateway cpu ${g.upCpuSeconds.toFixed(2)} s, this process (the SDK) ${g.upClientCpuSeconds.toFixed(2)} s), GetObject ${g.downSeconds.toFixed(2)} s (${result.gateway.down.MBs.toFixed(1)} MB/s); gateway peak RSS ${(g.upPeakRss / MiB).toFixed(0)} MiB after the upload, ${(g.downPeakRss / MiB).toFixed(0)} MiB after the download`)
    log(`gateway x2: ${gatewayCpuLine(gcpu)}`)
    if (only) {
      log(`gateway x2: SDK upload ${(result.gateway.up.MBs / (result.upload.get(2) as BigResult).MBs).toFixed(2)} of upload x2 in this run`)
      return result
    }

    const smallDir = join(dir, 'small')
    await mkdir(smallDir, { recursive: true })
    log(`small files: writing ${files} files of 4 KiB`)
    for (let i = 0; i < files; i++) await writeFile(join(smallDir, `f${String(i).padStart(5, '0')}`), randomBytes(4096))
    const up = await command('small upload', ['upload', smallDir, ...user], limit)
    result.smallUp = { seconds: up.run.seconds, MBs: mbs(files * 4096, up.run.seconds), peakRss: up.run.peakRss }
    log(`small files: ${files} up in ${up.run.seconds.toFixed(2)} s (${(files / up.run.seconds).toFixed(0)} files/s), replicas 2`)
    const outDir = join(dir, 'small-out')
    const down = await command('small download', ['download', ...up.out.files.map((f: any) => f.fileId), outDir, ...user], limit)
    result.smallDown = { seconds: down.run.seconds, MBs: mbs(files * 4096, down.run.seconds), peakRss: down.run.peakRss }
    log(`small files: ${files} down in ${down.run.seconds.toFixed(2)} s (${(files / down.run.seconds).toFixed(0)} files/s)`)
    for (let i = 0; i < files; i += Math.max(1, Math.floor(files / 50))) {
      const name = `f${String(i).padStart(5, '0')}`
      if (await sha256File(join(smallDir, name)) !== await sha256File(join(outDir, name))) throw new Error(`small files: ${name} differs`)
    }
    return result
  } catch (err) {
    for (const p of [c.fat, ...c.vendors]) {
      const e = p.stderr()
      if (e !== '') log(`${p.role} ${p.peerId.slice(-8)} stderr:\n${e.slice(-3000)}`)
    }
    throw err
  }
}

function report (sizeMiB: number, rawBefore: RawMeasure, rawAfter: RawMeasure, tcpMBs: number, t: Transfer, repair: RepairResult, floor: Floor): void {
  const raw = [...rawBefore.best, ...rawAfter.best]
  const best = raw.reduce((a, b) => (b.MBs > a.MBs ? b : a))
  const rawMBs = best.MBs
  // the CPU reference: the lower of the two measurements, before and after the cluster part (CPU
  // per byte rises with the machine's load: the lower one is nearer the stream's own cost, and the
  // stricter reference; a mean let one busy minute flatter every ratio)
  const refSender = Math.min(rawBefore.senderMsPerMB, rawAfter.senderMsPerMB)
  const refReceiver = Math.min(rawBefore.receiverMsPerMB, rawAfter.receiverMsPerMB)
  const MB = 1e6
  type Row = [string, string, string, string]
  const ok = (met: boolean): string => met ? 'met' : 'NOT met'
  const up1 = t.upload.get(1) as BigResult
  const up2 = t.upload.get(2) as BigResult
  const down1 = t.download.get(1) as BigResult
  const down2 = t.download.get(2) as BigResult
  const rows: Row[] = [
    ['plain TCP socket, 1 MiB writes', `${tcpMBs.toFixed(1)} MB/s`, `${(rawMBs / tcpMBs).toFixed(2)} raw libp2p / TCP`, ''],
    ...rawBefore.best.map(r => [`raw libp2p stream, ${r.writeSize / 1024} KiB writes, before`, `${r.MBs.toFixed(1)} MB/s`, r === best ? '1.00 (the reference)' : `${(r.MBs / rawMBs).toFixed(2)} of raw libp2p`, ''] as Row),
    ...rawAfter.best.map(r => [`raw libp2p stream, ${r.writeSize / 1024} KiB writes, after`, `${r.MBs.toFixed(1)} MB/s`, r === best ? '1.00 (the reference)' : `${(r.MBs / rawMBs).toFixed(2)} of raw libp2p`, ''] as Row),
    ['upload x1 (one command)', `${up1.MBs.toFixed(1)} MB/s`, `${(up1.MBs / rawMBs).toFixed(2)} of raw libp2p`, `>= 0.35: ${ok(up1.MBs / rawMBs >= 0.35)}`],
    ['upload x2 (one command)', `${up2.MBs.toFixed(1)} MB/s`, `${(up2.MBs / rawMBs).toFixed(2)} of raw libp2p`, ''],
    ['download x1 (one command)', `${down1.MBs.toFixed(1)} MB/s`, `${(down1.MBs / rawMBs).toFixed(2)} of raw libp2p`, ''],
    ['download x2 (one command)', `${down2.MBs.toFixed(1)} MB/s`, `${(down2.MBs / rawMBs).toFixed(2)} of raw libp2p`, `>= 0.4: ${ok(down2.MBs / rawMBs >= 0.4)}`],
    ...(t.gateway != null
      ? [
          ['S3 gateway upload x2 (SDK multipart)', `${t.gateway.up.MBs.toFixed(1)} MB/s`, `${(t.gateway.up.MBs / up2.MBs).toFixed(2)} of upload x2`, `>= 0.7: ${ok(t.gateway.up.MBs / up2.MBs >= 0.7)}`] as Row,
          ['  its CPU per MB: gateway + SDK + cluster', `${(t.gateway.cpu.gateway + t.gateway.cpu.sdk + t.gateway.cpu.cluster).toFixed(2)} ms/MB`, `${t.gateway.cpu.gateway.toFixed(2)} + ${t.gateway.cpu.sdk.toFixed(2)} + ${t.gateway.cpu.cluster.toFixed(2)}, against ${t.gateway.cpu.cliPath.toFixed(2)} through the CLI: ratio ${t.gateway.cpu.predicted.toFixed(2)}`, `at best ${t.gateway.cpu.bound.toFixed(2)} with only MD5 + SHA-256 added`] as Row,
          ['S3 gateway GetObject x2 (SDK)', `${t.gateway.down.MBs.toFixed(1)} MB/s`, `${(t.gateway.down.MBs / down2.MBs).toFixed(2)} of download x2`, ''] as Row,
          ['peak RSS, gateway process (after up / down)', `${(t.gateway.up.peakRss / MB).toFixed(0)} / ${(t.gateway.down.peakRss / MB).toFixed(0)} MB`, 'bounded: does not grow with the file', ''] as Row
        ]
      : []),
    [`${t.files} files of 4 KiB up (one command)`, `${t.smallUp.seconds.toFixed(2)} s`, `${(t.files / t.smallUp.seconds).toFixed(0)} files/s, ${(t.smallUp.seconds / 2).toFixed(2)} of 2 s`, `< 2 s: ${ok(t.smallUp.seconds < 2)}`],
    [`${t.files} files of 4 KiB down (one command)`, `${t.smallDown.seconds.toFixed(2)} s`, `${(t.files / t.smallDown.seconds).toFixed(0)} files/s, ${(t.smallDown.seconds / 2).toFixed(2)} of 2 s`, `< 2 s: ${ok(t.smallDown.seconds < 2)}`],
    ['peak RSS, uploading process (x1 / x2)', `${(up1.peakRss / MB).toFixed(0)} / ${(up2.peakRss / MB).toFixed(0)} MB`, `${(Math.max(up1.peakRss, up2.peakRss) / MB / 300).toFixed(2)} of 300 MB`, `< 300 MB: ${ok(Math.max(up1.peakRss, up2.peakRss) < 300 * MB)}`],
    ['peak RSS, downloading process (x1 / x2)', `${(down1.peakRss / MB).toFixed(0)} / ${(down2.peakRss / MB).toFixed(0)} MB`, `${(Math.max(down1.peakRss, down2.peakRss) / MB / 300).toFixed(2)} of 300 MB`, `< 300 MB: ${ok(Math.max(down1.peakRss, down2.peakRss) < 300 * MB)}`],
    [`repair: a dead vendor's ${(repair.bytes / 2 ** 20).toFixed(0)} MiB re-replicated`, `${repair.MBs.toFixed(1)} MB/s`, `full health ${repair.seconds.toFixed(1)} s after the death was declared`, ''],
    ['download x2 while repair runs', `${repair.downloadDuringMBs.toFixed(1)} MB/s`, `${(repair.downloadDuringMBs / repair.downloadAfterMBs).toFixed(2)} of the same download after repair (${(repair.overlap * 100).toFixed(0)}% overlapped)`, `>= 0.5: ${ok(repair.downloadDuringMBs / repair.downloadAfterMBs >= 0.5)}`]
  ]
  // CPU per MB: the CLI against the raw stream's side that does its job (upload: sender,
  // download: receiver), the vendors per copy against the other side
  const ms = (n: number): string => n.toFixed(2)
  // the least each side can spend with today's design: its raw side plus the primitives it must run
  const least = floors(floor, refSender, refReceiver)
  // a 1-byte command's CPU spread over the big file: the part of the CLI's ms/MB that is not per byte
  const fixed = (upload: boolean): number => (upload ? t.fixedCpu.upload : t.fixedCpu.download) * 1e3 / (sizeMiB * MiB / MB)
  const cpuRow = (what: string, r: BigResult, upload: boolean, vendorLimit: number, cliFloor: number, vendorFloor: number): Row[] => {
    const cliRef = upload ? refSender : refReceiver
    const vendorRef = upload ? refReceiver : refSender
    const floorNote = (f: number, ref: number): string => `floor ${ms(f)} = ${(f / ref).toFixed(2)} x`
    return [
      [`${what}: CLI`, `${ms(r.cliMsPerMB)} ms/MB`, `${(r.cliMsPerMB / cliRef).toFixed(2)} x raw ${upload ? 'sender' : 'receiver'} (${ms(cliRef)}); ${floorNote(cliFloor, cliRef)}; ${ms(fixed(upload))} of it the command's fixed cost`, `<= 2.0: ${ok(r.cliMsPerMB <= 2 * cliRef)}`],
      [`${what}: vendors per copy`, `${ms(r.vendorMsPerMB)} ms/MB`, `${(r.vendorMsPerMB / vendorRef).toFixed(2)} x raw ${upload ? 'receiver' : 'sender'} (${ms(vendorRef)}); ${floorNote(vendorFloor, vendorRef)}`, `<= ${vendorLimit.toFixed(1)}: ${ok(r.vendorMsPerMB <= vendorLimit * vendorRef)}; fat ${ms(r.fatMsPerMB)} ms/MB; load ${r.load}`]
    ]
  }
  const cpuRows: Row[] = [
    ['raw stream sender, before / after', `${ms(rawBefore.senderMsPerMB)} / ${ms(rawAfter.senderMsPerMB)} ms/MB`, `lower ${ms(refSender)} (the reference)`, ''],
    ['raw stream receiver, before / after', `${ms(rawBefore.receiverMsPerMB)} / ${ms(rawAfter.receiverMsPerMB)} ms/MB`, `lower ${ms(refReceiver)} (the reference)`, ''],
    ['work a transfer adds, in this process', `${ms(floor.sha256)} / ${ms(floor.aesGcm)} / ${ms(floor.crc32)} ms/MB`, `SHA-256 / AES-256-GCM / CRC-32; file read ${ms(floor.fileRead)}, write ${ms(floor.fileWrite)}; MD5 ${ms(floor.md5)}`, 'floor = raw side + this work, nothing else'],
    ...cpuRow('upload x1', up1, true, 2, least.cliUpload, least.vendorUpload),
    ...cpuRow('upload x2', up2, true, 2.5, least.cliUpload, least.vendorUploadRelay),
    ...cpuRow('download x1', down1, false, 2, least.cliDownload, least.vendorDownload),
    ...cpuRow('download x2', down2, false, 2, least.cliDownload, least.vendorDownload)
  ]
  const table = (title: string, rs: Row[]): string[] => {
    const w = [0, 1, 2].map(i => Math.max(...rs.map(r => r[i].length)))
    return [title, ...rs.map(r => `${r[0].padEnd(w[0])}  ${r[1].padStart(w[1])}   ${r[2].padEnd(w[2])}   ${r[3]}`)]
  }
  const lines = [
    ...table(`stordaemon, ${sizeMiB} MiB file, 1 FAT + 4 vendors on loopback, separate processes (MB = 10^6 bytes; commands timed whole, start-up included)`, rows),
    '',
    ...table('CPU time (user + system) per MB; raw references in 1 MiB writes, before and after the cluster part', cpuRows)
  ]
  process.stdout.write(lines.join('\n') + '\n')
  const r3 = (n: number): number => round(n, 3)
  const cpuJson = (r: BigResult, upload: boolean): object => ({
    cliMsPerMB: r3(r.cliMsPerMB),
    cliRatio: r3(r.cliMsPerMB / (upload ? refSender : refReceiver)),
    vendorMsPerMB: r3(r.vendorMsPerMB),
    vendorRatio: r3(r.vendorMsPerMB / (upload ? refReceiver : refSender))
  })
  process.stdout.write(JSON.stringify({
    sizeMiB,
    tcpMBs: round(tcpMBs, 1),
    rawMBs: round(rawMBs, 1),
    rawSenderMsPerMB: [r3(rawBefore.senderMsPerMB), r3(rawAfter.senderMsPerMB)],
    rawReceiverMsPerMB: [r3(rawBefore.receiverMsPerMB), r3(rawAfter.receiverMsPerMB)],
    upload1MBs: round(up1.MBs, 1),
    upload2MBs: round(up2.MBs, 1),
    download1MBs: round(down1.MBs, 1),
    download2MBs: round(down2.MBs, 1),
    upload1Ratio: r3(up1.MBs / rawMBs),
    upload2Ratio: r3(up2.MBs / rawMBs),
    download1Ratio: r3(down1.MBs / rawMBs),
    download2Ratio: r3(down2.MBs / rawMBs),
    cpu: { upload1: cpuJson(up1, true), upload2: cpuJson(up2, true), download1: cpuJson(down1, false), download2: cpuJson(down2, false) },
    fixedCpuSeconds: { upload: round(t.fixedCpu.upload, 3), download: round(t.fixedCpu.download, 3) },
    floorMsPerMB: { sha256: r3(floor.sha256), md5: r3(floor.md5), aesGcm: r3(floor.aesGcm), crc32: r3(floor.crc32), fileRead: r3(floor.fileRead), fileWrite: r3(floor.fileWrite) },
    floorRatio: { cliUpload: r3(least.cliUpload / refSender), cliDownload: r3(least.cliDownload / refReceiver), vendorUpload: r3(least.vendorUpload / refReceiver), vendorUploadRelay: r3(least.vendorUploadRelay / refReceiver), vendorDownload: r3(least.vendorDownload / refSender) },
    rawToTcp: r3(rawMBs / tcpMBs),
    files: t.files,
    smallUpSeconds: round(t.smallUp.seconds, 2),
    smallDownSeconds: round(t.smallDown.seconds, 2),
    uploadPeakRssMB: round(Math.max(up1.peakRss, up2.peakRss) / MB, 0),
    downloadPeakRssMB: round(Math.max(down1.peakRss, down2.peakRss) / MB, 0),
    repairMB: round(repair.bytes / MB, 1),
    repairMBs: round(repair.MBs, 1),
    repairSeconds: round(repair.seconds, 1),
    downloadDuringRepairMBs: round(repair.downloadDuringMBs, 1),
    downloadAfterRepairMBs: round(repair.downloadAfterMBs, 1),
    downloadDuringRepairRatio: r3(repair.downloadDuringMBs / repair.downloadAfterMBs),
    ...(t.gateway != null ? { gatewayUploadMBs: round(t.gateway.up.MBs, 1), gatewayUploadRatio: r3(t.gateway.up.MBs / up2.MBs), gatewayCpuRatio: r3(t.gateway.cpu.predicted), gatewayBestRatio: r3(t.gateway.cpu.bound), gatewayDownloadMBs: round(t.gateway.down.MBs, 1), gatewayPeakRssMB: round(t.gateway.down.peakRss / MB, 0) } : {})
  }) + '\n')
}

async function main (): Promise<number> {
  const cleanup = new Cleanup()
  let failed = false
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: cleaning up`)
    cleanup.run().finally(() => process.exit(1))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  // say where a warning comes from (e.g. MaxListenersExceededWarning) without needing --trace-warnings
  process.on('warning', w => { if (w.name !== 'DeprecationWarning') log(`warning from: ${w.stack?.split('\n').slice(1, 12).join(' <- ').replace(/\s+/g, ' ')}`) })
  const fatal = (err: any): void => {
    log(`fatal: ${err?.stack ?? err}`)
    cleanup.run().finally(() => process.exit(1))
  }
  process.on('uncaughtException', fatal)
  process.on('unhandledRejection', fatal)

  // registered first, so it runs last: whatever child a failed start left running
  cleanup.add('leftover child processes', endChildren)
  try {
    const sizeMiB = benchSize()
    const total = sizeMiB * MiB
    // the whole run may not take longer than this; then it fails and cleans up
    const limitS = Math.max(900, sizeMiB * 15)
    // kept referenced: should everything else stall with no handle left, this still ends the run as a failure
    setTimeout(() => { fatal(new Error(`the benchmark took longer than ${limitS} s`)) }, limitS * 1000)

    const dir = await mkdtemp(join(tmpdir(), 'stor-bench-'))
    // children go first, so none writes into the folder while it is removed
    cleanup.add(`temp folder ${dir}`, async () => { await endChildren(); await rm(dir, { recursive: true, force: true }) })

    const files = benchFiles()
    const floor = measureFloor(dir, total)
    log(`floor: CPU ms/MB in this process: SHA-256 ${floor.sha256.toFixed(3)}, MD5 ${floor.md5.toFixed(3)}, AES-256-GCM ${floor.aesGcm.toFixed(3)}, CRC-32 ${floor.crc32.toFixed(3)}, file write ${floor.fileWrite.toFixed(3)}, file read ${floor.fileRead.toFixed(3)}`)
    if (gatewayOnly()) {
      await measureCluster(cleanup, dir, total, files, floor)
      return 0
    }
    log(`tcp: ${sizeMiB} MiB over one plain socket`)
    const tcpMBs = await measureTcp(total)
    log(`tcp: ${tcpMBs.toFixed(1)} MB/s`)
    const rawBefore = await measureRaw(cleanup, total, 'before')
    const transfer = await measureCluster(cleanup, dir, total, files, floor)
    // the reference again, so a machine that got busier or quieter meanwhile shows
    const rawAfter = await measureRaw(cleanup, total, 'after')
    // on the input file measureCluster wrote
    const repair = await measureRepair(cleanup, dir, total, log)
    report(sizeMiB, rawBefore, rawAfter, tcpMBs, transfer, repair, floor)
  } catch (err: any) {
    failed = true
    log(`FAILED: ${err?.stack ?? err}`)
  } finally {
    await cleanup.run()
  }
  return failed ? 1 : 0
}

main().then(code => process.exit(code), err => {
  process.stderr.write(`bench: ${err?.stack ?? err}\n`)
  process.exit(1)
})
