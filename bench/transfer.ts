// The product measured as a person runs it: the CLI as a child process against a local cluster,
// with its wall time and peak resident memory; and a plain TCP socket as a second reference.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { connect } from 'node:net'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { binPath } from '../src/cluster.ts'

const MiB = 1024 * 1024

/** Peak resident set (VmHWM) of a live process, in bytes; 0 once it is gone or off Linux. */
/** CPU seconds (user + system) a process has used so far, from /proc; undefined off Linux. */
export function cpuSeconds (pid: number | undefined): number | undefined {
  if (pid == null) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return undefined
  }
}

/** CPU seconds per daemon process of the cluster so far, to see where a transfer spends its time. */

export function peakRss (pid: number | undefined): number {
  if (pid == null) return 0
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m != null ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

export interface CliRun {
  code: number | null
  stdout: string
  stderr: string
  seconds: number
  peakRss: number
  /** CPU seconds (user + system, all threads) the command used, start-up included. */
  cpuSeconds: number
}

/** Node options for every process the benchmark starts from the bundle (e.g. --cpu-prof). */
export function benchNodeArgs (): string[] {
  const dir = process.env.BENCH_CPU_PROF
  return dir != null && dir !== '' ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []
}

/**
 * Runs the built CLI with no terminal; its peak RSS is read from /proc every 50 ms (VmHWM only
 * grows, so the last reading is the peak up to the last 50 ms); its CPU time is written by
 * cpu-at-exit.js as it exits.
 */
export async function runCli (args: string[], timeoutMs: number): Promise<CliRun> {
  const t0 = performance.now()
  const tmp = await mkdtemp(join(tmpdir(), 'stor-bench-cpu-'))
  const cpuFile = join(tmp, 'cpu')
  const atExit = join(dirname(fileURLToPath(import.meta.url)), 'cpu-at-exit.js')
  const child = spawn(process.execPath, [...benchNodeArgs(), '--import', atExit, binPath(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BENCH_CPU_FILE: cpuFile } })
  let stdout = ''
  let stderr = ''
  let peak = 0
  child.stdout.on('data', d => { stdout += d })
  child.stderr.on('data', d => { stderr += d })
  const poll = setInterval(() => { peak = Math.max(peak, peakRss(child.pid)) }, 50)
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  const code = await new Promise<number | null>((resolve, reject) => { child.on('error', reject); child.on('exit', c => { resolve(c) }) })
  clearInterval(poll)
  clearTimeout(timer)
  const seconds = (performance.now() - t0) / 1000
  const cpu = await readFile(cpuFile, 'utf8').catch(() => '')
  await rm(tmp, { recursive: true, force: true })
  const [user, system] = cpu.trim().split(' ').map(Number)
  return { code, stdout, stderr, seconds, peakRss: peak, cpuSeconds: cpu === '' ? NaN : (user + system) / 1e6 }
}

/** Sends `total` bytes over one plain TCP socket to a receiver process; MB/s from first byte to its answer. */
export async function measureTcp (total: number): Promise<number> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'tcp-peer.js')
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] })
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let p = 0
      createInterface({ input: child.stdout! }).on('line', line => {
        const [w, v] = line.split(' ')
        if (w === 'port') p = Number(v)
        if (w === 'ready') resolve(p)
      })
      child.once('exit', c => { reject(new Error(`tcp-peer exited with ${c}`)) })
    })
    let best = 0
    for (let round = 0; round < 2; round++) {
      const socket = connect(port, '127.0.0.1')
      await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
      const block = randomBytes(MiB)
      const head = Buffer.alloc(8)
      head.writeBigUInt64BE(BigInt(total), 0)
      const reply = new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = []
        socket.on('data', (d: Buffer) => parts.push(d))
        socket.on('end', () => { resolve(Buffer.concat(parts)) })
        socket.on('error', reject)
      })
      const t0 = performance.now()
      socket.write(head)
      for (let sent = 0; sent < total; sent += MiB) {
        if (!socket.write(block.subarray(0, Math.min(MiB, total - sent)))) await new Promise(resolve => socket.once('drain', resolve))
      }
      const r = await reply
      const seconds = (performance.now() - t0) / 1000
      if (Number(r.readBigUInt64BE(0)) !== total) throw new Error('tcp: receiver counted the wrong number of bytes')
      socket.destroy()
      best = Math.max(best, total / 1e6 / seconds)
    }
    return best
  } finally {
    child.kill('SIGTERM')
  }
}
