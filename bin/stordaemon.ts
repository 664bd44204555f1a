#!/usr/bin/env node
import '../src/polyfill.ts'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { Command, Option } from 'commander'
import { openClient, startDaemon, drainVendor, removeReplica, parseHighWater, parseShare, runDemo, parseSize, parseDuration, formatSize, exportKeys, importKeys, startGateway, addKey, listAccessKeys, removeKey, checkFileId, StorError, InvalidArgumentError, FileChangedError, type Client, type UploadResult, type FileSummary, type StatusReport } from '../src/index.ts'
import { parseDeviceSpec } from '../src/store/devices.ts'
import { inspectQuarantine, type QuarantineReport } from '../src/store/device-files.ts'
import { progressBar } from './progress.ts'
import { expandPaths } from './paths.ts'
import { heapForTransfers } from './heap.ts'

/** How long a daemon may take to stop on SIGTERM or SIGINT before it exits anyway. */
const STOP_DEADLINE_MS = 15_000
/** How --http-listen is written, for its help on every role. */
const HTTP_LISTEN_FORMAT = 'PORT or HOST:PORT (a bare port is on 127.0.0.1; 0 picks a free one)'

const collect = (value: string, prev: string[] = []): string[] => [...prev, value]
const defaultDataDir = join(homedir(), '.stordaemon')

function fail (err: any): never {
  const message = err instanceof StorError ? err.message : `${err?.message ?? err}`
  process.stderr.write(`stordaemon: ${message}\n`)
  if (process.env.DEBUG != null && err?.stack != null) process.stderr.write(`${err.stack}\n`)
  process.exit(1)
}

function wholeNumber (text: string, what: string, max = 256): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) throw new StorError(`${what}: "${text}" is not a whole number from 1 to ${max}`, 'ERR_INVALID_ARGUMENT')
  return Number(text)
}

/** A file's health in a few words: healthy, degraded (k of R copies), or lost. */
function healthWords (f: FileSummary): string {
  const h = f.health
  if (h == null) return `x${f.replicas}`
  if (h.lost > 0) return `LOST (${h.lost} of ${f.chunks} chunks have no copy)`
  if (h.degraded > 0) return `degraded ${h.copies} of ${f.replicas}`
  return `healthy x${f.replicas}`
}

/** Ctrl-C stops a transfer cleanly (streams closed, resume record kept); a second one exits at once. */
function interrupted (): AbortSignal {
  const ctrl = new AbortController()
  process.once('SIGINT', () => {
    ctrl.abort(new StorError('interrupted; run the same command again to resume', 'ERR_INTERRUPTED'))
    process.once('SIGINT', () => process.exit(130))
    // whatever the network does (a FAT that never answers, a dial that hangs), the command ends
    // within a second: what it finished is recorded already, and a new run resumes from it
    setTimeout(() => {
      process.stderr.write('stordaemon: interrupted; run the same command again to resume\n')
      process.exit(130)
    }, 1000).unref()
  })
  return ctrl.signal
}

/** A recorded file name below DIR, never outside it. */
function safeJoin (dir: string, name: string): string {
  const parts = name.split(/[\\/]+/).filter(p => p !== '' && p !== '.' && p !== '..')
  return join(dir, ...(parts.length > 0 ? parts : ['unnamed']))
}

/** A vendor's failed devices, for `status`: where and why. */
function failedDevices (devices: Array<{ path: string, failed: boolean }>): string {
  const failed = devices.filter(d => d.failed)
  return failed.length === 0 ? '' : ` (${failed.length} failed: ${failed.map(d => d.path).join(', ')})`
}

function print (json: boolean, value: object, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human()}\n`)
}

/** `identity`: whether the command may create the user's identity, needs it, or needs none (see ClientOptions). */
async function withClient<T> (opts: { bootstrap?: string[], dataDir?: string }, fn: (c: Client) => Promise<T>, identity: 'create' | 'require' | 'ephemeral' = 'require'): Promise<T> {
  heapForTransfers()
  const client = await openClient({ dataDir: opts.dataDir ?? defaultDataDir, bootstrap: opts.bootstrap ?? [], identity })
  if (client.created && process.stderr.isTTY) process.stderr.write(`stordaemon: created a new identity in ${opts.dataDir ?? defaultDataDir}; back it up with \`stordaemon key export FILE\`: without it your files cannot be read\n`)
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

/** The package's version: package.json sits one folder up from the bundle (dist/) and from bin/. */
function packageVersion (): string {
  try {
    return JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

const program = new Command('stordaemon')
  .description('Peer-to-peer storage: run a FAT server or a vendor, or store and fetch files as a user.')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .enablePositionalOptions()
  .addOption(new Option('--role <role>', 'run a daemon').choices(['fat', 'vendor']))
  .option('--data-dir <dir>', 'where the daemon keeps its identity and tables')
  .option('--listen <multiaddr>', 'address to listen on (repeatable)', collect)
  .option('--bootstrap <multiaddr>', 'a FAT server to join, with /p2p/ (repeatable)', collect)
  .option('--device <path[:size]>', 'vendor: a directory to offer, with an optional quota like 20GiB (repeatable)', collect)
  .option('--create-device', 'vendor: create --device folders that do not exist (by default a missing folder is refused: it may be an unmounted disk)')
  .option('--adopt-device <path[:size]>', 'vendor: offer a device another vendor marked as its own, taking it over: its pieces are re-registered, not deleted (repeatable)', collect)
  .option('--lease <duration>', 'fat: how long an uncommitted allocation stays locked', '10m')
  .option('--heartbeat <duration>', 'fat: how often vendors report', '2s')
  .option('--snapshot-every <entries>', 'fat: snapshot the table and compact the log every this many entries', '10000')
  .option('--repair-after <duration>', 'fat: a vendor silent this long is dead and its chunks are copied elsewhere', '10m')
  .option('--repair-min-in <share>', 'fat: never declare vendors dead below this share of known vendors in service', '75%')
  .option('--repair-per-source <n>', 'fat: repair copies one vendor serves at once', '2')
  .option('--repair-per-target <n>', 'fat: repair copies one vendor receives at once', '4')
  .option('--repair-per-round <n>', 'fat: copies planned in one round', '64')
  .option('--zone <name>', 'vendor: its failure domain (rack, building, site); replicas of a chunk go to distinct zones')
  .option('--join-secret <secret>', 'fat: replicas prove they know it to join the replica set (default: $STOR_JOIN_SECRET)')
  .option('--high-water <pct|size>', 'vendor: above this share of its capacity (or size) it moves chunks elsewhere', '90%')
  .option('--scrub-rate <size>', 'vendor: bytes per second the background scrub reads at most', '8MiB')
  .option('--scrub-interval <duration>', 'vendor: time between full scrubs of every stored piece', '24h')
  .option('--http-listen <addr>', `serve /metrics (Prometheus), /health and, on a FAT, the status page at / over HTTP: ${HTTP_LISTEN_FORMAT}`)
  .action(async (opts) => {
    if (opts.role == null) { program.help(); return }
    if (opts.dataDir == null) throw new InvalidArgumentError('--data-dir: a daemon needs a data directory for its identity and tables')
    if (opts.role === 'vendor') heapForTransfers()
    const daemon = await startDaemon({
      role: opts.role,
      dataDir: resolve(opts.dataDir),
      listen: opts.listen ?? [],
      bootstrap: opts.bootstrap ?? [],
      devices: [...(opts.device ?? []), ...(opts.adoptDevice ?? [])].map(parseDeviceSpec),
      createDevices: opts.createDevice === true,
      adoptDevices: (opts.adoptDevice ?? []).map((d: string) => parseDeviceSpec(d).path),
      leaseMs: parseDuration(opts.lease, '--lease'),
      heartbeatMs: parseDuration(opts.heartbeat, '--heartbeat'),
      joinSecret: opts.joinSecret ?? process.env.STOR_JOIN_SECRET,
      snapshotEntries: /^\d+$/.test(opts.snapshotEvery) ? Number(opts.snapshotEvery) : Number.NaN,
      highWater: parseHighWater(opts.highWater),
      scrubRate: parseSize(opts.scrubRate, '--scrub-rate'),
      scrubIntervalMs: parseDuration(opts.scrubInterval, '--scrub-interval'),
      zone: opts.zone,
      repairAfterMs: parseDuration(opts.repairAfter, '--repair-after'),
      repairMinIn: parseShare(opts.repairMinIn, '--repair-min-in'),
      repairLimits: { perSource: wholeNumber(opts.repairPerSource, '--repair-per-source'), perTarget: wholeNumber(opts.repairPerTarget, '--repair-per-target'), perRound: wholeNumber(opts.repairPerRound, '--repair-per-round', 10_000) },
      httpListen: opts.httpListen,
      onWarning: m => { process.stderr.write(`stordaemon: warning: ${m}\n`) }
    })
    process.stdout.write(`peer ${daemon.peerId}\n${daemon.addrs.map(a => `listen ${a}\n`).join('')}${daemon.http != null ? `http ${daemon.http}\n` : ''}ready\n`)
    // one peer's bad luck must not take the daemon down for everyone else: log it and go on
    const survive = (err: any): void => { process.stderr.write(`stordaemon: error: ${err?.stack ?? err}\n`) }
    process.on('unhandledRejection', survive)
    process.on('uncaughtException', survive)
    let stopping = false
    const stop = (): void => {
      if (stopping) return
      stopping = true
      // every write is synced when made: a stop that hangs (a peer that never lets go, a data
      // folder removed under the daemon) may be cut short without losing anything
      setTimeout(() => { process.stderr.write(`stordaemon: did not stop within ${STOP_DEADLINE_MS / 1000} s; exiting\n`); process.exit(1) }, STOP_DEADLINE_MS).unref()
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
  .option('--concurrency <n>', 'most chunks in flight (the window adapts below it)', '32')
  .option('--no-resume', 'start afresh instead of resuming an interrupted run of the same upload')
  .action(async (files: string[], opts) => {
    const replicas = Number(opts.replicas)
    if (!/^\d+$/.test(opts.replicas)) throw new StorError(`--replicas: "${opts.replicas}" is not a whole number`, 'ERR_INVALID_ARGUMENT')
    const concurrency = wholeNumber(opts.concurrency, '--concurrency')
    const chunkSize = parseSize(opts.chunkSize, '--chunk-size')
    const bar = progressBar(opts.json !== true)
    const { paths, names, skipped } = await expandPaths(files)
    // a link in a folder is not followed: say which were left out, so nothing is missed silently
    if (skipped.length > 0) process.stderr.write(`stordaemon: warning: skipped ${skipped.length} entries that are not regular files (symlinks are not followed): ${skipped.slice(0, 20).join(', ')}${skipped.length > 20 ? ', ...' : ''}\n`)
    let r
    try {
      r = await withClient(opts, async c => await c.uploadMany(paths, { replicas, chunkSize, names, concurrency, resume: opts.resume !== false, onProgress: bar.update, signal: interrupted() }), 'create')
    } catch (err) {
      bar.done()
      // the files that did not change were stored: print them, then fail for the others
      if (err instanceof FileChangedError && err.stored.length > 0) {
        const stored = err.stored as UploadResult[]
        print(opts.json === true, { files: stored, failed: err.paths, skipped }, () => stored.map(f => `${f.fileId}  ${f.path}`).join('\n'))
      }
      throw err
    }
    bar.done()
    const sent = r.reduce((n, f) => n + f.sent, 0)
    const reused = r.reduce((n, f) => n + f.reused, 0)
    if (r.length === 1 && files.length === 1 && paths[0] === resolve(files[0])) print(opts.json === true, r[0], () => r[0].fileId)
    else print(opts.json === true, { files: r, sent, reused, skipped }, () => r.map(f => `${f.fileId}  ${f.path}`).join('\n'))
  })

userOpts(program.command('download <ID> <OUT...>').description('fetch a file by id into OUT (a folder: under its recorded name); or several: ID... DIR, each saved under its recorded name'))
  .option('--release', 'release the files from the network once fetched')
  .option('--force', 'overwrite files that exist already')
  .option('--concurrency <n>', 'most chunks in flight (the window adapts below it)', '32')
  .option('--no-resume', 'start afresh instead of resuming an interrupted download into OUT')
  .action(async (first: string, rest: string[], opts) => {
    const ids = [first, ...rest.slice(0, -1)]
    const target = resolve(rest[rest.length - 1])
    const concurrency = wholeNumber(opts.concurrency, '--concurrency')
    const bar = progressBar(opts.json !== true)
    const results = await withClient(opts, async c => {
      let files = [{ fileId: ids[0], out: target }]
      const intoFolder = (await stat(target).catch(() => undefined))?.isDirectory() === true
      if (ids.length > 1 || intoFolder) {
        const names = ids.length > 1 ? new Map((await c.list()).map(f => [f.fileId, f.name])) : new Map([[ids[0], (await c.table(ids[0])).table.name]])
        files = ids.map(id => ({ fileId: id, out: safeJoin(target, names.get(id) ?? id) }))
        await Promise.all(files.map(async f => { await mkdir(dirname(f.out), { recursive: true }) }))
      }
      if (opts.force !== true) {
        for (const f of files) {
          const there = await stat(f.out).catch(() => undefined)
          if (there?.isDirectory() === true) throw new InvalidArgumentError(`OUT: ${f.out} is a folder; name a file, or a folder to save into`)
          if (there != null) throw new InvalidArgumentError(`OUT: ${f.out} exists already; pass --force to overwrite it, or choose another name`)
        }
      }
      return await c.downloadMany(files, { release: opts.release === true, concurrency, resume: opts.resume !== false, onProgress: bar.update, signal: interrupted() })
    })
    bar.done()
    if (ids.length === 1) {
      const r = results[0]
      print(opts.json === true, r, () => `${r.out}: ${formatSize(r.size)}${r.pack != null ? ' (packed with other small files)' : ` in ${r.chunks} chunks`}${r.reused > 0 ? ` (${r.reused} from an earlier run)` : ''}${r.released ? ', released' : ''}`)
    } else {
      print(opts.json === true, { files: results, fetched: results.reduce((n, r) => n + r.fetched, 0), reused: results.reduce((n, r) => n + r.reused, 0) }, () => results.map(r => `${r.fileId}  ${r.out}`).join('\n'))
    }
  })

userOpts(program.command('paths').description('measure every vendor the FAT knows: round trip, hops, availability, space, load and the score that ranks them'))
  .option('--fresh', 'measure again even if a recent measure is cached')
  .action(async (opts) => {
    const rows = await withClient(opts, async c => await c.paths({ fresh: opts.fresh === true }), 'ephemeral')
    print(opts.json === true, { paths: rows }, () => rows.length === 0
      ? 'no live vendors'
      : [
          `${'vendor'.padEnd(12)} ${'rtt ms'.padStart(8)} ${'hops'.padStart(4)} ${'avail'.padStart(6)} ${'grantable'.padStart(10)} ${'free'.padStart(10)} ${'load'.padStart(5)} ${'age s'.padStart(6)} ${'score'.padStart(7)}`,
          ...rows.map(p => `${('…' + p.vendor.slice(-11)).padEnd(12)} ${(p.reachable ? p.rttMs.toFixed(2) : 'down').padStart(8)} ${String(p.hops).padStart(4)} ${(p.availability * 100).toFixed(0).padStart(5)}% ${formatSize(p.available).padStart(10)} ${formatSize(p.free).padStart(10)} ${String(p.inflight).padStart(5)} ${(p.ageMs / 1000).toFixed(0).padStart(6)} ${p.score.toFixed(4).padStart(7)}`)
        ].join('\n'))
  })

userOpts(program.command('ls').description('list your files, each with its health, and the space they use'))
  .action(async (opts) => {
    const files = await withClient(opts, async c => await c.list())
    const size = files.reduce((n, f) => n + f.size, 0)
    const stored = files.reduce((n, f) => n + (f.health?.stored ?? 0), 0)
    print(opts.json === true, { files, size, stored }, () => files.length === 0
      ? 'no files'
      : [
          ...files.map(f => `${f.fileId}  ${formatSize(f.size).padStart(10)}  ${healthWords(f).padEnd(18)}  ${new Date(f.created).toISOString()}  ${f.name}`),
          `${files.length} file${files.length === 1 ? '' : 's'}, ${formatSize(size)}; ${formatSize(stored)} on vendors with replicas`
        ].join('\n'))
  })

userOpts(program.command('check [ID...]').description('each file\'s health: healthy, degraded (k of R copies) or lost; all your files without IDs. Exit code 0: all healthy, 2: some degraded, 3: some lost or unknown'))
  .action(async (ids: string[], opts) => {
    // a mistyped id is named before anything else (a missing identity, an unreachable FAT)
    ids.forEach(checkFileId)
    const r = await withClient(opts, async c => await c.check(ids))
    const degraded = r.files.filter(f => (f.health?.degraded ?? 0) > 0 && (f.health?.lost ?? 0) === 0).length
    const lost = r.files.filter(f => (f.health?.lost ?? 0) > 0).length
    const healthy = r.files.length - degraded - lost
    print(opts.json === true, { ...r, healthy, degraded, lost }, () => [
      ...r.files.map(f => `${f.fileId}  ${healthWords(f).padEnd(18)}  ${f.health != null && f.health.degraded > 0 ? `${f.health.degraded} of ${f.chunks} chunks under ${f.replicas} copies  ` : ''}${f.name}`),
      ...r.missing.map(id => `${id}  unknown: no such file of yours`),
      `${healthy} healthy, ${degraded} degraded, ${lost} lost${r.missing.length > 0 ? `, ${r.missing.length} unknown` : ''}`
    ].join('\n'))
    if (lost > 0 || r.missing.length > 0) process.exitCode = 3
    else if (degraded > 0) process.exitCode = 2
  })

userOpts(program.command('release <ID>').description('erase a file from the network and free its space'))
  .action(async (id: string, opts) => {
    const r = await withClient(opts, async c => await c.release(id))
    print(opts.json === true, r, () => `released ${r.fileId}: ${formatSize(r.freed)} freed`)
  })

userOpts(program.command('status').description('the FAT server\'s view of the network'))
  .action(async (opts) => {
    const s = await withClient(opts, async c => await c.status(), 'ephemeral')
    const agreed = new Set(s.replicas.filter(r => r.reachable).map(r => `${r.applied}/${r.digest}`)).size === 1
    print(opts.json === true, s, () => [
      `FAT ${s.fat}: ${s.files} files, ${s.allocations} open allocations; replicas ${agreed ? 'agree' : 'differ'}`,
      ...s.replicas.map(r => `replica ${r.peer} ${r.reachable ? 'up' : 'unreachable'}${r.leader ? ' (orders writes)' : ''}  term ${r.term}  position ${r.applied}  digest ${r.digest.slice(0, 12)}`),
      ...vendorStates(s),
      ...(s.repair != null ? repairLines(s.repair) : []),
      ...s.vendors.map(v => `vendor ${v.vendor} ${v.state ?? (v.alive ? 'alive' : 'silent')}${v.zone != null ? `  zone ${v.zone}` : ''}  capacity ${formatSize(v.capacity)}  used ${formatSize(v.used)}  free ${formatSize(v.free)}  locked ${formatSize(v.locked)}  available ${formatSize(v.available)}  chunks ${v.held}  devices ${v.devices.length}${failedDevices(v.devices)}`)
    ].join('\n'))
  })

program.command('remove-replica <PEER>')
  .description('fat: take a FAT replica out of the replica set (it may be dead), one at a time, through the replicated log')
  .option('--bootstrap <multiaddr>', 'a running FAT replica, with /p2p/ (repeatable)', collect)
  .option('--join-secret <secret>', 'the network\'s join secret (default: $STOR_JOIN_SECRET)')
  .option('--json', 'print one JSON object')
  .action(async (peer: string, opts) => {
    const r = await removeReplica({ bootstrap: opts.bootstrap ?? [], peer, joinSecret: opts.joinSecret ?? process.env.STOR_JOIN_SECRET ?? '' })
    print(opts.json === true, r, () => `removed ${peer}; the replica set is now:\n${r.members.map(m => `  ${m.peer}${m.peer === r.leader ? ' (orders writes)' : ''}`).join('\n')}`)
  })
/** Vendors per state, in a fixed order: alive, suspect, back, draining, dead. */
function vendorStates (s: StatusReport): string[] {
  const order = ['alive', 'suspect', 'back', 'draining', 'dead', 'silent']
  const counts = new Map<string, number>()
  for (const v of s.vendors) {
    const state = v.state ?? (v.alive ? 'alive' : 'silent')
    counts.set(state, (counts.get(state) ?? 0) + 1)
  }
  const parts = order.filter(k => counts.has(k)).map(k => `${counts.get(k) ?? 0} ${k}`)
  return [`vendors: ${parts.length === 0 ? 'none' : parts.join(', ')}`]
}

function repairLines (r: NonNullable<StatusReport['repair']>): string[] {
  return [
    `chunks: ${r.chunks} (${r.healthy} healthy, ${r.under} under-replicated, ${r.lost} lost)`,
    `repair: ${r.queued} chunks queued, ${r.moving} copying; ${r.copies} copies (${formatSize(r.bytes)}) repaired so far`,
    ...(r.held.length > 0 ? [`guard: ${r.held.length} silent vendor${r.held.length === 1 ? ' is' : 's are'} not declared dead, so enough vendors stay in service (--repair-min-in): ${r.held.join(' ')}`] : [])
  ]
}

program.command('quarantine <DEVICE...>')
  .description('list the files a vendor moved aside on its devices (pieces no chunk of its table names); --purge removes them')
  .option('--purge', 'delete the quarantined files (they cannot be recovered afterwards)')
  .option('--json', 'print one JSON object')
  .action(async (paths: string[], opts) => {
    const reports: QuarantineReport[] = []
    for (const p of paths) {
      const info = await stat(resolve(p)).catch(() => undefined)
      if (info?.isDirectory() !== true) throw new InvalidArgumentError(`DEVICE: ${resolve(p)} is not a device folder`)
      reports.push(await inspectQuarantine(resolve(p), opts.purge === true))
    }
    print(opts.json === true, { devices: reports }, () => reports.map(r => r.files.length === 0
      ? `${r.device}: nothing in quarantine`
      : `${r.device}: ${r.files.length} files, ${formatSize(r.bytes)}${r.removed ? ' removed' : ' in quarantine (--purge removes them)'}${r.removed ? '' : r.files.map(f => `\n  ${f.name}  ${formatSize(f.size)}`).join('')}`).join('\n'))
  })

program.command('drain')
  .description('make a vendor leave: the FAT moves everything it holds to other vendors (signed with the vendor\'s identity)')
  .option('--bootstrap <multiaddr>', 'a FAT server, with /p2p/ (repeatable)', collect)
  .requiredOption('--data-dir <dir>', 'the vendor\'s data directory (its identity signs the request)')
  .option('--no-wait', 'return once the FAT accepted, without waiting until the vendor is empty')
  .option('--timeout <duration>', 'how long to wait until the vendor is empty', '1h')
  .option('--json', 'print one JSON object')
  .action(async (opts) => {
    const bar = progressBar(opts.json !== true)
    const r = await drainVendor({ dataDir: resolve(opts.dataDir), bootstrap: opts.bootstrap ?? [], wait: opts.wait !== false, timeoutMs: parseDuration(opts.timeout, '--timeout'), onProgress: bar.update })
    bar.done()
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

const gateway = userOpts(program.command('gateway').description('serve S3 (AWS Signature V4) over HTTP or HTTPS, storing as this user'))
  .option('--listen <host:port>', 'address to serve S3 on (port 0 picks a free one)', '127.0.0.1:9000')
  .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (with --tls-key)')
  .option('--tls-key <file>', 'the PEM private key of --tls-cert')
  .option('--replicas <n>', 'replicas of each object\'s chunks (default 2)')
  .option('--chunk-size <size>', 'chunk size of stored objects (default 4MiB)')
  .option('--http-listen <addr>', `serve /metrics (Prometheus) and /health over HTTP, apart from S3: ${HTTP_LISTEN_FORMAT}`)
  .action(async (opts) => {
    if ((opts.tlsCert == null) !== (opts.tlsKey == null)) throw new InvalidArgumentError('--tls-cert and --tls-key: give both for HTTPS, or neither for HTTP')
    const tls = opts.tlsCert != null
      ? { cert: await readFile(opts.tlsCert).catch(() => { throw new InvalidArgumentError(`--tls-cert: cannot read ${opts.tlsCert as string}`) }), key: await readFile(opts.tlsKey).catch(() => { throw new InvalidArgumentError(`--tls-key: cannot read ${opts.tlsKey as string}`) }) }
      : undefined
    // the gateway moves objects' bytes as the CLI's transfers do (its index lives at the FAT, not in its heap)
    heapForTransfers()
    const client = await openClient({ dataDir: opts.dataDir, bootstrap: opts.bootstrap ?? [], identity: 'require' })
    let gw
    try {
      gw = await startGateway({
        user: client,
        listen: opts.listen,
        tls,
        replicas: opts.replicas != null ? wholeNumber(opts.replicas, '--replicas') : undefined,
        chunkSize: opts.chunkSize != null ? parseSize(opts.chunkSize, '--chunk-size') : undefined,
        httpListen: opts.httpListen
      })
    } catch (err) {
      await client.close()
      throw err
    }
    print(opts.json === true, { peer: client.peerId, url: gw.url, ...(gw.http != null ? { http: gw.http } : {}) }, () => `peer ${client.peerId}\nlisten ${gw.url}${gw.http != null ? `\nhttp ${gw.http}` : ''}`)
    process.stdout.write('ready\n')
    const survive = (err: any): void => { process.stderr.write(`stordaemon: error: ${err?.stack ?? err}\n`) }
    process.on('unhandledRejection', survive)
    process.on('uncaughtException', survive)
    await new Promise<void>(resolve => { process.once('SIGINT', resolve); process.once('SIGTERM', resolve) })
    setTimeout(() => { process.exit(1) }, STOP_DEADLINE_MS).unref()
    await gw.close()
    await client.close()
  })

const gatewayKey = gateway.command('key').description('the access keys S3 clients sign with (kept, sealed, in this user\'s records at the FAT: every gateway of this identity knows them)')
userOpts(gatewayKey.command('add <NAME>').description('make an access key; its secret is shown this once'))
  .action(async (name: string, opts) => {
    if (!/^[\x21-\x7e ]{1,64}$/.test(name)) throw new InvalidArgumentError(`NAME: "${name}" must be 1 to 64 printable characters`)
    // the first key of a new data directory creates its identity, as a first upload does
    const k = await withClient(opts, async c => await addKey(c, name), 'create')
    print(opts.json === true, k, () => `access key ${k.accessKey}\nsecret     ${k.secret}\n(the secret is shown only now; keep it safe)`)
  })
userOpts(gatewayKey.command('ls').description('list the access keys (not their secrets)'))
  .action(async (opts) => {
    const keys = await withClient(opts, async c => await listAccessKeys(c))
    print(opts.json === true, { keys }, () => keys.length === 0 ? 'no access keys' : keys.map(k => `${k.accessKey}  ${new Date(k.created).toISOString()}  ${k.name}`).join('\n'))
  })
userOpts(gatewayKey.command('rm <KEY>').description('remove an access key, by its id or its name (gateways stop accepting it within 10 s)'))
  .action(async (which: string, opts) => {
    const removed = await withClient(opts, async c => await removeKey(c, which))
    if (removed.length === 0) throw new InvalidArgumentError(`KEY: no access key has the id or name "${which}" (see stordaemon gateway key ls)`)
    print(opts.json === true, { removed }, () => `removed ${removed.join(', ')}`)
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
  // stdout to a pipe is written asynchronously: let a large --json answer reach it before exiting
  if (program.opts().role == null) await new Promise<void>(resolve => { process.stdout.write('', () => { resolve() }) }).then(() => process.exit(Number(process.exitCode ?? 0)))
} catch (err) {
  fail(err)
}
