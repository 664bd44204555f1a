import { randomBytes } from 'node:crypto'
import type { ChunkRef } from '../../protocol/messages.ts'
import { chunkKey, type ChunkInfo, type FatTable, type TransferRecord } from './table.ts'
import { planRepair, type RepairLimits } from './repair.ts'

/** What a FAT knows of a vendor from its last heartbeat; memory only. */
export interface VendorLoad {
  lastSeen: number
  free: number
  inflight: number
  held: number
  /** bytes it may take before its high-water mark */
  room: number
  /** bytes above its high-water mark */
  over: number
  /** its high-water mark in bytes (its disks' use plus `room`, less `over`) */
  mark: number
  /** chunks it found corrupt or missing */
  lost: ChunkRef[]
  /** of those, chunks it can take back itself (lost with a failed device, with room on its other devices) */
  restore?: ChunkRef[]
}

export interface PlanContext {
  alive: (peer: string) => boolean
  /** May take new data: alive, not draining, not full. */
  offered: (peer: string) => boolean
  /** The log holds it dead: its copies do not count. */
  dead: (peer: string) => boolean
  limits: RepairLimits
  now: number
}

/** Transfers one vendor may take part in at once (as source or target) for migration. */
export const MAX_TRANSFERS_PER_VENDOR = 8

/** How long a transfer order is valid: time for a slow copy, after which it is planned again. */
export function transferLifetime (size: number): number {
  return 30_000 + Math.ceil(size / 1048576) * 2000
}

/** Chunks looked at between two yields to the event loop while gathering a backlog. */
const YIELD_EVERY = 2000

/** The chunks that may need repair: those on dead vendors and those vendors report lost. */
export async function * atRisk (table: FatTable, loads: Map<string, VendorLoad>, dead: (peer: string) => boolean): AsyncGenerator<ChunkInfo> {
  let n = 0
  for (const v of table.listVendors()) {
    if (!dead(v.peer)) continue
    for (const c of table.chunksOf(v.peer)) {
      yield c
      // a backlog of many thousands must not hold the event loop: uploads wait behind it
      if (++n % YIELD_EVERY === 0) await new Promise(resolve => setImmediate(resolve))
    }
  }
  for (const load of loads.values()) {
    for (const ref of load.lost) {
      const c = table.chunk(ref.fileId, ref.chunkId)
      if (c != null) yield c
    }
  }
}

/** A copy counts unless its vendor is dead or reports it lost. */
export function healthyCopy (loads: Map<string, VendorLoad>, dead: (peer: string) => boolean): (vendor: string, c: { fileId: string, chunkId: string }) => boolean {
  const lost = new Set<string>()
  for (const [v, load] of loads) for (const ref of load.lost) lost.add(`${v}/${ref.fileId}/${ref.chunkId}`)
  return (vendor, c) => !dead(vendor) && (lost.size === 0 || !lost.has(`${vendor}/${c.fileId}/${c.chunkId}`))
}

/**
 * Plans this round's copies, most urgent first: repair (chunks with fewer healthy copies than
 * their file asked for, on dead vendors or reported lost; see repair.ts), then chunks of draining
 * vendors, then of vendors over their high-water mark (migration, from the vendor itself). Each
 * copy goes to an offered vendor with room that holds no replica of that chunk; no chunk has two
 * transfers at once, and no vendor more than a few.
 */
export async function planMoves (table: FatTable, loads: Map<string, VendorLoad>, ctx: PlanContext): Promise<TransferRecord[]> {
  const sourcing = new Map<string, number>()
  const receiving = new Map<string, number>()
  const incoming = new Map<string, number>()
  const outgoing = new Map<string, number>()
  const moving = new Set<string>()
  const bump = (m: Map<string, number>, k: string, n: number): void => { m.set(k, (m.get(k) ?? 0) + n) }
  for (const x of table.listTransfers()) {
    moving.add(chunkKey(x.fileId, x.chunkId))
    bump(sourcing, x.from, 1)
    bump(receiving, x.to, 1)
    bump(incoming, x.to, x.size)
    bump(outgoing, x.replaces, x.size)
  }
  const busy = (v: string): number => (sourcing.get(v) ?? 0) + (receiving.get(v) ?? 0)
  const free = (v: string): boolean => busy(v) < MAX_TRANSFERS_PER_VENDOR
  const roomOf = (v: string): number => Math.min(table.usage(v).available, (loads.get(v)?.room ?? 0) - (incoming.get(v) ?? 0))
  const out: TransferRecord[] = []
  const record = (c: ChunkInfo, from: string, to: string, replaces: string, reason: TransferRecord['reason']): void => {
    out.push({ id: randomBytes(16).toString('hex'), reason, owner: c.owner, fileId: c.fileId, chunkId: c.chunkId, size: c.size, from, to, replaces, issued: ctx.now, expires: ctx.now + transferLifetime(c.size) })
    moving.add(chunkKey(c.fileId, c.chunkId))
    bump(sourcing, from, 1)
    bump(receiving, to, 1)
    bump(incoming, to, c.size)
    bump(outgoing, replaces, c.size)
  }

  // repair: every chunk below its replica count gets a copy of a healthy replica
  const healthy = healthyCopy(loads, ctx.dead)
  // first, chunks lost with a failed device go back onto their own vendor's other devices where it
  // has room (it lists them in `restore`): the file's table does not change
  for (const [v, load] of loads) {
    if (!ctx.alive(v)) continue
    for (const ref of load.restore ?? []) {
      const c = table.chunk(ref.fileId, ref.chunkId)
      if (c == null || !c.holders.includes(v) || moving.has(chunkKey(c.fileId, c.chunkId)) || !free(v) || out.length >= ctx.limits.perRound) continue
      const from = c.holders.find(h => h !== v && ctx.alive(h) && healthy(h, c) && (sourcing.get(h) ?? 0) < ctx.limits.perSource)
      if (from != null) record(c, from, v, v, 'repair')
    }
  }
  // a chunk whose only missing copies are on vendors restoring it onto their own devices waits for
  // those restores (a few per round, bounded per source): copying it elsewhere too would leave a
  // surplus copy, and the vendor's copy would be replaced although it comes back
  const restoring = new Set<string>()
  for (const [v, load] of loads) if (ctx.alive(v)) for (const ref of load.restore ?? []) restoring.add(`${v}\0${chunkKey(ref.fileId, ref.chunkId)}`)
  const waitsForRestore = (c: ChunkInfo): boolean => c.holders.length >= c.want &&
    c.holders.every(h => healthy(h, c) || restoring.has(`${h}\0${chunkKey(c.fileId, c.chunkId)}`))
  const chunks: ChunkInfo[] = []
  for await (const c of atRisk(table, loads, ctx.dead)) if (!waitsForRestore(c)) chunks.push(c)
  const targets = table.listVendors()
    .filter(v => ctx.offered(v.peer))
    .map(v => ({ vendor: v.peer, room: roomOf(v.peer), zone: v.zone }))
  const { copies } = planRepair({
    chunks,
    healthy,
    canServe: ctx.alive,
    targets,
    zoneOf: v => table.vendor(v)?.zone,
    sourcing,
    receiving,
    moving,
    limits: ctx.limits
  })
  for (const p of copies) record(p.chunk, p.from, p.to, p.replaces, 'repair')

  const target = (c: ChunkInfo): string | undefined => {
    const zones = new Set(c.holders.map(v => table.vendor(v)?.zone).filter(z => z != null))
    const fits = targets
      .filter(t => !c.holders.includes(t.vendor) && free(t.vendor))
      .map(t => ({ v: t.vendor, zone: t.zone, room: roomOf(t.vendor) }))
      .filter(t => t.room >= c.size)
      // spread copies: other zones first, the least busy, then the most room
      .sort((a, b) => Number(a.zone != null && zones.has(a.zone)) - Number(b.zone != null && zones.has(b.zone)) || busy(a.v) - busy(b.v) || b.room - a.room || (a.v < b.v ? -1 : 1))
    return fits[0]?.v
  }

  // migration: draining vendors give up everything, over-full ones what is above their mark
  const shedding = table.listVendors()
    .filter(v => v.draining === true || (ctx.alive(v.peer) && (loads.get(v.peer)?.over ?? 0) > 0))
    .sort((a, b) => Number(b.draining === true) - Number(a.draining === true))
  for (const v of shedding) {
    const draining = v.draining === true
    // what the tables place on it above its mark: a heartbeat's `over` still counts the replicas
    // that moved until the vendor erased them, and would move their bytes twice
    let need = draining ? Number.POSITIVE_INFINITY : table.usage(v.peer).used - (loads.get(v.peer)?.mark ?? 0) - (outgoing.get(v.peer) ?? 0)
    if (need <= 0) continue
    for (const c of table.chunksOf(v.peer)) {
      if (need <= 0 || out.length >= ctx.limits.perRound || !free(v.peer)) break
      if (moving.has(chunkKey(c.fileId, c.chunkId)) || !healthy(v.peer, c)) continue
      // a silent draining vendor cannot serve its copy: copy another replica instead
      const from = ctx.alive(v.peer)
        ? v.peer
        : c.holders.filter(h => h !== v.peer && ctx.alive(h) && healthy(h, c) && free(h))[0]
      if (from == null || !free(from)) continue
      const to = target(c)
      if (to == null) continue
      record(c, from, to, v.peer, draining ? 'drain' : 'migrate')
      need -= c.size
    }
  }
  return out
}
