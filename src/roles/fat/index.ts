import { randomBytes } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { AccessDeniedError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { FAT_PROTOCOL, MAX_FAT_MESSAGE, MAX_VENDOR_MESSAGE, ORDER_PROTOCOL } from '../../protocol/ids.ts'
import * as M from '../../protocol/messages.ts'
import { call, serve } from '../../protocol/rpc.ts'
import { sign, verify } from '../../protocol/sign.ts'
import { ReplayGuard } from '../../protocol/auth.ts'
import type { StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import { Serial } from '../../serial.ts'
import { FatTable, bytesPerVendor, type PendingOrder } from './table.ts'

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

/** The File Allocation Table service: vendors' resources in, provisional grants out, final tables kept. */
export async function createFat (opts: FatOptions): Promise<Fat> {
  const { node, log, key } = opts
  const self = node.peerId.toString()
  const table = new FatTable(opts.db)
  await table.load()
  const serial = new Serial()
  const silentMs = opts.heartbeatMs * 3
  const alive = (peer: string): boolean => table.isAlive(peer, Date.now(), silentMs)

  const signOrder = async (o: PendingOrder): Promise<M.Order> => await sign<M.Order>(key, 'order', { ...o, fat: self })

  const newOrder = (vendor: string, kind: PendingOrder['kind'], fileId: string, keep: string[]): PendingOrder =>
    ({ id: randomBytes(16).toString('hex'), vendor, kind, fileId, keep, issued: Date.now() })

  /** Delivers orders now where the vendor answers; the rest ride on its next heartbeat reply. */
  const push = (orders: PendingOrder[]): void => {
    for (const o of orders) {
      const v = table.vendor(o.vendor)
      if (v == null) continue
      void (async () => {
        const order = await signOrder(o)
        await call(node, { peer: v.peer, addrs: v.addrs }, ORDER_PROTOCOL, { t: 'order', order }, { ok: M.Ok }, { maxReply: MAX_VENDOR_MESSAGE, signal: AbortSignal.timeout(10_000) })
        await table.orderDone(o.vendor, [o.id])
        log('order %s (%s %s) delivered to %s', o.id, o.kind, o.fileId, o.vendor)
      })().catch(err => { log('order %s to %s waits for its heartbeat: %s', o.id, o.vendor, err.message) })
    }
  }

  const settleOrders = (a: { fileId: string, grants: Record<string, number> }, t?: M.FileTable): PendingOrder[] =>
    Object.keys(a.grants).map(v => newOrder(v, 'settle', a.fileId, t?.chunks.filter(c => c.replicas.some(r => r.vendor === v)).map(c => c.id) ?? []))

  const expireLeases = async (): Promise<void> => {
    for (const a of table.expired(Date.now())) {
      const orders = settleOrders(a)
      await table.expire(a.fileId, orders)
      log('lease of %s expired uncommitted: %d vendors released', a.fileId, orders.length)
      push(orders)
    }
  }
  const timer = setInterval(() => { serial.run(expireLeases).catch(err => log.error('lease expiry: %s', err.message)) }, Math.min(1000, opts.leaseMs / 2))

  const guard = new ReplayGuard()

  await serve(node, FAT_PROTOCOL, { checks: REQUESTS, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 256, timeoutMs: 60_000, log }, async ({ msg, remotePeer }) => {
    // requests on a user's files must be signed by that user, fresh and never seen before
    if ('auth' in msg) await guard.check(msg, remotePeer)
    switch (msg.t) {
      case 'announce': {
        const now = Date.now()
        table.seen(remotePeer, now)
        await serial.run(async () => {
          await table.upsertVendor({ peer: remotePeer, addrs: msg.addrs, capacity: msg.capacity, free: msg.free, devices: msg.devices, inflight: msg.inflight, joined: now })
          await table.orderDone(remotePeer, msg.done)
        })
        const orders = await Promise.all((await table.pendingOrders(remotePeer, ORDERS_PER_HEARTBEAT)).map(signOrder))
        return { t: 'announced', heartbeatMs: opts.heartbeatMs, orders }
      }
      case 'allocate': {
        const leaseMs = opts.leaseMs + Math.ceil(msg.bytes / 1048576) * (opts.leaseMsPerMiB ?? 1000)
        const a = await serial.run(async () => await table.allocate(remotePeer, msg.bytes, msg.replicas, msg.chunkSize, Date.now() + leaseMs, alive))
        const candidates = await Promise.all(Object.entries(a.grants).map(async ([vendor, bytes]) => ({
          vendor,
          addrs: table.vendor(vendor)?.addrs ?? [],
          grant: await sign<M.Grant>(key, 'grant', { fileId: a.fileId, owner: remotePeer, vendor, bytes, expires: a.expires, fat: self })
        })))
        log('allocated %s: %d bytes x%d for %s on %d candidates', a.fileId, a.bytes, a.replicas, remotePeer, candidates.length)
        return { t: 'allocated', fileId: a.fileId, expires: a.expires, candidates }
      }
      case 'commit': {
        const t = msg.table
        await serial.run(async () => {
          const a = table.checkCommit(remotePeer, t)
          for (const c of t.chunks) {
            for (const r of c.replicas) await verify(r.vendor, 'receipt', { vendor: r.vendor, fileId: t.fileId, chunkId: c.id, size: c.size, sig: r.sig })
          }
          const orders = settleOrders(a, t)
          await table.commit(t, orders)
          push(orders)
        })
        log('committed %s (%d chunks) for %s', t.fileId, t.chunks.length, remotePeer)
        return { t: 'ok' }
      }
      case 'get': {
        const t = await table.file(remotePeer, msg.fileId)
        const vendors = [...bytesPerVendor(t).keys()].map(v => ({ vendor: v, addrs: table.vendor(v)?.addrs ?? [] }))
        return { t: 'table', table: t, vendors }
      }
      case 'list':
        return { t: 'files', files: await table.files(remotePeer) }
      case 'release': {
        const freed = await serial.run(async () => {
          const t = await table.file(remotePeer, msg.fileId)
          const orders = [...bytesPerVendor(t).keys()].map(v => newOrder(v, 'erase', t.fileId, []))
          const n = await table.release(t, orders)
          push(orders)
          return n
        })
        log('released %s for %s: %d bytes', msg.fileId, remotePeer, freed)
        return { t: 'released', fileId: msg.fileId, freed }
      }
      case 'status': {
        const now = Date.now()
        const vendors = table.listVendors().map(v => {
          const u = table.usage(v.peer)
          return { vendor: v.peer, addrs: v.addrs, capacity: v.capacity, used: u.used, locked: u.locked, available: u.available, devices: v.devices, lastSeen: u.lastSeen, alive: table.isAlive(v.peer, now, silentMs) }
        })
        return { t: 'status-reply', fat: self, vendors, files: table.fileCount(), allocations: table.allocationCount() }
      }
    }
    throw new AccessDeniedError('unexpected request')
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
