#!/usr/bin/env node
import '../src/polyfill.ts'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { Command, Option } from 'commander'
import { openClient, startDaemon, drainVendor, parseHighWater, runDemo, parseSize, parseDuration, formatSize, exportKeys, importKeys, StorError, InvalidArgumentError, type Client } from '../src/index.ts'
import { parseDeviceSpec } from '../src/store/devices.ts'
import { progressBar } from './progress.ts'
import { expandPaths } from './paths.ts'

const collect = (value: string, prev: string[] = []): string[] => [...prev, value]
const defaultDataDir = join(homedir(), '.stordaemon')

function fail (err: any): never {
  const message = err instanceof StorError ? err.message : `${err?.message ?? err}`
  process.stderr.write(`stordaemon: ${message}\n`)
  if (process.env.DEBUG != null && err?.stack != null) process.stderr.write(`${err.stack}\n`)
  process.exit(1)
}

function print (json: boolean, value: object, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human()}\n`)
}

async function withClient<T> (opts: { bootstrap?: string[], dataDir?: string }, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = await openClient({ dataDir: opts.dataDir ?? defaultDataDir, bootstrap: opts.bootstrap ?? [] })
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

const program = new Command('stordaemon')
  .description('Peer-to-peer storage: run a FAT server or a vendor, or store and fetch files as a user.')
  .enablePositionalOptions()
  .addOption(new Option('--role <role>', 'run a daemon').choices(['fat', 'vendor']))
  .option('--data-dir <dir>', 'where the daemon keeps its identity and tables')
  .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect)
  .option('--bootstrap <multiaddr>', 'a FAT server to join, with /p2p/ (repeatable)', collect)
  .option('--device <path[:size]>', 'vendor: a directory to offer, with an optional quota like 20GiB (repeatable)', collect)
  .option('--lease <duration>', 'fat: how long an uncommitted allocation stays locked', '10m')
  .option('--heartbeat <duration>', 'fat: how often vendors report', '2s')
  .option('--join-secret <secret>', 'fat: replicas prove they know it to join the replica set (default: $STOR_JOIN_SECRET)')
  .option('--high-water <pct|size>', 'vendor: above this share of its capacity (or size) it moves chunks elsewhere', '90%')
  .option('--scrub-rate <size>', 'vendor: bytes per second the background scrub reads at most', '8MiB')
  .option('--scrub-interval <duration>', 'vendor: time between full scrubs of every stored piece', '24h')
  .action(async (opts) => {
    if (opts.role == null) { program.help(); return }
    if (opts.dataDir == null) throw new InvalidArgumentError('--data-dir: a daemon needs a data directory for its identity and tables')
    const daemon = await startDaemon({
      role: opts.role,
      dataDir: resolve(opts.dataDir),
      listen: opts.listen ?? [],
      bootstrap: opts.bootstrap ?? [],
      devices: (opts.device ?? []).map(parseDeviceSpec),
      leaseMs: parseDuration(opts.lease, '--lease'),
      heartbeatMs: parseDuration(opts.heartbeat, '--heartbeat'),
      joinSecret: opts.joinSecret ?? process.env.STOR_JOIN_SECRET,
      highWater: parseHighWater(opts.highWater),
      scrubRate: parseSize(opts.scrubRate, '--scrub-rate'),
      scrubIntervalMs: parseDuration(opts.scrubInterval, '--scrub-interval'),
      onWarning: m => { process.stderr.write(`stordaemon: warning: ${m}\n`) }
    })
    process.stdout.write(`peer ${daemon.peerId}\n${daemon.addrs.map(a => `listen ${a}\n`).join('')}ready\n`)
    // one peer's bad luck must not take the daemon down for everyone else: log it and go on
    const survive = (err: any): void => { process.stderr.write(`stordaemon: error: ${err?.stack ?? err}\n`) }
    process.on('unhandledRejection', survive)
    process.on('uncaughtException', survive)
    let stopping = false
    const stop = (): void => {
      if (stopping) return
      stopping = true
      daemon.stop().then(() => process.exit(0), fail)
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })

const userOpts = (c: Command): Command => c
  .option('--bootstrap <multiaddr>', 'a FAT server, with /p2p/ (repeatable)', collect)
  .option('--data-dir <dir>', 'the user identity and keys', defaultDataDir)
  .option('--json', 'print one JSON object')

userOpts(program.command('upload <FILE...>').description('store files (a folder: every file in it) under one allocation; prints each file\'s id'))
  .option('--replicas <n>', 'copies of each chunk on distinct vendors', '2')
  .option('--chunk-size <size>', 'plaintext bytes per chunk', '4MiB')
  .action(async (files: string[], opts) => {
    const replicas = Number(opts.replicas)
    if (!/^\d+$/.test(opts.replicas)) throw new StorError(`--replicas: "${opts.replicas}" is not a whole number`, 'ERR_INVALID_ARGUMENT')
    const chunkSize = parseSize(opts.chunkSize, '--chunk-size')
    const bar = progressBar(opts.json !== true)
    const { paths, names } = await expandPaths(files)
    const r = await withClient(opts, async c => await c.uploadMany(paths, { replicas, chunkSize, names, onProgress: bar.update }))
    bar.done()
    if (r.length === 1 && files.length === 1 && paths[0] === resolve(files[0])) print(opts.json === true, r[0], () => r[0].fileId)
    else print(opts.json === true, { files: r }, () => r.map(f => `${f.fileId}  ${f.path}`).join('\n'))
  })

userOpts(program.command('download <ID> <OUT>').description('fetch a file by id into OUT'))
  .option('--release', 'release the file from the network once fetched')
  .action(async (id: string, out: string, opts) => {
    const bar = progressBar(opts.json !== true)
    const r = await withClient(opts, async c => await c.download(id, resolve(out), { release: opts.release === true, onProgress: bar.update }))
    bar.done()
    print(opts.json === true, { ...r, out: resolve(out) }, () => `${resolve(out)}: ${formatSize(r.size)} in ${r.chunks} chunks${r.released ? ', released' : ''}`)
  })

userOpts(program.command('ls').description('list your files'))
  .action(async (opts) => {
    const files = await withClient(opts, async c => await c.list())
    print(opts.json === true, { files }, () => files.length === 0
      ? 'no files'
      : files.map(f => `${f.fileId}  ${formatSize(f.size).padStart(10)}  x${f.replicas}  ${new Date(f.created).toISOString()}  ${f.name}`).join('\n'))
  })

userOpts(program.command('release <ID>').description('erase a file from the network and free its space'))
  .action(async (id: string, opts) => {
    const r = await withClient(opts, async c => await c.release(id))
    print(opts.json === true, r, () => `released ${r.fileId}: ${formatSize(r.freed)} freed`)
  })

userOpts(program.command('status').description('the FAT server\'s view of the network'))
  .action(async (opts) => {
    const s = await withClient(opts, async c => await c.status())
    const agreed = new Set(s.replicas.filter(r => r.reachable).map(r => `${r.applied}/${r.digest}`)).size === 1
    print(opts.json === true, s, () => [
      `FAT ${s.fat}: ${s.files} files, ${s.allocations} open allocations; replicas ${agreed ? 'agree' : 'differ'}`,
      ...s.replicas.map(r => `replica ${r.peer} ${r.reachable ? 'up' : 'unreachable'}${r.leader ? ' (orders writes)' : ''}  term ${r.term}  position ${r.applied}  digest ${r.digest.slice(0, 12)}`),
      ...s.vendors.map(v => `vendor ${v.vendor} ${v.alive ? 'alive' : 'silent'}  capacity ${formatSize(v.capacity)}  used ${formatSize(v.used)}  locked ${formatSize(v.locked)}  available ${formatSize(v.available)}  devices ${v.devices.length}`)
    ].join('\n'))
  })

program.command('drain')
  .description('make a vendor leave: the FAT moves everything it holds to other vendors (signed with the vendor\'s identity)')
  .option('--bootstrap <multiaddr>', 'a FAT server, with /p2p/ (repeatable)', collect)
  .requiredOption('--data-dir <dir>', 'the vendor\'s data directory (its identity signs the request)')
  .option('--no-wait', 'return once the FAT accepted, without waiting until the vendor is empty')
  .option('--timeout <duration>', 'how long to wait until the vendor is empty', '1h')
  .option('--json', 'print one JSON object')
  .action(async (opts) => {
    const r = await drainVendor({ dataDir: resolve(opts.dataDir), bootstrap: opts.bootstrap ?? [], wait: opts.wait !== false, timeoutMs: parseDuration(opts.timeout, '--timeout') })
    print(opts.json === true, r, () => r.drained ? `drained ${r.vendor}: it holds nothing now` : `draining ${r.vendor}: ${formatSize(r.bytes)} to move`)
  })

const key = program.command('key').description('back up and restore a user\'s identity and keys')
key.command('export <FILE>')
  .description('write the identity and master key to FILE (keep it secret: it opens every file)')
  .option('--data-dir <dir>', 'the user identity and keys', defaultDataDir)
  .option('--json', 'print one JSON object')
  .action(async (file: string, opts) => {
    const r = await exportKeys(opts.dataDir, resolve(file))
    print(opts.json === true, { ...r, file: resolve(file) }, () => `exported identity ${r.peerId} to ${resolve(file)}`)
  })
key.command('import <FILE>')
  .description('restore an exported identity into an empty data directory')
  .option('--data-dir <dir>', 'the user identity and keys', defaultDataDir)
  .option('--json', 'print one JSON object')
  .action(async (file: string, opts) => {
    const r = await importKeys(opts.dataDir, resolve(file))
    print(opts.json === true, r, () => `imported identity ${r.peerId} into ${opts.dataDir}`)
  })

program.command('demo [FILE]')
  .description('start a local network, store FILE (or a generated one), fetch it back and compare')
  .option('--json', 'print one JSON object')
  .action(async (file: string | undefined, opts) => {
    const r = await runDemo(file != null ? resolve(file) : undefined, line => { if (opts.json !== true) process.stdout.write(`${line}\n`) })
    if (opts.json === true) process.stdout.write(`${JSON.stringify(r)}\n`)
  })

program.exitOverride(err => { process.exit(err.exitCode === 0 ? 0 : 1) })
program.configureOutput({ writeErr: s => { process.stderr.write(s.startsWith('error:') ? `stordaemon: ${s.slice(7)}` : s) } })

try {
  await program.parseAsync(process.argv)
  // a daemon keeps running; a command is done, whatever timers its libp2p node left behind
  if (program.opts().role == null) process.exit(0)
} catch (err) {
  fail(err)
}
