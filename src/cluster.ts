import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

/** The built CLI, whether this module runs from src (tests) or from dist. */
export function binPath (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return join(dir, 'dist', 'stordaemon.mjs')
}

export interface DaemonProcess {
  readonly role: string
  readonly peerId: string
  readonly addrs: string[]
  readonly dataDir: string
  /** Where it serves /metrics and /health (started with --http-listen), e.g. http://127.0.0.1:9100 */
  readonly http?: string
  readonly child: ChildProcess
  /** Everything the process wrote to stderr so far. */
  stderr: () => string
  /** Stops the process (SIGTERM, or the signal given) and waits for it to exit. */
  kill: (signal?: NodeJS.Signals) => Promise<void>
  /** Starts it again on the same data directory and port, once it has exited. */
  restart: () => Promise<DaemonProcess>
}

/** How a daemon is launched: `nodeArgs` go to node itself (e.g. `--cpu-prof`); `wrap` is a command that execs it (e.g. `ip netns exec NAME`). */
export interface Launch { nodeArgs?: string[], wrap?: string[] }

/** Starts `stordaemon` with `args` and waits for it to print its peer id, addresses and `ready`. */
export async function spawnDaemon (role: string, dataDir: string, args: string[], timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}, launch: Launch = {}): Promise<DaemonProcess> {
  await mkdir(dataDir, { recursive: true })
  const listen = args.includes('--listen') ? [] : ['--listen', '/ip4/127.0.0.1/tcp/0']
  const { child, stderr, exited } = startChild(['--role', role, '--data-dir', dataDir, ...listen, ...args], env, launch)
  let peerId = ''
  let http: string | undefined
  const addrs: string[] = []
  await awaitReady(child, exited, role, timeoutMs, stderr, (word, value) => {
    if (word === 'peer') peerId = value
    if (word === 'listen') addrs.push(value)
    if (word === 'http') http = value
  })
  return {
    role,
    peerId,
    addrs,
    dataDir,
    ...(http != null ? { http } : {}),
    child,
    stderr,
    async kill (signal = 'SIGTERM') { await stopChild(child, exited, signal) },
    async restart () {
      const port = /\/tcp\/(\d+)/.exec(addrs[0] ?? '')?.[1] ?? '0'
      const rest = args.filter((a, i) => a !== '--listen' && args[i - 1] !== '--listen')
      const host = /^\/ip4\/([\d.]+)\//.exec(addrs[0] ?? '')?.[1] ?? '127.0.0.1'
      return await spawnDaemon(role, dataDir, ['--listen', `/ip4/${host}/tcp/${port}`, ...rest], timeoutMs, env, launch)
    }
  }
}

/** Runs the CLI with `args` as a child process; its stderr is kept. */
function startChild (args: string[], env: NodeJS.ProcessEnv, launch: Launch = {}): { child: ChildProcess, stderr: () => string, exited: Promise<void> } {
  const command = [...(launch.wrap ?? []), process.execPath, ...(launch.nodeArgs ?? []), binPath(), ...args]
  const child = spawn(command[0], command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FORCE_COLOR: '0', ...env }
  })
  let err = ''
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  return { child, stderr: () => err, exited }
}

/** Sends `signal` (and SIGCONT, should it be stopped), then SIGKILL after 10 s; waits for the exit. */
async function stopChild (child: ChildProcess, exited: Promise<void>, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode != null || child.signalCode != null) return
  child.kill(signal)
  child.kill('SIGCONT')
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(t)
}

/** Waits for a child's `ready` line, handing it every line before; kills it if it exits or takes longer than `timeoutMs`. */
async function awaitReady (child: ChildProcess, exited: Promise<void>, what: string, timeoutMs: number, stderr: () => string, onLine: (word: string, value: string) => void): Promise<void> {
  const lines = createInterface({ input: child.stdout! })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${what} did not start within ${timeoutMs} ms: ${stderr()}`)) }, timeoutMs)
    lines.on('line', line => {
      const [word, value] = line.split(' ')
      if (word === 'ready') { clearTimeout(timer); resolve() } else onLine(word, value)
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`${what} exited with ${code} before it was ready: ${stderr()}`)) })
  }).catch(async e => { child.kill('SIGKILL'); await exited; throw e })
}

/** A daemon's loopback multiaddr, for --bootstrap. */
export function loopbackAddr (p: DaemonProcess): string {
  return p.addrs.find(a => a.includes('/127.0.0.1/')) ?? p.addrs[0]
}

export interface ClusterOptions {
  dir: string
  /** FAT replicas (default 1): the first founds the network, the others join through it. */
  fats?: number
  vendors?: number
  devicesPerVendor?: number
  /** e.g. 200MiB; default: the free space of the disk */
  deviceSize?: string
  fatArgs?: string[]
  vendorArgs?: string[]
  /** Extra arguments for one vendor (after vendorArgs), e.g. a smaller quota. */
  vendorArgsFor?: (vendor: number) => string[]
  /** Quota per device of one vendor, in place of deviceSize. */
  deviceSizeFor?: (vendor: number) => string | undefined
  /** Extra environment of vendor `i` (e.g. STOR_TEST_DELAY_MS to make one slow). */
  vendorEnv?: (i: number) => NodeJS.ProcessEnv
  /** Options for node itself in every process (e.g. `--cpu-prof`, as the benchmark's BENCH_CPU_PROF sets). */
  nodeArgs?: string[]
}

export interface Cluster {
  /** The first FAT replica. */
  fat: DaemonProcess
  fats: DaemonProcess[]
  vendors: DaemonProcess[]
  /** The FAT's loopback multiaddr, for --bootstrap. */
  bootstrap: string
  deviceDirs: (vendor: number) => string[]
  /** Starts vendor `i` again (after a kill) with the same data directory, devices and arguments. */
  restartVendor: (vendor: number) => Promise<DaemonProcess>
  stop: () => Promise<void>
}

/** A local network as separate processes: one FAT and `vendors` vendors with their own devices. */
export async function startCluster (opts: ClusterOptions): Promise<Cluster> {
  const nodeArgs = opts.nodeArgs ?? []
  const fat = await spawnDaemon('fat', join(opts.dir, 'fat'), opts.fatArgs ?? [], 60_000, {}, { nodeArgs })
  const bootstrap = loopbackAddr(fat)
  const fats = [fat]
  const deviceDirs = (v: number): string[] => Array.from({ length: opts.devicesPerVendor ?? 2 }, (_, d) => join(opts.dir, `vendor${v}`, `disk${d}`))
  const vendors: DaemonProcess[] = []
  const vendorArgs = (v: number): string[] => {
    const size = opts.deviceSizeFor?.(v) ?? opts.deviceSize
    const deviceArgs = deviceDirs(v).flatMap(d => ['--device', size != null ? `${d}:${size}` : d])
    return ['--bootstrap', bootstrap, ...deviceArgs, ...(opts.vendorArgs ?? []), ...(opts.vendorArgsFor?.(v) ?? [])]
  }
  try {
    for (let f = 1; f < (opts.fats ?? 1); f++) {
      fats.push(await spawnDaemon('fat', join(opts.dir, `fat${f}`), ['--bootstrap', bootstrap, ...(opts.fatArgs ?? [])], 60_000, {}, { nodeArgs }))
    }
    for (let v = 0; v < (opts.vendors ?? 3); v++) {
      await Promise.all(deviceDirs(v).map(async d => await mkdir(d, { recursive: true })))
      vendors.push(await spawnDaemon('vendor', join(opts.dir, `vendor${v}`, 'data'), vendorArgs(v), 60_000, opts.vendorEnv?.(v) ?? {}, { nodeArgs }))
    }
  } catch (err) {
    await Promise.all([...fats, ...vendors].map(async p => { await p.kill('SIGKILL') }))
    throw err
  }
  return {
    fat,
    fats,
    vendors,
    bootstrap,
    deviceDirs,
    async restartVendor (v) {
      await vendors[v].kill('SIGKILL')
      vendors[v] = await spawnDaemon('vendor', join(opts.dir, `vendor${v}`, 'data'), vendorArgs(v), 60_000, opts.vendorEnv?.(v) ?? {}, { nodeArgs })
      return vendors[v]
    },
    async stop () {
      await Promise.all([...vendors, ...fats].map(async p => { await p.kill() }))
    }
  }
}

export interface GatewayProcess {
  /** http(s)://host:port it serves S3 on */
  readonly url: string
  /** the peer id of the user it acts as */
  readonly peer: string
  /** Where it serves /metrics and /health (started with --http-listen), e.g. http://127.0.0.1:9100 */
  readonly http?: string
  readonly child: ChildProcess
  stderr: () => string
  kill: (signal?: NodeJS.Signals) => Promise<void>
}

/** Starts `stordaemon gateway` as the user of `dataDir` and waits for its address and `ready`. */
export async function spawnGateway (dataDir: string, bootstrap: string, args: string[] = [], timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}, launch: Launch = {}): Promise<GatewayProcess> {
  const listen = args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0']
  const { child, stderr, exited } = startChild(['gateway', '--data-dir', dataDir, '--bootstrap', bootstrap, ...listen, ...args], env, launch)
  let url = ''
  let peer = ''
  let http: string | undefined
  await awaitReady(child, exited, 'the gateway', timeoutMs, stderr, (word, value) => {
    if (word === 'listen') url = value
    if (word === 'peer') peer = value
    if (word === 'http') http = value
  })
  return {
    url,
    peer,
    ...(http != null ? { http } : {}),
    child,
    stderr,
    async kill (signal = 'SIGTERM') { await stopChild(child, exited, signal) }
  }
}
