import { randomBytes } from 'node:crypto'
import type { ChunkRef, ChunkEntry, FileTable } from '../../protocol/messages.ts'
import type { FatTable, TransferRecord } from './table.ts'

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
  now: number
}

/** Transfers one vendor may take part in at once (as source or target). */
export const MAX_TRANSFERS_PER_VENDOR = 8
/** Transfers planned in one round. */
export const MAX_TRANSFERS_PER_ROUND = 64

/** How long a transfer order is valid: time for a slow copy, after which it is planned again. */
export function transferLifetime (size: number): number {
  return 30_000 + Math.ceil(size / 1048576) * 2000
}

/**
 * Plans this round's copies, most urgent first: chunks vendors reported lost (repair, from a
 * healthy replica), then chunks of draining vendors, then of vendors over their high-water mark
 * (migration, from the vendor itself). Each copy goes to an offered vendor with room that holds
 * no replica of that chunk; no chunk has two transfers at once, and no vendor more than a few.
 */
export async function planMoves (table: FatTable, loads: Map<string, VendorLoad>, ctx: PlanContext): Promise<TransferRecord[]> {
  const busy = new Map<string, number>()
  const incoming = new Map<string, number>()
  const outgoing = new Map<string, number>()
  const moving = new Set<string>()
  const bump = (m: Map<string, number>, k: string, n: number): void => { m.set(k, (m.get(k) ?? 0) + n) }
  for (const x of table.listTransfers()) {
    moving.add(`${x.fileId}/${x.chunkId}`)
    for (const v of new Set([x.from, x.to])) bump(busy, v, 1)
    bump(incoming, x.to, x.size)
    bump(outgoing, x.replaces, x.size)
  }
  const lostBy = (v: string, fileId: string, chunkId: string): boolean => loads.get(v)?.lost.some(l => l.fileId === fileId && l.chunkId === chunkId) ?? false
  const free = (v: string): boolean => (busy.get(v) ?? 0) < MAX_TRANSFERS_PER_VENDOR
  const out: TransferRecord[] = []

  const target = (size: number, exclude: Set<string>): string | undefined => {
    const fits = table.listVendors()
      .map(v => v.peer)
      .filter(v => !exclude.has(v) && ctx.offered(v) && free(v))
      .map(v => ({ v, room: Math.min(table.usage(v).available, (loads.get(v)?.room ?? 0) - (incoming.get(v) ?? 0)) }))
      .filter(c => c.room >= size)
      // spread copies: the least busy first, then the most room
      .sort((a, b) => (busy.get(a.v) ?? 0) - (busy.get(b.v) ?? 0) || b.room - a.room || (a.v < b.v ? -1 : 1))
    return fits[0]?.v
  }

  /** Plans one copy of `chunk` replacing `replaces`, from `source` (or any healthy replica), to `onto` (or the best target). */
  const plan = (file: FileTable, chunk: ChunkEntry, replaces: string, reason: TransferRecord['reason'], source?: string, onto?: string): boolean => {
    const key = `${file.fileId}/${chunk.id}`
    if (moving.has(key) || out.length >= MAX_TRANSFERS_PER_ROUND) return false
    const holders = chunk.replicas.map(r => r.vendor)
    const sources = source != null
      ? [source]
      : holders.filter(v => v !== replaces && ctx.alive(v) && !lostBy(v, file.fileId, chunk.id) && free(v))
    const from = sources[Math.floor(Math.random() * sources.length)]
    if (from == null || !free(from)) return false
    const to = onto ?? target(chunk.size, new Set([...holders, replaces]))
    if (to == null) return false
    out.push({ id: randomBytes(16).toString('hex'), reason, owner: file.owner, fileId: file.fileId, chunkId: chunk.id, size: chunk.size, from, to, replaces, issued: ctx.now, expires: ctx.now + transferLifetime(chunk.size) })
    moving.add(key)
    bump(busy, from, 1)
    bump(busy, to, 1)
    bump(incoming, to, chunk.size)
    bump(outgoing, replaces, chunk.size)
    return true
  }

  // repair: each lost replica is replaced by a copy of a healthy one
  for (const [v, load] of loads) {
    const restore = new Set((load.restore ?? []).map(r => `${r.fileId}/${r.chunkId}`))
    for (const ref of load.lost) {
      const file = await table.fileTable(ref.fileId)
      const chunk = file?.chunks.find(c => c.id === ref.chunkId && c.replicas.some(r => r.vendor === v))
      // a vendor that lost it with a failed device and has room elsewhere takes the copy itself:
      // the file's table does not change
      const back = restore.has(`${ref.fileId}/${ref.chunkId}`) && ctx.alive(v) && free(v)
      if (file != null && chunk != null) plan(file, chunk, v, 'repair', undefined, back ? v : undefined)
    }
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
    files: for await (const file of table.filesOn(v.peer)) {
      for (const chunk of file.chunks) {
        if (need <= 0 || out.length >= MAX_TRANSFERS_PER_ROUND || !free(v.peer)) break files
        if (!chunk.replicas.some(r => r.vendor === v.peer) || lostBy(v.peer, file.fileId, chunk.id)) continue
        // a silent draining vendor cannot serve its copy: copy another replica instead
        const source = ctx.alive(v.peer) ? v.peer : undefined
        if (plan(file, chunk, v.peer, draining ? 'drain' : 'migrate', source)) need -= chunk.size
      }
    }
  }
  return out
}
