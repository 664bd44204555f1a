import type { PrivateKey } from '@libp2p/interface'
import { InvalidArgumentError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { FAT_PROTOCOL, MAX_FAT_MESSAGE, MAX_VENDOR_MESSAGE, ORDER_PROTOCOL } from '../../protocol/ids.ts'
import * as M from '../../protocol/messages.ts'
import { call, serve } from '../../protocol/rpc.ts'
import { sign, verify } from '../../protocol/sign.ts'
import { ReplayGuard } from '../../protocol/auth.ts'
import type { StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import { Serial } from '../../serial.ts'
import { FatTable, bytesPerVendor, newOrder, type AllocationRecord, type Op, type PendingOrder } from './table.ts'

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
}

export interface Fat {
  readonly table: FatTable
  stop: () => Promise<void>
}

/** Orders carried by one heartbeat reply; the rest follow on the next beats. */
const ORDERS_PER_HEARTBEAT = 200

const REQUESTS = { announce: M.Announce, allocate: M.Allocate, commit: M.Commit, get: M.GetTable, list: M.List, release: M.Release, status: M.Status }

/** What a FAT knows of a vendor from its heartbeats alone; never logged. */
interface Liveness { lastSeen: number, free: number, inflight: number }

/** The File Allocation Table service: vendors' resources in, provisional grants out, final tables kept. */
export async function createFat (opts: FatOptions): Promise<Fat> {
  const { node, log, key } = opts
  const self = node.peerId.toString()
  const table = new FatTable(opts.db)
  await table.load()
  const serial = new Serial()
  const guard = new ReplayGuard()
  const liveness = new Map<string, Liveness>()
  const silentMs = opts.heartbeatMs * 3
  const alive = (peer: string): boolean => Date.now() - (liveness.get(peer)?.lastSeen ?? 0) <= silentMs

  /** Every change goes through here, one at a time, in log order. */
  const propose = async (op: Op): Promise<void> => { await table.apply(table.position + 1, op) }

  const signOrder = async (o: PendingOrder): Promise<M.Order> => await sign<M.Order>(key, 'order', { ...o, fat: self })

  /** Delivers orders now where the vendor answers; the rest ride on its next heartbeat reply. */
  const push = (orders: PendingOrder[]): void => {
    for (const o of orders) {
      const v = table.vendor(o.vendor)
      if (v == null) continue
      void (async () => {
        const order = await signOrder(o)
        await call(node, { peer: v.peer, addrs: v.addrs }, ORDER_PROTOCOL, { t: 'order', order }, { ok: M.Ok }, { maxReply: MAX_VENDOR_MESSAGE, signal: AbortSignal.timeout(10_000) })
        await serial.run(async () => { await propose({ op: 'delivered', vendor: o.vendor, ids: [o.id] }) })
        log('order %s (%s %s) delivered to %s', o.id, o.kind, o.scope, o.vendor)
      })().catch(err => { log('order %s to %s waits for its heartbeat: %s', o.id, o.vendor, err.message) })
    }
  }

  /** Keep, on each vendor of the allocation, the chunks the final tables place there; erase the rest. */
  const settleOrders = (a: AllocationRecord, tables: M.FileTable[]): PendingOrder[] =>
    Object.keys(a.grants).map(v => newOrder(v, 'settle', a.allocationId,
      tables.flatMap(t => t.chunks.filter(c => c.replicas.some(r => r.vendor === v)).map(c => c.id))))

  const expireLeases = async (): Promise<void> => {
    for (const a of table.expired(Date.now())) {
      const orders = settleOrders(a, [])
      await propose({ op: 'expire', allocationId: a.allocationId, orders })
      log('lease of %s expired uncommitted: %d vendors released', a.allocationId, orders.length)
      push(orders)
    }
  }
  const timer = setInterval(() => { serial.run(expireLeases).catch(err => log.error('lease expiry: %s', err.message)) }, Math.min(1000, opts.leaseMs / 2))

  const handlers: { [K in keyof typeof REQUESTS]: (msg: M.Message<typeof REQUESTS[K]>, remotePeer: string) => Promise<object> } = {
    async announce (msg, remotePeer) {
      liveness.set(remotePeer, { lastSeen: Date.now(), free: msg.free, inflight: msg.inflight })
      await serial.run(async () => {
        const rec = { peer: remotePeer, addrs: msg.addrs, capacity: msg.capacity, devices: msg.devices, joined: Date.now() }
        if (table.vendorChanged(rec)) await propose({ op: 'vendor', vendor: rec })
        const pending = new Set((await table.pendingOrders(remotePeer, 10_000)).map(o => o.id))
        const done = msg.done.filter(id => pending.has(id))
        if (done.length > 0) await propose({ op: 'delivered', vendor: remotePeer, ids: done })
      })
      const orders = await Promise.all((await table.pendingOrders(remotePeer, ORDERS_PER_HEARTBEAT)).map(signOrder))
      return { t: 'announced', heartbeatMs: opts.heartbeatMs, orders }
    },

    async allocate (msg, remotePeer) {
      if (msg.sizes.length === 0) throw new InvalidArgumentError('an allocation needs at least one file')
      const bytes = msg.sizes.reduce((a, b) => a + b, 0)
      const leaseMs = opts.leaseMs + Math.ceil(bytes / 1048576) * (opts.leaseMsPerMiB ?? 1000)
      const a = await serial.run(async () => {
        const planned = table.planAllocation(remotePeer, msg.sizes, msg.replicas, msg.chunkSize, Date.now() + leaseMs, alive)
        await propose({ op: 'allocate', allocation: planned })
        return planned
      })
      const candidates = await Promise.all(Object.entries(a.grants).map(async ([vendor, grantBytes]) => ({
        vendor,
        addrs: table.vendor(vendor)?.addrs ?? [],
        grant: await sign<M.Grant>(key, 'grant', { allocationId: a.allocationId, owner: remotePeer, vendor, bytes: grantBytes, expires: a.expires, fat: self })
      })))
      log('allocated %s: %d files, %d bytes x%d for %s on %d candidates', a.allocationId, a.sizes.length, bytes, a.replicas, remotePeer, candidates.length)
      return { t: 'allocated', allocationId: a.allocationId, fileIds: a.fileIds, expires: a.expires, candidates }
    },

    async commit (msg, remotePeer) {
      await serial.run(async () => {
        const a = table.checkCommit(remotePeer, msg.allocationId, msg.tables)
        for (const t of msg.tables) {
          for (const c of t.chunks) {
            for (const r of c.replicas) await verify(r.vendor, 'receipt', { vendor: r.vendor, fileId: t.fileId, chunkId: c.id, size: c.size, sig: r.sig })
          }
        }
        const orders = settleOrders(a, msg.tables)
        await propose({ op: 'commit', allocationId: a.allocationId, tables: msg.tables, orders })
        push(orders)
      })
      log('committed %s (%d files) for %s', msg.allocationId, msg.tables.length, remotePeer)
      return { t: 'ok' }
    },

    async get (msg, remotePeer) {
      const t = await table.file(remotePeer, msg.fileId)
      const vendors = [...bytesPerVendor(t).keys()].map(v => ({ vendor: v, addrs: table.vendor(v)?.addrs ?? [] }))
      return { t: 'table', table: t, vendors }
    },

    async list (_msg, remotePeer) {
      return { t: 'files', files: await table.files(remotePeer) }
    },

    async release (msg, remotePeer) {
      const freed = await serial.run(async () => {
        const t = await table.file(remotePeer, msg.fileId)
        const perVendor = bytesPerVendor(t)
        const orders = [...perVendor.keys()].map(v => newOrder(v, 'erase', t.fileId, []))
        await propose({ op: 'release', fileId: t.fileId, orders })
        push(orders)
        return [...perVendor.values()].reduce((a, b) => a + b, 0)
      })
      log('released %s for %s: %d bytes', msg.fileId, remotePeer, freed)
      return { t: 'released', fileId: msg.fileId, freed }
    },

    async status () {
      const vendors = table.listVendors().map(v => {
        const u = table.usage(v.peer)
        return { vendor: v.peer, addrs: v.addrs, capacity: v.capacity, used: u.used, locked: u.locked, available: u.available, devices: v.devices, lastSeen: liveness.get(v.peer)?.lastSeen ?? 0, alive: alive(v.peer) }
      })
      return { t: 'status-reply', fat: self, position: table.position, digest: await table.digest(), vendors, files: table.fileCount(), allocations: table.allocationCount() }
    }
  }

  await serve(node, FAT_PROTOCOL, { checks: REQUESTS, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 256, timeoutMs: 60_000, log }, async ({ msg, remotePeer }) => {
    // requests on a user's files must be signed by that user, fresh and never seen before
    if ('auth' in msg) await guard.check(msg, remotePeer)
    return await (handlers[msg.t] as (m: typeof msg, p: string) => Promise<object>)(msg, remotePeer)
  })

  return {
    table,
    async stop () {
      clearInterval(timer)
      await node.unhandle(FAT_PROTOCOL)
      await serial.run(async () => {})
    }
  }
}
