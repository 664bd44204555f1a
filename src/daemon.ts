import { join } from 'node:path'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { generateKeyPair, privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { parallel } from './parallel.ts'
import { parseSize } from './units.ts'
import { FAT_PROTOCOL, FAT_SYNC_PROTOCOL, MAX_FAT_MESSAGE } from './protocol/ids.ts'
import * as S from './protocol/fat-sync.ts'
import * as M from './protocol/messages.ts'
import { call } from './protocol/rpc.ts'
import { signRequest } from './protocol/auth.ts'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidArgumentError, UnreachableError, UnavailableError, StorError } from './errors.ts'
import { logger } from './logger.ts'
import { createNode, fullAddrs, type StorNode } from './node/index.ts'
import { hasKey, loadOrCreateKey, KEY_FILE } from './node/identity.ts'
import { openDb, type DB } from './store/db.ts'
import { Devices, type DeviceSpec } from './store/devices.ts'
import { createFat } from './roles/fat/index.ts'
import { removeProof } from './roles/fat/replication.ts'
import { createVendor, type HighWater } from './roles/vendor/index.ts'
import { createUser, type User, type Progress } from './roles/user/index.ts'
import { fatMonitoring, parseHttpListen, vendorMonitoring, type HttpServer } from './http/index.ts'
import { closeChunkStreams } from './protocol/chunk-transfer.ts'

export type Role = 'fat' | 'vendor'

export interface DaemonOptions {
  role: Role
  dataDir: string
  listen: string[]
  bootstrap: string[]
  devices?: DeviceSpec[]
  /** Vendor: create device folders that do not exist (else refused: a missing folder may be an unmounted disk). */
  createDevices?: boolean
  /** Vendor: devices (paths, among `devices`) marked by another vendor, to take over on purpose; their pieces are re-registered. */
  adoptDevices?: string[]
  leaseMs?: number
  heartbeatMs?: number
  /** fat: replicas must present it to join the replica set (keep it secret); unset lets any FAT join. */
  joinSecret?: string
  /** fat: snapshot the table and compact the log every this many entries (default 10,000). */
  snapshotEntries?: number
  onWarning?: (message: string) => void
  /** Vendor: the high-water mark, and scrubbing rate (bytes/s) and interval. */
  highWater?: HighWater
  scrubRate?: number
  scrubIntervalMs?: number
  /** Serve /metrics and /health (and a FAT's status page) over HTTP here: PORT, HOST:PORT or [IPv6]:PORT; a bare port is on 127.0.0.1. */
  httpListen?: string
}

export interface Daemon {
  readonly peerId: string
  readonly addrs: string[]
  /** The HTTP address of /metrics, /health and the status page (with httpListen), e.g. http://127.0.0.1:9100 */
  readonly http?: string
  readonly node: StorNode
  stop: () => Promise<void>
}

/** Parses --bootstrap values: full multiaddrs that name the peer with /p2p/. */
export function parseBootstrap (values: string[]): Multiaddr[] {
  return values.map(v => {
    let ma: Multiaddr
    try {
      ma = multiaddr(v)
    } catch (err: any) {
      throw new InvalidArgumentError(`--bootstrap: "${v}" is not a multiaddr (${err.message}); copy one a FAT server printed, like /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo...`)
    }
    if (!ma.getComponents().some(c => c.name === 'p2p')) {
      throw new InvalidArgumentError(`--bootstrap: "${v}" does not end in /p2p/<peer id>; copy the whole address a FAT server printed`)
    }
    return ma
  })
}

function parseListen (values: string[]): string[] {
  for (const v of values) {
    try { multiaddr(v) } catch (err: any) {
      throw new InvalidArgumentError(`--listen: "${v}" is not a multiaddr (${err.message}); write e.g. /ip4/127.0.0.1/tcp/0`)
    }
  }
  return values
}

async function openNode (dataDir: string, listen: string[], server: boolean): Promise<{ node: StorNode, key: Awaited<ReturnType<typeof loadOrCreateKey>> }> {
  const key = await loadOrCreateKey(dataDir)
  const node = await createNode({ privateKey: key, listen, dhtServer: server })
  return { node, key }
}

/** Dials a vendor at its logged addresses; failures are only logged (it may be gone). */
async function dialKnown (node: StorNode, v: { peer: string, addrs: string[] }, log: ReturnType<typeof logger>): Promise<void> {
  try {
    const id = peerIdFromString(v.peer)
    await node.peerStore.merge(id, { multiaddrs: v.addrs.map(a => multiaddr(a)) })
    await node.dial(id, { signal: AbortSignal.timeout(10_000) })
  } catch (err: any) {
    log('vendor %s not reached at start: %s', v.peer, err.message)
  }
}

/** STOR_TEST_DELAY_MS: a vendor delays its answers (tests of a slow vendor); unset in production. */
function testDelayMs (): number | undefined {
  const v = process.env.STOR_TEST_DELAY_MS
  if (v == null || v === '') return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0 || n > 60_000) throw new InvalidArgumentError(`STOR_TEST_DELAY_MS: "${v}" is not a whole number of milliseconds up to 60000`)
  return n
}

/** Starts a FAT server or a vendor: its identity, its tables and its libp2p node. */
export async function startDaemon (opts: DaemonOptions): Promise<Daemon> {
  const bootstrap = parseBootstrap(opts.bootstrap)
  const listen = parseListen(opts.listen.length > 0 ? opts.listen : ['/ip4/0.0.0.0/tcp/0'])
  if (opts.heartbeatMs != null && (opts.heartbeatMs < 100 || opts.heartbeatMs > 3_600_000)) throw new InvalidArgumentError('--heartbeat: must be from 100ms to 1h')
  if (opts.snapshotEntries != null && (!Number.isSafeInteger(opts.snapshotEntries) || opts.snapshotEntries < 1)) throw new InvalidArgumentError('--snapshot-every: give a whole number of log entries, at least 1 (default 10000)')
  if (opts.leaseMs != null && opts.leaseMs < 1000) throw new InvalidArgumentError('--lease: must be at least 1s')
  if (opts.scrubRate != null && opts.scrubRate < 1) throw new InvalidArgumentError('--scrub-rate: must be at least 1 byte per second')
  if (opts.scrubIntervalMs != null && opts.scrubIntervalMs < 100) throw new InvalidArgumentError('--scrub-interval: must be at least 100ms')
  if (opts.role === 'vendor' && bootstrap.length === 0) throw new InvalidArgumentError('--bootstrap: a vendor needs the multiaddr of a FAT server')
  const httpAddr = opts.httpListen != null ? parseHttpListen(opts.httpListen) : undefined
  const log = logger(`stor:${opts.role}`)
  const newIdentity = !hasKey(opts.dataDir)
  // a vendor marks its devices with its peer id, and refuses those marked by another vendor
  const devices = opts.role === 'vendor'
    ? await Devices.open(opts.devices ?? [], logger('stor:vendor:devices'), {
      owner: peerIdFromPrivateKey(await loadOrCreateKey(opts.dataDir)).toString(),
      create: opts.createDevices,
      adopt: new Set(opts.adoptDevices ?? []),
      warn: opts.onWarning
    })
    : undefined
  const db: DB = await openDb(join(opts.dataDir, 'db'))
  let node: StorNode | undefined
  let role: { stop: () => Promise<void> } | undefined
  let http: HttpServer | undefined
  const fatMonitor = opts.role === 'fat' && httpAddr != null ? fatMonitoring(httpAddr, logger('stor:fat:http')) : undefined
  const vendorMonitor = opts.role === 'vendor' && httpAddr != null ? vendorMonitoring(httpAddr, logger('stor:vendor:http')) : undefined
  try {
    const opened = await openNode(opts.dataDir, listen, true)
    node = opened.node
    const heartbeatMs = opts.heartbeatMs ?? 2000
    let announced: Promise<void> | undefined
    if (opts.role === 'fat') {
      const fat = await createFat({ node, db, key: opened.key, log, leaseMs: opts.leaseMs ?? 600_000, heartbeatMs, join: bootstrap, joinSecret: opts.joinSecret, mayFound: newIdentity, snapshotEntries: opts.snapshotEntries, metrics: fatMonitor?.metrics })
      role = fat
      http = await fatMonitor?.start(fat)
      // a FAT that restarted at new addresses tells the vendors it knows (identify carries them, and
      // puts it in their DHT), so they find it by its peer id
      const known = fat.table.listVendors()
      const n = node
      void parallel(8, known.length, async i => { await dialKnown(n, known[i], log) })
    } else {
      const vendor = await createVendor({ node, db, key: opened.key, log, devices: devices as Devices, fats: bootstrap, onWarning: opts.onWarning, testDelayMs: testDelayMs(), highWater: opts.highWater, scrubRate: opts.scrubRate, scrubIntervalMs: opts.scrubIntervalMs, metrics: vendorMonitor?.metrics })
      role = vendor
      announced = vendor.announced
      // served while the vendor waits for a FAT: /health then says why it does not serve yet
      http = await vendorMonitor?.start(vendor)
    }
    for (const b of bootstrap) void node.dial(b).catch(err => { log('bootstrap %s: %s', b.toString(), err.message) })
    await announced
    const n = node
    const running = role
    const server = http
    return {
      peerId: n.peerId.toString(),
      addrs: fullAddrs(n),
      ...(server != null ? { http: server.url } : {}),
      node: n,
      async stop () {
        fatMonitor?.stop()
        await server?.close()
        await running.stop()
        await n.stop()
        await db.close()
      }
    }
  } catch (err) {
    fatMonitor?.stop()
    await http?.close()
    await role?.stop().catch(() => {})
    await node?.stop()
    await devices?.close()
    await db.close()
    throw err
  }
}

export interface ClientOptions {
  dataDir: string
  bootstrap: string[]
  /**
   * When the data directory holds no identity: `create` one (the default; a first upload), or
   * `require` one (an error saying how to restore it: commands on existing files), or use a
   * throwaway one (`ephemeral`: commands that need no identity, like status).
   */
  identity?: 'create' | 'require' | 'ephemeral'
}

export interface Client extends User {
  /** The identity was created by this call (back it up with `stordaemon key export`). */
  readonly created: boolean
  close: () => Promise<void>
}

/** A user identity (from its data dir) connected to a network through its FAT servers. */
export async function openClient (opts: ClientOptions): Promise<Client> {
  const fats = parseBootstrap(opts.bootstrap)
  if (fats.length === 0) throw new InvalidArgumentError('--bootstrap: give the multiaddr of a FAT server')
  const newIdentity = !hasKey(opts.dataDir)
  const mode = opts.identity ?? 'create'
  if (newIdentity && mode === 'require') {
    throw new InvalidArgumentError(`--data-dir: ${opts.dataDir} holds no user identity (${KEY_FILE} is missing); if you stored files before, restore it with \`stordaemon key import FILE\` from your \`stordaemon key export\` backup (a new identity cannot open the old files); a first \`stordaemon upload\` creates one`)
  }
  // a command that needs no identity leaves a data directory without one untouched
  const scratch = newIdentity && mode === 'ephemeral' ? await mkdtemp(join(tmpdir(), 'stor-user-')) : undefined
  const dataDir = scratch ?? opts.dataDir
  const { node, key } = await openNode(dataDir, [], false)
  const close = async (): Promise<void> => {
    // kept chunk streams end cleanly first, so vendors know every chunk they sent arrived
    await closeChunkStreams(node)
    await node.stop()
    if (scratch != null) await rm(scratch, { recursive: true, force: true })
  }
  try {
    const user = await createUser({ node, key, dataDir, fats, newIdentity, log: logger('stor:user') })
    return { ...user, created: newIdentity && scratch == null, close }
  } catch (err) {
    await close()
    throw err
  }
}

/** Parses --high-water: a share of the capacity like 90%, or a size like 20GiB. */
export function parseHighWater (text: string): HighWater {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text)
  if (m != null) {
    const pct = Number(m[1])
    if (pct <= 0 || pct > 100) throw new InvalidArgumentError(`--high-water: "${text}" must be from 0% (exclusive) to 100%`)
    return { fraction: pct / 100 }
  }
  return { bytes: parseSize(text, '--high-water') }
}

export interface DrainOptions {
  /** The vendor's data directory: its identity signs the request. */
  dataDir: string
  bootstrap: string[]
  /** Wait until the vendor holds nothing (default true), at most this long. */
  wait?: boolean
  timeoutMs?: number
  /** The bytes and chunks moved off the vendor so far, polled from the FAT. */
  onProgress?: (p: Progress) => void
}

export interface DrainResult { vendor: string, bytes: number, drained: boolean }

/**
 * Asks the FAT to move everything a vendor holds elsewhere, signed with the vendor's own key
 * (read from its data directory; the vendor may keep running), and by default waits until the
 * vendor is empty.
 */
export async function drainVendor (opts: DrainOptions): Promise<DrainResult> {
  const fats = parseBootstrap(opts.bootstrap)
  if (fats.length === 0) throw new InvalidArgumentError('--bootstrap: give the multiaddr of a FAT server')
  let vendorKey
  try {
    vendorKey = privateKeyFromProtobuf(await readFile(join(opts.dataDir, KEY_FILE)))
  } catch (err: any) {
    throw new InvalidArgumentError(`--data-dir: ${opts.dataDir} holds no vendor identity (${err.code ?? err.message}); give the vendor's --data-dir`)
  }
  const vendor = peerIdFromPrivateKey(vendorKey).toString()
  // a throwaway identity carries the request, so the running vendor's own connections are left alone
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], dhtServer: false })
  const ask = async <C extends M.Message<any>>(msg: object, expected: Record<string, any>): Promise<C> => {
    const errors: string[] = []
    for (const fat of fats) {
      try {
        return await call(node, fat, FAT_PROTOCOL, msg, expected, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(30_000) }) as C
      } catch (err: any) {
        if (!(err instanceof UnreachableError)) throw err
        errors.push(err.message)
      }
    }
    throw new UnreachableError(`no FAT server answered: ${errors.join('; ')}`)
  }
  try {
    const reply = await ask<M.Message<typeof M.Draining>>(await signRequest(vendorKey, vendor, { t: 'drain', vendor }), { draining: M.Draining })
    if (opts.wait === false) return { vendor, bytes: reply.bytes, drained: false }
    const until = Date.now() + (opts.timeoutMs ?? 3_600_000)
    let start: { held: number, used: number } | undefined
    for (;;) {
      const status = await ask<M.Message<typeof M.StatusReply>>({ t: 'status' }, { 'status-reply': M.StatusReply })
      const v = status.vendors.find(x => x.vendor === vendor)
      if (v == null) throw new StorError(`the FAT no longer lists vendor ${vendor}`, 'ERR_NOT_FOUND')
      start ??= { held: v.held, used: Math.max(v.used, reply.bytes) }
      opts.onProgress?.({ phase: 'migrate', bytes: Math.max(0, start.used - v.used), total: start.used, chunks: Math.max(0, start.held - v.held), chunksTotal: start.held, files: 1 })
      if (v.used === 0 && v.held === 0 && v.transfers === 0 && v.alive) return { vendor, bytes: reply.bytes, drained: true }
      if (Date.now() > until) throw new StorError(`vendor ${vendor} still holds ${v.held} chunks (${v.used} bytes in files) after the timeout; it keeps draining`, 'ERR_TIMEOUT')
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  } finally {
    await node.stop()
  }
}

export interface RemoveReplicaOptions {
  /** Replicas to ask (any member takes the request to the leader). */
  bootstrap: string[]
  /** The peer id of the replica to remove; it may be dead. */
  peer: string
  /** The network's join secret: it proves the operator may change the replica set. */
  joinSecret: string
}

/** Removes one FAT replica from the replica set, through its log; returns the set that remains. */
export async function removeReplica (opts: RemoveReplicaOptions): Promise<{ leader: string, members: Array<{ peer: string, addrs: string[] }> }> {
  const fats = parseBootstrap(opts.bootstrap)
  if (fats.length === 0) throw new InvalidArgumentError('--bootstrap: give the multiaddr of a FAT replica')
  try { peerIdFromString(opts.peer) } catch { throw new InvalidArgumentError(`peer: "${opts.peer}" is not a peer id (the replica's 12D3KooW... id, as \`stordaemon status\` lists it)`) }
  if (opts.joinSecret === '') throw new InvalidArgumentError('--join-secret: removing a replica needs the network\'s join secret (or $STOR_JOIN_SECRET)')
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], dhtServer: false })
  try {
    const errors: string[] = []
    const deadline = Date.now() + 20_000
    while (Date.now() < deadline) {
      for (const fat of fats) {
        try {
          const r = await call(node, fat, FAT_SYNC_PROTOCOL, { t: 'remove', peer: opts.peer, proof: removeProof(opts.joinSecret, opts.peer) }, { removed: S.Removed }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(30_000) })
          return { leader: r.leader, members: r.members }
        } catch (err: any) {
          if (!(err instanceof UnreachableError) && !(err instanceof UnavailableError)) throw err
          errors.push(err.message)
        }
      }
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    throw new UnreachableError(`no FAT replica took the removal: ${[...new Set(errors)].slice(-3).join('; ')}`)
  } finally {
    await node.stop()
  }
}
