import { PERMILLE, type FileTable } from '../../protocol/messages.ts'
import { healthyCapacity, type FatTable, type TransferRecord } from './table.ts'
import type { Replication } from './replication.ts'
import type { VendorLoad } from './moves.ts'

/**
 * What a FAT replica tells an operator about the network: the replicas, every vendor with its
 * state and load, the chunks' health and the copies under way. No user's file names, file ids,
 * owners or keys: the metrics and the status page show it to whoever may read them.
 */

/**
 * A vendor's state as this replica sees it: `alive` (heard recently and offered new data), `full`
 * (heard, and above its high-water mark, so not offered), `draining` (its chunks move elsewhere),
 * `silent` (not heard within three heartbeats; its chunks count as unavailable).
 */
export type VendorState = 'alive' | 'full' | 'draining' | 'silent'
export const VENDOR_STATES: readonly VendorState[] = ['alive', 'full', 'draining', 'silent']

export function vendorState (heard: boolean, draining: boolean, offered: boolean): VendorState {
  if (!heard) return 'silent'
  if (draining) return 'draining'
  return offered ? 'alive' : 'full'
}

/** Chunks by how many of their replicas can be read now. */
export interface ChunkHealth {
  /** every replica on a vendor that serves it */
  healthy: number
  /** some replicas, fewer than the file's replica count */
  underReplicated: number
  /** no replica that can be read now (a silent vendor may bring it back) */
  lost: number
}

/**
 * Counts chunks by health. `readable(vendor, fileId, chunkId)` says whether that vendor can serve
 * that chunk now (heard recently, and it did not report the chunk damaged). This is the one place
 * chunk health is decided, so a finer vendor state (suspect, dead) changes only `readable`.
 */
export function chunkHealth (tables: Iterable<FileTable>, readable: (vendor: string, fileId: string, chunkId: string) => boolean): ChunkHealth {
  const h: ChunkHealth = { healthy: 0, underReplicated: 0, lost: 0 }
  for (const t of tables) {
    for (const c of t.chunks) {
      const good = c.replicas.filter(r => readable(r.vendor, t.fileId, c.id)).length
      if (good === 0) h.lost++
      else if (good < t.replicas) h.underReplicated++
      else h.healthy++
    }
  }
  return h
}

export interface VendorView {
  peer: string
  state: VendorState
  /** the zone the vendor reports, where it reports one */
  zone?: string
  /** bytes of its devices that have not failed */
  capacity: number
  /** bytes of committed files on it */
  used: number
  /** bytes granted to open allocations and copies under way to it */
  allocated: number
  /** bytes it may still be granted */
  available: number
  /** share of the recent heartbeats that arrived, 0..1 */
  availability: number
  /** stores and copies it reported in progress */
  load: number
  /** chunks it holds, as it reported */
  chunks: number
  /** chunks it reported damaged */
  damaged: number
  /** copies under way from or to it */
  transfers: number
  devices: number
  failedDevices: number
  lastSeen: number
}

export interface ReplicaView { peer: string, leader: boolean, self: boolean }

export interface TransferQueue { count: number, bytes: number }

export interface FatOverview {
  self: string
  replicas: ReplicaView[]
  leader?: string
  isLeader: boolean
  term: number
  commit: number
  applied: number
  /** entries in the log (none are compacted away yet) */
  logEntries: number
  vendors: VendorView[]
  /** files users stored (packs of small files not counted) */
  files: number
  allocations: number
  chunks: ChunkHealth
  /** copies under way, by reason */
  transfers: Record<TransferRecord['reason'], TransferQueue>
}

export const TRANSFER_REASONS: ReadonlyArray<TransferRecord['reason']> = ['repair', 'migrate', 'drain']

export function transferQueue (transfers: TransferRecord[]): Record<TransferRecord['reason'], TransferQueue> {
  const q = { repair: { count: 0, bytes: 0 }, migrate: { count: 0, bytes: 0 }, drain: { count: 0, bytes: 0 } }
  for (const x of transfers) { q[x.reason].count++; q[x.reason].bytes += x.size }
  return q
}

export interface OverviewSources {
  self: string
  table: FatTable
  replication: Pick<Replication, 'members' | 'leader' | 'isLeader' | 'state'>
  /** each vendor's last heartbeat */
  loads: Map<string, VendorLoad>
  availability: (peer: string) => number
  alive: (peer: string) => boolean
  offered: (peer: string) => boolean
}

/**
 * Builds overviews on demand. Chunk health reads every file table, so it is counted again only
 * when the table moved on or a vendor's readability changed since the last count.
 */
export function overviewOf (src: OverviewSources): () => Promise<FatOverview> {
  const { table } = src
  let counted: { key: string, health: ChunkHealth } | undefined
  const damagedOn = (peer: string): Set<string> => new Set((src.loads.get(peer)?.lost ?? []).map(l => `${l.fileId}/${l.chunkId}`))

  const health = async (): Promise<ChunkHealth> => {
    const vendors = table.listVendors().map(v => v.peer).sort()
    const damaged = new Map(vendors.map(v => [v, damagedOn(v)]))
    const key = `${table.position}|${vendors.map(v => `${v}:${src.alive(v) ? 1 : 0}:${[...damaged.get(v) ?? []].join(',')}`).join(';')}`
    if (counted?.key === key) return counted.health
    const readable = (v: string, fileId: string, chunkId: string): boolean => src.alive(v) && damaged.get(v)?.has(`${fileId}/${chunkId}`) !== true
    // one table at a time: a large table is never held in memory whole
    const result: ChunkHealth = { healthy: 0, underReplicated: 0, lost: 0 }
    for await (const t of table.fileTables()) {
      const h = chunkHealth([t], readable)
      result.healthy += h.healthy
      result.underReplicated += h.underReplicated
      result.lost += h.lost
    }
    counted = { key, health: result }
    return result
  }

  return async () => {
    const transfers = table.listTransfers()
    const moving = new Map<string, number>()
    for (const x of transfers) for (const v of new Set([x.from, x.to])) moving.set(v, (moving.get(v) ?? 0) + 1)
    const leader = src.replication.leader()?.peer
    const state = src.replication.state()
    const vendors = table.listVendors().map((v): VendorView => {
      const u = table.usage(v.peer)
      const load = src.loads.get(v.peer)
      return {
        peer: v.peer,
        state: vendorState(src.alive(v.peer), v.draining === true, src.offered(v.peer)),
        // a vendor record carries a zone once vendors report one
        ...('zone' in v && typeof v.zone === 'string' ? { zone: v.zone } : {}),
        capacity: healthyCapacity(v),
        used: u.used,
        allocated: u.locked,
        available: u.available,
        availability: src.availability(v.peer) / PERMILLE,
        load: load?.inflight ?? 0,
        chunks: load?.held ?? 0,
        damaged: load?.lost.length ?? 0,
        transfers: moving.get(v.peer) ?? 0,
        devices: v.devices.length,
        failedDevices: v.devices.filter(d => d.failed).length,
        lastSeen: load?.lastSeen ?? 0
      }
    })
    return {
      self: src.self,
      replicas: src.replication.members().map(m => ({ peer: m.peer, leader: m.peer === leader, self: m.peer === src.self })),
      ...(leader != null ? { leader } : {}),
      isLeader: src.replication.isLeader(),
      term: state.term,
      commit: state.commit,
      applied: state.applied,
      logEntries: state.lastIndex,
      vendors,
      files: table.fileCount() - table.packCount(),
      allocations: table.allocationCount(),
      chunks: await health(),
      transfers: transferQueue(transfers)
    }
  }
}
