import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { AccessDeniedError, InvalidArgumentError, LimitError, NoQuorumError, NoSpaceError, NotFoundError, UnavailableError, UnreachableError } from '../../errors.ts'
import { encode } from '../../protocol/codec.ts'
import { logger, type Logger } from '../../logger.ts'
import { FAT_PROTOCOL, MAX_FAT_MESSAGE, MAX_VENDOR_MESSAGE, ORDER_PROTOCOL } from '../../protocol/ids.ts'
import * as M from '../../protocol/messages.ts'
import { call, serve, type Served } from '../../protocol/rpc.ts'
import { sign, verify } from '../../protocol/sign.ts'
import { ReplayGuard } from '../../protocol/auth.ts'
import type { StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import { Serial } from '../../serial.ts'
import { FAT_SYNC_PROTOCOL } from '../../protocol/ids.ts'
import type { ProbeReply } from '../../protocol/fat-sync.ts'
import * as S from '../../protocol/fat-sync.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { FatTable, TABLE_PREFIXES, bytesPerVendor, newOrder, settleKeep, type AllocationRecord, type PendingOrder, type TransferRecord, type Replaced, type ChunkInfo } from './table.ts'
import { createReplication, type Replication } from './replication.ts'
import { checkCommitFits } from './commit-size.ts'
import { tablePage } from '../../protocol/table-pages.ts'
import { atRisk, healthyCopy, planMoves, type VendorLoad } from './moves.ts'
import { Liveness, judgeVendors } from './liveness.ts'
import { DEFAULT_REPAIR_LIMITS, planRepair, type RepairLimits } from './repair.ts'
import { MAX_CHUNK_LIST } from '../../protocol/messages.ts'
import { MAX_TRANSFERS_PER_OP } from '../../protocol/fat-sync.ts'
import { overviewOf, type FatOverview } from './overview.ts'

export interface FatOptions {
  node: StorNode
  db: DB
  key: PrivateKey
  log: Logger
  /** How long a provisional allocation stays locked without a commit. */
  leaseMs: number
  /** Extra lease time per MiB allocated, so a large upload is not cut off. */
  leaseMsPerMiB?: number
  heartbeatMs: number
  /** Replicas to join through; none founds a new network. */
  join: Multiaddr[]
  joinSecret?: string
  electionMs?: [number, number]
  /** A new identity may found a network; an old one whose log is gone must rejoin instead. */
  mayFound: boolean
  /** Snapshot the table and compact the log once this many entries are applied past the last snapshot. */
  snapshotEntries?: number
  /** A vendor silent this long is dead and its chunks are copied elsewhere (default 10 minutes). */
  repairAfterMs?: number
  /** Share of the known vendors that must stay in service: the guard against partitions (default 0.75). */
  repairMinIn?: number
  /** Copies at once per source and per target, and per round. */
  repairLimits?: RepairLimits
  /** Told of requests and of the work they did, for metrics. */
  metrics?: FatMetrics
}

/** What the FAT reports as it works (the daemon counts it); each call is cheap and never throws. */
export interface FatMetrics {
  served: Served
  /** an allocation granted, and the time from request to grant (on the replica that orders writes) */
  allocated: (seconds: number) => void
  /** a commit logged, and the time from request until a majority held it (on the replica that orders writes) */
  committed: (seconds: number) => void
  /** a commit applied here: the bytes its chunks take on vendors, replicas included (every replica counts it) */
  stored: (bytes: number) => void
  /** a confirmed copy (repair, migration or drain) applied here, and the chunk's bytes (every replica counts it) */
  transferred: (reason: TransferRecord['reason'], bytes: number) => void
}

/** Whether the replica serves: it knows a replica that orders writes. */
export interface Health { ok: boolean, reason: string }

export const DEFAULT_REPAIR_AFTER_MS = 600_000
export const DEFAULT_REPAIR_MIN_IN = 0.75
/** Confirmed copies wait this long to be logged together: one table rewrite per file, not per chunk. */
const CONFIRM_BATCH_MS = 200

/** A vendor's state as status shows it (see docs/repair.md). */
type VendorState = 'alive' | 'suspect' | 'dead' | 'draining' | 'back'

export interface Fat {
  readonly table: FatTable
  readonly replication: Replication
  /** The network as this replica sees it, without users' file names or keys. */
  overview: () => Promise<FatOverview>
  health: () => Health
  stop: () => Promise<void>
}

/** Orders carried by one heartbeat reply; the rest follow on the next beats. */
const ORDERS_PER_HEARTBEAT = 200

const REQUESTS = { announce: M.Announce, allocate: M.Allocate, renew: M.Renew, commit: M.Commit, 'commit-part': M.CommitPart, get: M.GetTable, 'get-many': M.GetTables, list: M.List, release: M.Release, status: M.Status, members: M.Members, copied: M.Copied, drain: M.Drain, check: M.CheckFiles, 'write-records': M.WriteRecords, 'get-records': M.GetRecords, 'list-records': M.ListRecords }

/** Changes only the replica that orders writes makes; the others forward them to it, expecting these replies. */
const WRITES: Record<string, Record<string, any>> = {
  allocate: { allocated: M.Allocated },
  renew: { allocated: M.Allocated },
  commit: { ok: M.Ok },
  'commit-part': { ok: M.Ok },
  release: { released: M.Released },
  copied: { ok: M.Ok },
  drain: { draining: M.Draining },
  'write-records': { 'records-written': M.RecordsWritten }
}

/** Bytes of tables one get-many reply carries (a message may be 16 MiB; the rest is asked for again). */
const TABLES_BUDGET = 4 * 1024 * 1024

/** Transfer orders carried by one heartbeat reply. */
const TRANSFERS_PER_HEARTBEAT = 200

/** The File Allocation Table service: vendors' resources in, provisional grants out, final tables kept. */
export async function createFat (opts: FatOptions): Promise<Fat> {
  const { node, log, key } = opts
  const repairLog = logger('stor:fat:repair')
  const self = node.peerId.toString()
  /** Vendors are judged only on what this replica heard since it started (see docs/repair.md). */
  const startedAt = Date.now()
  const repairAfterMs = opts.repairAfterMs ?? DEFAULT_REPAIR_AFTER_MS
  const repairMinIn = opts.repairMinIn ?? DEFAULT_REPAIR_MIN_IN
  const repairLimits = opts.repairLimits ?? DEFAULT_REPAIR_LIMITS
  const table = new FatTable(opts.db)
  await table.load()
  /**
   * What an op about to be applied did, told to the metrics once it is: counted from the log, so
   * every replica counts the same (read before, as applying a copy's op ends its transfer).
   */
  const appliedWork = (op: S.Op): (() => void) | undefined => {
    const metrics = opts.metrics as FatMetrics
    if (op.op === 'commit') {
      // read once applied: a staged file's chunks are only in the table then
      return () => { metrics.stored(op.tables.reduce((n, t) => n + table.health(t.fileId, () => true).stored, 0)) }
    }
    const copies = op.op === 'replace-replica' ? [op] : op.op === 'replaced' ? op.copies : []
    const done = copies.map(c => table.transfer(c.transferId)).filter(x => x != null)
    return done.length > 0 ? () => { for (const x of done) metrics.transferred(x.reason, x.size) } : undefined
  }
  const replication = await createReplication({
    node,
    db: opts.db,
    log,
    join: opts.join,
    joinSecret: opts.joinSecret,
    mayFound: opts.mayFound,
    position: () => table.position,
    electionMs: opts.electionMs,
    snapshotEntries: opts.snapshotEntries,
    onServed: opts.metrics?.served,
    apply: async entry => {
      const counted = opts.metrics != null ? appliedWork(entry.op) : undefined
      await table.apply(entry.index, entry.op)
      counted?.()
    },
    reload: async () => { await table.reload() },
    prefixes: TABLE_PREFIXES,
    digest: async () => await table.digest()
  })
  const serial = new Serial()
  const guard = new ReplayGuard()
  /** What the FAT knows of each vendor from its heartbeats alone; never logged. */
  const liveness = new Map<string, VendorLoad>()
  // three missed beats, and never less than a few seconds: a loaded machine delays heartbeats
  const silentMs = Math.max(opts.heartbeatMs * 3, 5000)
  const alive = (peer: string): boolean => Date.now() - (liveness.get(peer)?.lastSeen ?? 0) <= silentMs
  /** Known vendors not heard yet while their first heartbeats may still be on the way (this replica just started). */
  const awaitingVendors = (): boolean => Date.now() - startedAt < silentMs &&
    table.listVendors().some(v => v.state !== 'dead' && v.draining !== true && !liveness.has(v.peer))
  /** Offered for new data: alive, not draining, and below its own high-water mark. */
  const offered = (peer: string): boolean => alive(peer) && table.vendor(peer)?.draining !== true && (liveness.get(peer)?.room ?? 0) > 0
  /** The log holds it dead: its copies do not count until it is heard again. */
  const dead = (peer: string): boolean => table.vendor(peer)?.state === 'dead'
  const stateOf = (peer: string): VendorState => {
    const v = table.vendor(peer)
    if (v?.state === 'dead') return 'dead'
    if (v?.draining === true) return 'draining'
    if (!alive(peer)) return 'suspect'
    return v?.state === 'back' ? 'back' : 'alive'
  }
  /** Vendors the guard keeps from being declared dead, as of the last round. */
  let guardHeld: string[] = []
  /** Heartbeat history per vendor, for the availability users rank paths with (memory only). */
  const beats = new Liveness(opts.heartbeatMs, silentMs)
  /** The health and load figures the user ranks paths with. */
  const stats = (peer: string): M.VendorStats => ({
    vendor: peer,
    available: table.usage(peer).available,
    free: liveness.get(peer)?.free ?? 0,
    inflight: Math.min(1_000_000, liveness.get(peer)?.inflight ?? 0),
    availability: beats.availability(peer),
    zone: table.vendor(peer)?.zone
  })

  /** Every change goes through the replicated log: it counts once a majority of replicas holds it. */
  const propose = replication.propose
  const members = (): M.Replica[] => replication.members().map(m => ({ peer: m.peer, addrs: m.addrs }))
  const isReplica = (peer: string): boolean => replication.members().some(m => m.peer === peer)

  /** Hands a write to the replica that orders writes, waiting a little for one to be elected. */
  const forward = async (msg: M.Message<typeof REQUESTS[keyof typeof REQUESTS]>): Promise<object> => {
    const deadline = Date.now() + 5000
    for (;;) {
      const leader = replication.leader()
      if (leader != null && leader.peer !== self) {
        // a commit of a large file checks tens of thousands of receipts and logs megabytes: give it time
        return await call(node, { peer: leader.peer, addrs: leader.addrs }, FAT_PROTOCOL, msg, WRITES[msg.t], { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(msg.t === 'commit' || msg.t === 'commit-part' ? 120_000 : 20_000) }) as object
      }
      if (replication.isLeader()) {
        await replication.ready()
        return await handle(msg, (msg as { auth?: { owner: string } }).auth?.owner ?? self)
      }
      const cut = leader == null ? replication.cutOff() : undefined
      if (cut != null) throw new NoQuorumError(cut)
      if (Date.now() > deadline) throw new UnavailableError('no FAT replica orders writes right now (an election is under way, or a majority is unreachable); try again')
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  const signOrder = async (o: PendingOrder): Promise<M.Order> => await sign<M.Order>(key, 'order', { ...o, chunks: o.chunks, fat: self })
  const signTransfer = async (x: TransferRecord): Promise<M.Transfer> => {
    const { issued: _issued, ...body } = x
    return await sign<M.Transfer>(key, 'transfer', { ...body, fromAddrs: table.vendor(x.from)?.addrs ?? [], fat: self })
  }

  /**
   * Calls a vendor on the order protocol at the addresses the table holds; if none answers (a home
   * host's address changed), asks the DHT's peer routing where that peer id is now and tries there.
   */
  const callVendor = async (vendor: string, msg: object): Promise<void> => {
    const v = table.vendor(vendor)
    if (v == null) return
    const ask = async (addrs: string[]): Promise<void> => {
      await call(node, { peer: vendor, addrs }, ORDER_PROTOCOL, msg, { ok: M.Ok }, { maxReply: MAX_VENDOR_MESSAGE, signal: AbortSignal.timeout(10_000) })
    }
    try {
      await ask(v.addrs)
    } catch (err) {
      if (!(err instanceof UnreachableError) || !alive(vendor)) throw err
      const found = await node.peerRouting.findPeer(peerIdFromString(vendor), { signal: AbortSignal.timeout(5000) })
      const addrs = found.multiaddrs.map(a => a.toString()).filter(a => !v.addrs.includes(a))
      if (addrs.length === 0) throw err
      log('vendor %s found at %s through peer routing', vendor, addrs.join(' '))
      await ask(addrs)
    }
  }

  /** Sends a transfer order to its target now; if it does not answer, the order rides on its next heartbeat reply. */
  const pushTransfer = (x: TransferRecord): void => {
    void (async () => {
      await callVendor(x.to, { t: 'transfer', transfer: await signTransfer(x) })
    })().catch(err => { log('transfer %s to %s waits for its heartbeat: %s', x.id, x.to, err.message) })
  }

  /** Delivers orders now where the vendor answers; the rest ride on its next heartbeat reply. */
  const push = (orders: PendingOrder[]): void => {
    for (const o of orders) {
      // a silent vendor takes its orders with its next heartbeat
      if (table.vendor(o.vendor) == null || !alive(o.vendor)) continue
      void (async () => {
        await callVendor(o.vendor, { t: 'order', order: await signOrder(o) })
        await serial.run(async () => { await propose({ op: 'delivered', vendor: o.vendor, ids: [o.id] }) })
        log('order %s (%s %s) delivered to %s', o.id, o.kind, o.scope, o.vendor)
      })().catch(err => { log('order %s to %s waits for its heartbeat: %s', o.id, o.vendor, err.message) })
    }
  }

  /** Keep, on each vendor of the allocation, the chunks the final tables place there; erase the rest. */
  /** The reply to allocate and renew: the allocation's grants, signed for its lease. */
  const allocated = async (a: AllocationRecord): Promise<M.Message<typeof M.Allocated>> => {
    const candidates = await Promise.all(Object.entries(a.grants).map(async ([vendor, grantBytes]) => ({
      vendor,
      addrs: table.vendor(vendor)?.addrs ?? [],
      grant: await sign<M.Grant>(key, 'grant', { allocationId: a.allocationId, owner: a.owner, vendor, bytes: grantBytes, expires: a.expires, fat: self })
    })))
    return { t: 'allocated', allocationId: a.allocationId, fileIds: a.fileIds, expires: a.expires, candidates, stats: candidates.map(c => stats(c.vendor)) }
  }

  const vendorsOf = (tables: M.FileTable[]): M.VendorAddrs[] => {
    const ids = new Set(tables.flatMap(t => [...bytesPerVendor(t).keys()]))
    return [...ids].slice(0, 1024).map(v => ({ vendor: v, addrs: table.vendor(v)?.addrs ?? [] }))
  }

  /** Checks every replica's signed receipt of the chunk lines of `tables`. */
  const verifyReceipts = async (tables: Array<Pick<M.FileTable, 'fileId' | 'chunks'>>): Promise<void> => {
    let checked = 0
    for (const t of tables) {
      for (const c of t.chunks) {
        for (const r of c.replicas) await verify(r.vendor, 'receipt', { vendor: r.vendor, fileId: t.fileId, chunkId: c.id, size: c.size, sig: r.sig })
        // a large file has tens of thousands of receipts, seconds of checking: let timers and
        // the network run between them, or this replica misses its heartbeats and loses the lead
        if (++checked % 64 === 0) await new Promise(resolve => setImmediate(resolve))
      }
    }
  }

  const settleOrders = (a: AllocationRecord, tables: M.FileTable[]): PendingOrder[] =>
    Object.keys(a.grants).map(v => newOrder(v, 'settle', a.allocationId, settleKeep(tables, v)))

  const expireLeases = async (): Promise<void> => {
    if (!replication.isLeader()) return
    for (const a of table.expired(Date.now())) {
      const orders = settleOrders(a, [])
      await propose({ op: 'expire', allocationId: a.allocationId, orders })
      log('lease of %s expired uncommitted: %d vendors released', a.allocationId, orders.length)
      push(orders)
    }
  }
  const timer = setInterval(() => { serial.run(expireLeases).catch(err => log.error('lease expiry: %s', err.message)) }, Math.min(1000, opts.leaseMs / 2))

  /**
   * The leader's verdict on vendors' health, logged so the next leader starts from it: dead after
   * repair-after of silence (within the guard), back when a dead one is heard again (its queued
   * copies cancelled), in service again once it took its surplus erases.
   */
  const judge = async (now: number): Promise<void> => {
    const verdict = judgeVendors(table.listVendors().map(v => ({
      peer: v.peer,
      state: v.state,
      draining: v.draining === true,
      silentMs: now - Math.max(liveness.get(v.peer)?.lastSeen ?? 0, startedAt),
      // heard since its state was logged: a dead vendor's last heartbeat before it died is still
      // recent for a while (three beats) when --repair-after is short, and must not make it back
      heard: alive(v.peer) && (liveness.get(v.peer)?.lastSeen ?? 0) > (v.since ?? 0),
      holds: table.chunksOn(v.peer),
      ordersWaiting: table.ordersWaiting(v.peer)
    })), { repairAfterMs, minIn: repairMinIn })
    if (verdict.held.join() !== guardHeld.join() && verdict.held.length > 0) repairLog('guard: %d vendors silent past repair-after stay in service, so that %d%% of the known vendors remain: %s', verdict.held.length, Math.round(repairMinIn * 100), verdict.held.join(' '))
    guardHeld = verdict.held
    for (const v of verdict.dead) {
      await propose({ op: 'vendor-state', vendor: v, state: 'dead', at: now })
      repairLog('vendor %s is dead (silent for %d s): %d chunks to repair', v, Math.round(repairAfterMs / 1000), table.chunksOn(v))
    }
    for (const v of verdict.back) {
      await propose({ op: 'vendor-state', vendor: v, state: 'back', at: now })
      // its copies count again: the copies queued to replace them are no longer wanted
      const cancelled = table.listTransfers().filter(x => x.replaces === v && x.reason === 'repair')
      for (const x of cancelled) await endTransfer(x)
      repairLog('vendor %s is back: %d queued copies cancelled, %d orders (surplus erases) waiting for it', v, cancelled.length, table.ordersWaiting(v))
    }
    for (const v of verdict.in) {
      await propose({ op: 'vendor-state', vendor: v, state: 'in', at: now })
      repairLog('vendor %s took its surplus erases: in service again', v)
    }
  }

  const endTransfer = async (x: TransferRecord): Promise<void> => {
    const orders = unwantedCopy(x)
    await propose({ op: 'transfer-end', transferId: x.id, orders })
    push(orders)
  }

  /** Repair and migration: judge vendors, end stale transfers, then plan copies for dead, lost, over-full and draining vendors. */
  const rebalance = async (): Promise<void> => {
    if (!replication.isLeader()) return
    // a leader just elected plans once it has applied what earlier leaders committed
    try { await replication.ready() } catch { return }
    const now = Date.now()
    await judge(now)
    for (const x of table.listTransfers()) {
      if (x.expires > now) continue
      await endTransfer(x)
      log('transfer %s (%s of chunk %s to %s) expired', x.id, x.reason, x.chunkId, x.to)
    }
    const transfers = await planMoves(table, liveness, { alive, offered, dead, limits: repairLimits, now })
    for (let i = 0; i < transfers.length; i += MAX_TRANSFERS_PER_OP) {
      await propose({ op: 'transfers', transfers: transfers.slice(i, i + MAX_TRANSFERS_PER_OP) })
    }
    for (const x of transfers) {
      (x.reason === 'repair' ? repairLog : log)('transfer %s planned: %s chunk %s of %s from %s to %s, replacing %s', x.id, x.reason, x.chunkId, x.fileId, x.from, x.to, x.replaces)
      pushTransfer(x)
    }
  }
  /** An erase order for a transfer's copy, unless its target holds that chunk as a replica anyway. */
  const unwantedCopy = (x: TransferRecord): PendingOrder[] => {
    const isReplica = table.chunk(x.fileId, x.chunkId)?.holders.includes(x.to) ?? false
    return isReplica ? [] : [newOrder(x.to, 'erase-chunks', x.fileId, [], [x.chunkId])]
  }
  let rebalancing = false
  let again = false
  /** Runs a round now, or right after the one under way (a copy confirmed frees a slot for the next). */
  const kick = (): void => {
    if (rebalancing) { again = true; return }
    rebalancing = true
    serial.run(rebalance)
      .catch(err => { log.error('rebalance: %s', err.stack ?? err.message) })
      .finally(() => {
        rebalancing = false
        if (again) { again = false; setImmediate(kick) }
      })
  }
  const rebalanceTimer = setInterval(kick, opts.heartbeatMs)

  /** Confirmed copies waiting to be logged together. */
  let confirming: Array<{ x: M.Transfer, sig: string, resolve: () => void, reject: (err: Error) => void }> = []
  let confirmTimer: NodeJS.Timeout | undefined
  const confirm = async (x: M.Transfer, sig: string): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      confirming.push({ x, sig, resolve, reject })
      confirmTimer ??= setTimeout(() => { void flushConfirmations() }, CONFIRM_BATCH_MS)
    })
  }
  /**
   * Logs the copies confirmed since the last flush in one entry: each target takes the place of
   * the copy it replaces, and that copy's vendor is ordered to erase it (one order per file).
   */
  const flushConfirmations = async (): Promise<void> => {
    confirmTimer = undefined
    const batch = confirming.splice(0, MAX_TRANSFERS_PER_OP)
    if (confirming.length > 0) confirmTimer = setTimeout(() => { void flushConfirmations() }, 0)
    const settled: Array<() => void> = []
    try {
      await serial.run(async () => {
        const copies: Replaced[] = []
        const done = new Set<string>()
        for (const item of batch) {
          const t = item.x
          const x = table.transfer(t.id)
          if (x == null || x.to !== t.to || x.fileId !== t.fileId || x.chunkId !== t.chunkId || x.replaces !== t.replaces || done.has(x.id)) {
            // a confirmation that comes again (a transfer run twice, a reply lost) finds its copy in
            // the table already: the target must keep it, not drop it as unwanted
            if (table.chunk(t.fileId, t.chunkId)?.holders.includes(t.to) === true) settled.push(item.resolve)
            else settled.push(() => { item.reject(new NotFoundError(`no transfer ${t.id} is under way: it expired or its file was released`)) })
            continue
          }
          const holders = table.chunk(x.fileId, x.chunkId)?.holders ?? []
          if (x.to === x.replaces && holders.includes(x.to)) {
            // a replica restored onto its own vendor's other devices: replacing it by itself leaves
            // the table as it is, ends the transfer, and counts as a repair done; nothing to erase
            done.add(x.id)
            copies.push({ transferId: x.id, fileId: x.fileId, chunkId: x.chunkId, replaces: x.replaces, to: x.to, sig: item.sig })
            // the vendor's last heartbeat still names the chunk lost; its receipt says otherwise, so
            // the next planning round must not restore it again before the vendor reports afresh
            const load = liveness.get(x.to)
            if (load != null) {
              const other = (l: M.ChunkRef): boolean => l.fileId !== x.fileId || l.chunkId !== x.chunkId
              load.lost = load.lost.filter(other)
              load.restore = load.restore?.filter(other)
            }
            settled.push(item.resolve)
            continue
          }
          if (!holders.includes(x.replaces) || holders.includes(x.to)) {
            await endTransfer(x)
            settled.push(() => { item.reject(new NotFoundError(`transfer ${t.id} is no longer needed`)) })
            continue
          }
          done.add(x.id)
          copies.push({ transferId: x.id, fileId: x.fileId, chunkId: x.chunkId, replaces: x.replaces, to: x.to, sig: item.sig })
          settled.push(item.resolve)
        }
        if (copies.length === 0) return
        const erase = new Map<string, string[]>()
        for (const c of copies.filter(c => c.to !== c.replaces)) {
          const k = `${c.replaces}/${c.fileId}`
          erase.set(k, [...(erase.get(k) ?? []), c.chunkId])
        }
        const orders = [...erase].flatMap(([k, chunks]) => {
          const [vendor, fileId] = k.split('/')
          const out: PendingOrder[] = []
          for (let i = 0; i < chunks.length; i += MAX_CHUNK_LIST) out.push(newOrder(vendor, 'erase-chunks', fileId, [], chunks.slice(i, i + MAX_CHUNK_LIST)))
          return out
        })
        await propose({ op: 'replaced', copies, orders })
        for (const c of copies) log('transfer %s done: chunk %s of %s now on %s instead of %s', c.transferId, c.chunkId, c.fileId, c.to, c.replaces)
        push(orders)
      })
      for (const s of settled) s()
      kick()
    } catch (err: any) {
      for (const item of batch) item.reject(err)
    }
  }

  /** Health as repair counts it: a copy on a dead vendor, or one its vendor reports lost, does not count. */
  const healthy = (): ((vendor: string, c: ChunkInfo) => boolean) => healthyCopy(liveness, dead)

  const handlers: { [K in keyof typeof REQUESTS]: (msg: M.Message<typeof REQUESTS[K]>, remotePeer: string) => Promise<object> } = {
    async announce (msg, remotePeer) {
      const used = msg.devices.reduce((n, d) => d.failed ? n : n + Math.max(0, d.capacity - d.free), 0)
      liveness.set(remotePeer, { lastSeen: Date.now(), free: msg.free, inflight: msg.inflight, held: msg.held, room: msg.room, over: msg.over, mark: Math.max(0, used + msg.room - msg.over), lost: msg.lost, restore: msg.restore })
      beats.beat(remotePeer, msg.free, msg.inflight)
      // every replica hears every vendor; the one that orders writes logs what changed and owes the orders
      if (!replication.isLeader()) return { t: 'announced', heartbeatMs: opts.heartbeatMs, orders: [], fats: members(), transfers: [] }
      await serial.run(async () => {
        const rec = { peer: remotePeer, addrs: msg.addrs, capacity: msg.capacity, devices: msg.devices, joined: Date.now(), ...(msg.zone != null ? { zone: msg.zone } : {}) }
        if (table.vendorChanged(rec)) await propose({ op: 'vendor', vendor: rec })
        const pending = new Set((await table.pendingOrders(remotePeer, 10_000)).map(o => o.id))
        const done = msg.done.filter(id => pending.has(id))
        if (done.length > 0) await propose({ op: 'delivered', vendor: remotePeer, ids: done })
      })
      const orders = await Promise.all((await table.pendingOrders(remotePeer, ORDERS_PER_HEARTBEAT)).map(signOrder))
      const transfers = await Promise.all(table.listTransfers().filter(x => x.to === remotePeer).slice(0, TRANSFERS_PER_HEARTBEAT).map(signTransfer))
      return { t: 'announced', heartbeatMs: opts.heartbeatMs, orders, fats: members(), transfers }
    },

    async allocate (msg, remotePeer) {
      const started = performance.now()
      if (msg.sizes.length === 0) throw new InvalidArgumentError('an allocation needs at least one file')
      const bytes = msg.sizes.reduce((a, b) => a + b, 0)
      const leaseMs = opts.leaseMs + Math.ceil(bytes / 1048576) * (opts.leaseMsPerMiB ?? 1000)
      // a table the FAT will not keep is refused now, not after the bytes are uploaded
      checkCommitFits(msg.sizes, msg.chunkSize, msg.replicas, msg.packed)
      const plan = async (): Promise<AllocationRecord> => await serial.run(async () => {
        const planned = table.planAllocation(remotePeer, msg.sizes, msg.replicas, msg.chunkSize, Date.now() + leaseMs, offered, msg.packed)
        await propose({ op: 'allocate', allocation: planned })
        return planned
      })
      let a: AllocationRecord
      for (;;) {
        try {
          a = await plan()
          break
        } catch (err) {
          // a replica that has just started has not heard its vendors yet: it waits for their
          // first heartbeats rather than tell the user the network is full
          if (!(err instanceof NoSpaceError) || !awaitingVendors()) throw err
          await new Promise(resolve => setTimeout(resolve, 200))
        }
      }
      log('allocated %s: %d files, %d bytes x%d for %s on %d candidates', a.allocationId, a.sizes.length, bytes, a.replicas, remotePeer, Object.keys(a.grants).length)
      opts.metrics?.allocated((performance.now() - started) / 1000)
      return await allocated(a)
    },

    async renew (msg, remotePeer) {
      const a = await serial.run(async () => {
        const open = table.allocation(msg.allocationId)
        if (open == null || open.expires <= Date.now()) throw new NotFoundError(`no open allocation ${msg.allocationId}: it was committed already, or its lease ended; upload again`)
        if (open.owner !== remotePeer) throw new AccessDeniedError(`allocation ${msg.allocationId} belongs to another user`)
        const expires = Math.max(open.expires, Date.now() + opts.leaseMs)
        await propose({ op: 'renew', allocationId: open.allocationId, expires })
        return { ...open, expires }
      })
      log('renewed %s until %s', a.allocationId, new Date(a.expires).toISOString())
      return await allocated(a)
    },

    async commit (msg, remotePeer) {
      const started = performance.now()
      await serial.run(async () => {
        // a staged file comes without chunks: its lines are the parts its commit-part requests staged
        const staged = new Set(msg.staged ?? [])
        if (staged.size !== (msg.staged ?? []).length || [...staged].some(id => !msg.tables.some(t => t.fileId === id))) throw new InvalidArgumentError('staged: each file must be listed once, and have its table in the commit')
        const tables: M.FileTable[] = []
        for (const t of msg.tables) {
          if (!staged.has(t.fileId)) { tables.push(t); continue }
          if (t.chunks.length > 0) throw new InvalidArgumentError(`file ${t.fileId} is listed in staged and carries chunks: send its chunk lines in commit-part requests only`)
          tables.push({ ...t, chunks: await table.stagedChunks(msg.allocationId, t.fileId) })
        }
        const a = table.checkCommit(remotePeer, msg.allocationId, tables)
        // staged lines had their receipts checked by commit-part
        await verifyReceipts(msg.tables.filter(t => !staged.has(t.fileId)))
        const orders = settleOrders(a, tables)
        // one log entry, which must fit in one message to the other replicas: staged files are
        // logged without their lines (apply reads them from the parts), and propose refuses a
        // larger entry with a LimitError
        await propose({ op: 'commit' as const, allocationId: a.allocationId, tables: msg.tables, ...(staged.size > 0 ? { staged: [...staged] } : {}), orders: orders.map(o => ({ ...o, keep: [] })) })
        push(orders)
      })
      log('committed %s (%d files, %d staged) for %s', msg.allocationId, msg.tables.length, msg.staged?.length ?? 0, remotePeer)
      opts.metrics?.committed((performance.now() - started) / 1000)
      return { t: 'ok' }
    },

    async 'commit-part' (msg, remotePeer) {
      await serial.run(async () => {
        const a = table.checkPart(remotePeer, msg.allocationId, msg.fileId, msg.first, msg.chunks)
        for (const p of await table.stagedParts(a.allocationId, msg.fileId)) {
          // the same part sent again replaces itself; parts that overlap would stage lines twice
          if (p.first !== msg.first && p.first < msg.first + msg.chunks.length && msg.first < p.first + p.chunks.length) {
            throw new InvalidArgumentError(`file ${msg.fileId}: chunk lines ${msg.first}-${msg.first + msg.chunks.length - 1} overlap a part staged from ${p.first}`)
          }
        }
        await verifyReceipts([{ fileId: msg.fileId, chunks: msg.chunks }])
        await propose({ op: 'commit-part', allocationId: a.allocationId, fileId: msg.fileId, first: msg.first, chunks: msg.chunks })
      })
      log('staged chunk lines %d-%d of %s under %s', msg.first, msg.first + msg.chunks.length - 1, msg.fileId, msg.allocationId)
      return { t: 'ok' }
    },

    async get (msg, remotePeer) {
      const whole = await table.file(remotePeer, msg.fileId)
      const from = msg.from ?? 0
      if (from > 0 && from >= whole.chunks.length) throw new InvalidArgumentError(`from: file ${msg.fileId} has ${whole.chunks.length} chunk lines, none from ${from}`)
      const { table: t, next } = tablePage(whole, from)
      const pack = t.packed != null ? await table.file(remotePeer, t.packed.pack) : undefined
      // the vendors of the whole table, on every page: the download needs them all
      const vendors = vendorsOf([whole, ...(pack != null ? [pack] : [])])
      return { t: 'table', table: t, ...(pack != null ? { pack } : {}), ...(next != null ? { next } : {}), vendors, stats: vendors.map(v => stats(v.vendor)) }
    },

    async 'get-many' (msg, remotePeer) {
      const tables: M.FileTable[] = []
      const wholes: M.FileTable[] = []
      const packs = new Map<string, M.FileTable>()
      let bytes = 0
      let next: number | undefined
      for (const fileId of msg.fileIds) {
        const whole = await table.file(remotePeer, fileId)
        const pack = whole.packed != null && !packs.has(whole.packed.pack) ? await table.file(remotePeer, whole.packed.pack) : undefined
        // a table larger than a page goes alone, as its first page (the rest through get)
        const page = tablePage(whole)
        bytes += encode(page.table).byteLength + (pack != null ? encode(pack).byteLength : 0)
        if (tables.length > 0 && (bytes > TABLES_BUDGET || page.next != null)) break
        tables.push(page.table)
        wholes.push(whole)
        if (pack != null) packs.set(pack.fileId, pack)
        if (page.next != null) { next = page.next; break }
      }
      const vendors = vendorsOf([...wholes, ...packs.values()])
      return { t: 'tables', tables, packs: [...packs.values()], ...(next != null ? { next } : {}), vendors, stats: vendors.map(v => stats(v.vendor)) }
    },

    async list (_msg, remotePeer) {
      return { t: 'files', files: await table.files(remotePeer, healthy()) }
    },

    async check (msg, remotePeer) {
      const only = msg.fileIds.length > 0 ? new Set(msg.fileIds) : undefined
      const files = await table.files(remotePeer, healthy(), only)
      const found = new Set(files.map(f => f.fileId))
      return { t: 'checked', files, missing: msg.fileIds.filter(id => !found.has(id)) }
    },

    async release (msg, remotePeer) {
      const freed = await serial.run(async () => {
        const t = await table.file(remotePeer, msg.fileId)
        if (t.kind === 'pack') throw new InvalidArgumentError(`file ${t.fileId} is a pack of small files: it goes with the last of them`)
        // the last file of a pack frees the pack's chunks
        const gone = t.packed != null && table.membersOf(t.packed.pack) <= 1 ? await table.file(remotePeer, t.packed.pack) : t
        const perVendor = bytesPerVendor(gone)
        const orders = [...perVendor.keys()].map(v => newOrder(v, 'erase', gone.fileId, []))
        await propose({ op: 'release', fileId: t.fileId, orders })
        push(orders)
        return [...perVendor.values()].reduce((a, b) => a + b, 0)
      })
      log('released %s for %s: %d bytes', msg.fileId, remotePeer, freed)
      return { t: 'released', fileId: msg.fileId, freed }
    },

    async copied (msg) {
      // the target's signed receipt is the confirmation, whoever carries it (a replica may hand it on)
      const { transfer: t, receipt } = msg
      if (receipt.vendor !== t.to) throw new AccessDeniedError('the receipt is not signed by the transfer\'s target')
      await verify(t.to, 'receipt', receipt)
      if (receipt.fileId !== t.fileId || receipt.chunkId !== t.chunkId || receipt.size !== t.size) {
        throw new InvalidArgumentError('the receipt does not match the transfer')
      }
      await confirm(t, receipt.sig)
      return { t: 'ok' }
    },

    async drain (msg) {
      if (msg.auth.owner !== msg.vendor) throw new AccessDeniedError('a drain request must be signed by the vendor it drains')
      const bytes = await serial.run(async () => {
        if (table.vendor(msg.vendor) == null) throw new NotFoundError(`no vendor ${msg.vendor} has announced itself to this FAT`)
        if (table.vendor(msg.vendor)?.draining !== true) await propose({ op: 'drain', vendor: msg.vendor })
        return table.usage(msg.vendor).used
      })
      log('vendor %s drains: %d bytes to move', msg.vendor, bytes)
      return { t: 'draining', vendor: msg.vendor, bytes }
    },

    async status () {
      const moving = new Map<string, number>()
      for (const x of table.listTransfers()) for (const v of new Set([x.from, x.to])) moving.set(v, (moving.get(v) ?? 0) + 1)
      const vendors = table.listVendors().map(v => {
        const u = table.usage(v.peer)
        const l = liveness.get(v.peer)
        return {
          vendor: v.peer,
          addrs: v.addrs,
          capacity: v.capacity,
          used: u.used,
          locked: u.locked,
          available: u.available,
          devices: v.devices,
          lastSeen: l?.lastSeen ?? 0,
          alive: alive(v.peer),
          draining: v.draining === true,
          held: l?.held ?? 0,
          over: l?.over ?? 0,
          lost: l?.lost.length ?? 0,
          transfers: moving.get(v.peer) ?? 0,
          free: l?.free ?? 0,
          inflight: Math.min(1_000_000, l?.inflight ?? 0),
          availability: beats.availability(v.peer),
          state: stateOf(v.peer),
          ...(v.zone != null ? { zone: v.zone } : {})
        }
      })
      const repairing = new Set(table.listTransfers().filter(x => x.reason === 'repair').map(x => `${x.fileId}/${x.chunkId}`))
      const chunks: ChunkInfo[] = []
      for await (const c of atRisk(table, liveness, dead)) chunks.push(c)
      // the planner's own count of what needs copies; the copies it would plan are not used here
      const plan = planRepair({ chunks, healthy: healthy(), canServe: () => false, targets: [], zoneOf: () => undefined, sourcing: new Map(), receiving: new Map(), moving: repairing, limits: { ...repairLimits, perRound: 0 } })
      const total = table.chunkCount()
      const repaired = table.repairedSoFar()
      const repair: M.RepairStatus = { chunks: total, healthy: total - plan.under - plan.lost, under: plan.under, lost: plan.lost, queued: plan.queued, moving: repairing.size, copies: repaired.copies, bytes: repaired.bytes, held: guardHeld }
      const replicas = await Promise.all(replication.members().map(async m => {
        let p: ProbeReply | undefined
        try {
          p = m.peer === self
            ? { t: 'probe-reply', ...replication.state(), digest: await table.digest() }
            : await call(node, { peer: m.peer, addrs: m.addrs }, FAT_SYNC_PROTOCOL, { t: 'probe', digest: true }, { 'probe-reply': S.ProbeReply }, { maxReply: MAX_VENDOR_MESSAGE, signal: AbortSignal.timeout(3000) })
        } catch {}
        return { peer: m.peer, addrs: m.addrs, reachable: p != null, leader: p != null && p.leader === m.peer, term: p?.term ?? 0, applied: p?.applied ?? 0, digest: p?.digest ?? '' }
      }))
      const own = replicas.find(r => r.peer === self)
      return { t: 'status-reply', fat: self, position: table.position, digest: own?.digest ?? await table.digest(), replicas, vendors, files: table.fileCount(), allocations: table.allocationCount(), repair }
    },

    async 'write-records' (msg, remotePeer) {
      // checked and logged in the write queue, so a condition holds when its op applies
      const applied = await serial.run(async () => {
        if (msg.expect != null && !await table.records.holds(remotePeer, msg.expect)) return false
        await table.records.checkLimit(remotePeer, msg.writes)
        if (msg.writes.length > 0) await propose({ op: 'records', owner: remotePeer, writes: msg.writes })
        return true
      })
      return { t: 'records-written', applied }
    },

    async 'get-records' (msg, remotePeer) {
      const records: Array<{ id: string, value: string }> = []
      for (const id of new Set(msg.ids)) {
        const value = await table.records.get(remotePeer, msg.scope, id)
        if (value != null) records.push({ id, value })
      }
      return { t: 'record-list', records, more: false }
    },

    async 'list-records' (msg, remotePeer) {
      const { records, more } = await table.records.list(remotePeer, msg.scope, msg.after, msg.limit ?? M.MAX_RECORDS_LISTED)
      return { t: 'record-list', records, more }
    },

    async members () {
      return { t: 'members-reply', leader: replication.leader()?.peer ?? '', members: members() }
    }
  }

  const handle = async (msg: M.Message<typeof REQUESTS[keyof typeof REQUESTS]>, requester: string): Promise<object> =>
    await (handlers[msg.t] as (m: typeof msg, p: string) => Promise<object>)(msg, requester)

  await serve(node, FAT_PROTOCOL, { checks: REQUESTS, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 256, timeoutMs: 60_000, log, unlimited: isReplica, onServed: opts.metrics?.served }, async ({ msg, remotePeer }) => {
    let requester = remotePeer
    if ('auth' in msg) {
      // requests on a user's files are signed by that user, fresh and never seen before; another
      // replica may hand one on, the user's signature travelling with it
      requester = msg.auth.owner
      // a drain request is signed by the vendor it drains, whoever carries it
      if (requester !== remotePeer && !isReplica(remotePeer) && msg.t !== 'drain') throw new AccessDeniedError('the request is signed by another peer than the one that sent it')
      await guard.check(msg, requester)
    }
    if (Object.hasOwn(WRITES, msg.t)) {
      if (!replication.isLeader()) {
        // a write another replica handed on is not handed on again: stale leader hints must not loop
        if (isReplica(remotePeer)) throw new UnavailableError('this FAT replica no longer orders writes; try again')
        return await forward(msg)
      }
      await replication.ready()
    } else if (msg.t === 'get' || msg.t === 'get-many' || msg.t === 'list' || msg.t === 'get-records' || msg.t === 'list-records') {
      await replication.caughtUp()
    }
    return await handle(msg, requester)
  })

  const overview = overviewOf({ self, table, replication, loads: liveness, availability: peer => beats.availability(peer), alive, offered })
  return {
    table,
    replication,
    overview,
    health: () => replication.leader() != null
      ? { ok: true, reason: replication.isLeader() ? 'this replica orders writes' : `replica ${replication.leader()?.peer ?? ''} orders writes` }
      : { ok: false, reason: `no replica orders writes: ${replication.cutOff() ?? 'an election is under way, or a majority of the replicas is unreachable'}` },
    async stop () {
      clearInterval(timer)
      clearInterval(rebalanceTimer)
      clearTimeout(confirmTimer)
      await replication.stop()
      await node.unhandle(FAT_PROTOCOL)
      await serial.run(async () => {})
    }
  }
}
