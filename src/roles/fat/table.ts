import { createHash, randomBytes } from 'node:crypto'
import { AccessDeniedError, InvalidArgumentError, NoSpaceError, NotFoundError } from '../../errors.ts'
import { CHUNK_OVERHEAD } from '../../protocol/ids.ts'
import type { ChunkEntry, FileTable, FileSummary, Health } from '../../protocol/messages.ts'
import type { VendorRecord, AllocationRecord, PendingOrder, Op, Member, TransferRecord, Replaced } from '../../protocol/fat-sync.ts'
import { Records, type DB } from '../../store/db.ts'
import { UserRecords } from './records.ts'

export type { VendorRecord, AllocationRecord, PendingOrder, Op, Member, TransferRecord, Replaced } from '../../protocol/fat-sync.ts'

/**
 * One chunk as repair sees it: where its copies are and how many its file asked for. Derived from
 * the committed files (rebuilt on load, kept in step by apply), so a snapshot needs only the files.
 */
export interface ChunkInfo {
  fileId: string
  chunkId: string
  owner: string
  size: number
  want: number
  holders: string[]
}

export const chunkKey = (fileId: string, chunkId: string): string => `${fileId}/${chunkId}`

export function chunkCount (size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize)
}

/** Bytes a file of `size` takes on a vendor once encrypted in chunks of `chunkSize`. */
export function storedSize (size: number, chunkSize: number): number {
  return size + chunkCount(size, chunkSize) * CHUNK_OVERHEAD
}

/** A vendor's capacity without its failed devices: nothing more is placed on those. */
export function healthyCapacity (v: VendorRecord): number {
  if (v.devices.length === 0) return v.capacity
  return Math.min(v.capacity, v.devices.reduce((n, d) => n + (d.failed ? 0 : d.capacity), 0))
}

export function bytesPerVendor (t: FileTable): Map<string, number> {
  const m = new Map<string, number>()
  for (const c of t.chunks) for (const r of c.replicas) add(m, r.vendor, c.size)
  return m
}

function add (m: Map<string, number>, k: string, n: number): void {
  const v = (m.get(k) ?? 0) + n
  if (v === 0) m.delete(k)
  else m.set(k, v)
}

/** The chunks a commit's tables place on `vendor`: what its settle order tells it to keep. */
export function settleKeep (tables: FileTable[], vendor: string): string[] {
  return tables.flatMap(t => t.chunks.filter(c => c.replicas.some(r => r.vendor === vendor)).map(c => c.id))
}

export function newOrder (vendor: string, kind: PendingOrder['kind'], scope: string, keep: string[], chunks?: string[]): PendingOrder {
  return { id: randomBytes(16).toString('hex'), vendor, kind, scope, keep, chunks, issued: Date.now() }
}

/**
 * The key prefixes of the table's records in level: a snapshot is everything under them (`meta`
 * holds the applied position), and the digest hashes all but `meta`. A new kind of record needs
 * its prefix here, and nothing else, to travel in snapshots.
 */
export const TABLE_PREFIXES = ['members', 'vendor', 'alloc', 'stage', 'file', 'order', 'xfer', 'urec', 'meta'] as const

/** The key of a staged part under its allocation and file: its first line's index padded, so parts list in order. */
const stageKey = (allocationId: string, fileId: string, first: number): string => `${allocationId}/${fileId}/${String(first).padStart(13, '0')}`
/** Adds `value` to the set under `key` (on), or removes it and drops a set left empty (off). */
function toggle<T> (m: Map<string, Set<T>>, key: string, value: T, on: boolean): void {
  let set = m.get(key)
  if (on) {
    if (set == null) m.set(key, set = new Set())
    set.add(value)
  } else if (set != null) {
    set.delete(value)
    if (set.size === 0) m.delete(key)
  }
}

type Batch = Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }>

/**
 * The comprehensive table: vendors and their resources, open allocations and committed files.
 * Level holds the op log and the materialised records; byte counters are derived on load.
 * Reads and checks are methods here; every change goes through apply(op).
 */
export class FatTable {
  private readonly vendors = new Map<string, VendorRecord>()
  private readonly allocations = new Map<string, AllocationRecord>()
  private readonly owners = new Map<string, string>()
  private readonly used = new Map<string, number>()
  private readonly locked = new Map<string, number>()
  private readonly transfers = new Map<string, TransferRecord>()
  /** pack file id -> the files that lie in it */
  private readonly packMembers = new Map<string, Set<string>>()
  /** fileId/chunkId -> the chunk's copies (see ChunkInfo) */
  private readonly chunkInfo = new Map<string, ChunkInfo>()
  /** vendor -> the chunks the tables place on it: a dead vendor's chunks without a scan of every file */
  private readonly onVendor = new Map<string, Set<ChunkInfo>>()
  /** fileId -> its chunks, for its health */
  private readonly fileChunks = new Map<string, ChunkInfo[]>()
  /** one string per vendor id, however many chunks name it (a million chunks hold two each) */
  private readonly peerIds = new Map<string, string>()
  /** vendor -> ids of the orders waiting for it */
  private readonly waiting = new Map<string, Set<string>>()
  /** copies and bytes repaired since the network began (logged, so every replica counts the same) */
  private repaired = { copies: 0, bytes: 0 }
  private readonly transferRecs: Records<TransferRecord>
  private readonly vendorRecs: Records<VendorRecord>
  private readonly allocRecs: Records<AllocationRecord>
  private readonly fileRecs: Records<FileTable>
  private readonly orderRecs: Records<PendingOrder>
  private readonly metaRecs: Records<number>
  private readonly memberRecs: Records<Member[]>
  /** chunk lines of large files staged by commit-part ops, until their commit or expiry (see docs/replication.md) */
  private readonly stageRecs: Records<ChunkEntry[]>
  private seq = 0
  /** the users' sealed records (the S3 gateway's index) */
  readonly records: UserRecords

  constructor (private readonly db: DB) {
    this.records = new UserRecords(db)
    this.vendorRecs = new Records(db, 'vendor')
    this.allocRecs = new Records(db, 'alloc')
    this.fileRecs = new Records(db, 'file')
    this.orderRecs = new Records(db, 'order')
    this.metaRecs = new Records(db, 'meta')
    this.memberRecs = new Records(db, 'members')
    this.transferRecs = new Records(db, 'xfer')
    this.stageRecs = new Records(db, 'stage')
  }

  /** Reads the table from level again, from scratch (after a snapshot was installed, or a failed write). */
  async reload (): Promise<void> {
    for (const m of [this.vendors, this.allocations, this.owners, this.used, this.locked, this.transfers, this.packMembers, this.chunkInfo, this.onVendor, this.fileChunks, this.peerIds, this.waiting]) m.clear()
    await this.load()
  }

  async load (): Promise<void> {
    for await (const [, v] of this.vendorRecs.entries()) this.vendors.set(v.peer, v)
    for await (const [, a] of this.allocRecs.entries()) {
      this.allocations.set(a.allocationId, a)
      this.lock(a, 1)
    }
    for await (const [, f] of this.fileRecs.entries()) this.addFile(f)
    for await (const [, t] of this.transferRecs.entries()) {
      this.transfers.set(t.id, t)
      add(this.locked, t.to, t.size)
    }
    for await (const [, o] of this.orderRecs.entries()) this.wait(o.vendor, o.id, true)
    await this.records.load()
    this.seq = await this.metaRecs.get('seq') ?? 0
    this.repaired = { copies: await this.metaRecs.get('repaired-copies') ?? 0, bytes: await this.metaRecs.get('repaired-bytes') ?? 0 }
  }

  /** The index of the last op applied. */
  get position (): number { return this.seq }

  // ---- reads

  vendor (peer: string): VendorRecord | undefined { return this.vendors.get(peer) }
  listVendors (): VendorRecord[] { return [...this.vendors.values()] }
  allocation (id: string): AllocationRecord | undefined { return this.allocations.get(id) }
  fileCount (): number { return this.owners.size }
  chunkCount (): number { return this.chunkInfo.size }
  allocationCount (): number { return this.allocations.size }
  expired (now: number): AllocationRecord[] { return [...this.allocations.values()].filter(a => a.expires <= now) }

  usage (peer: string): { used: number, locked: number, available: number } {
    const v = this.vendors.get(peer)
    const used = this.used.get(peer) ?? 0
    const locked = this.locked.get(peer) ?? 0
    return { used, locked, available: v == null ? 0 : Math.max(0, healthyCapacity(v) - used - locked) }
  }

  transfer (id: string): TransferRecord | undefined { return this.transfers.get(id) }
  /** Orders waiting for `vendor` to take them. */
  ordersWaiting (vendor: string): number { return this.waiting.get(vendor)?.size ?? 0 }
  repairedSoFar (): { copies: number, bytes: number } { return { ...this.repaired } }
  chunk (fileId: string, chunkId: string): ChunkInfo | undefined { return this.chunkInfo.get(chunkKey(fileId, chunkId)) }
  /** Chunks the tables place on `vendor`. */
  chunksOn (vendor: string): number { return this.onVendor.get(vendor)?.size ?? 0 }
  * chunksOf (vendor: string): Generator<ChunkInfo> {
    yield * this.onVendor.get(vendor) ?? []
  }

  /**
   * A file's health (see Health): `healthy(vendor, chunk)` says whether a copy counts. A packed
   * file has the health of its pack, and its share of the pack's bytes.
   */
  health (fileId: string, healthy: (vendor: string, c: ChunkInfo) => boolean, share = 1): Health {
    let copies = Number.POSITIVE_INFINITY
    let degraded = 0
    let lost = 0
    let stored = 0
    for (const c of this.fileChunks.get(fileId) ?? []) {
      const n = c.holders.filter(v => healthy(v, c)).length
      copies = Math.min(copies, n)
      if (n < c.want) degraded++
      if (n === 0) lost++
      stored += c.size * c.holders.length
    }
    return { copies: Number.isFinite(copies) ? copies : 0, degraded, lost, stored: Math.round(stored * share) }
  }
  listTransfers (): TransferRecord[] { return [...this.transfers.values()] }

  /** The files that lie in pack `packId` (none once it is released). */
  membersOf (packId: string): number { return this.packMembers.get(packId)?.size ?? 0 }

  /** A committed file's table, whoever owns it (for repair and migration). */
  async fileTable (fileId: string): Promise<FileTable | undefined> {
    return this.owners.has(fileId) ? await this.fileRecs.get(fileId) : undefined
  }

  /** The parts staged for `fileId` under `allocationId`, in order of their first chunk. */
  async stagedParts (allocationId: string, fileId: string): Promise<Array<{ first: number, chunks: ChunkEntry[] }>> {
    const out: Array<{ first: number, chunks: ChunkEntry[] }> = []
    for await (const [k, chunks] of this.stageRecs.entries(`${allocationId}/${fileId}/`)) out.push({ first: Number(k.slice(k.lastIndexOf('/') + 1)), chunks })
    return out
  }

  /** The chunk lines staged for `fileId` under `allocationId`, joined in order (checkCommit judges them). */
  async stagedChunks (allocationId: string, fileId: string): Promise<ChunkEntry[]> {
    return (await this.stagedParts(allocationId, fileId)).flatMap(p => p.chunks)
  }

  /** Packs of small files: files of the table that no user named. */
  packCount (): number { return this.packMembers.size }

  /** Every committed file's table (packs included), for the status of the whole network. */
  async * fileTables (): AsyncGenerator<FileTable> {
    for await (const [, t] of this.fileRecs.entries()) yield t
  }

  /** The file's table, for its owner only. */
  async file (owner: string, fileId: string): Promise<FileTable> {
    const o = this.owners.get(fileId)
    if (o == null) throw new NotFoundError(`no file ${fileId}; \`stordaemon ls\` lists yours`)
    if (o !== owner) throw new AccessDeniedError(`file ${fileId} belongs to another user`)
    const t = await this.fileRecs.get(fileId)
    if (t == null) throw new NotFoundError(`no file ${fileId}`)
    return t
  }

  /** The owner's files (those of `only`, if given), each with its health when `healthy` is given. */
  async files (owner: string, healthy?: (vendor: string, c: ChunkInfo) => boolean, only?: Set<string>): Promise<FileSummary[]> {
    const out: FileSummary[] = []
    for (const [fileId, o] of this.owners) {
      if (o !== owner || (only != null && !only.has(fileId))) continue
      const t = await this.fileRecs.get(fileId)
      if (t == null || t.kind === 'pack') continue
      const s: FileSummary = { fileId, name: t.name, size: t.size, chunks: t.chunks.length, replicas: t.replicas, created: t.created }
      if (healthy != null) {
        const pack = t.packed != null ? await this.fileRecs.get(t.packed.pack) : undefined
        s.health = pack != null ? this.health(pack.fileId, healthy, pack.size > 0 ? t.size / pack.size : 0) : this.health(fileId, healthy)
      }
      out.push(s)
    }
    return out.sort((a, b) => a.created - b.created || (a.fileId < b.fileId ? -1 : 1))
  }

  async pendingOrders (vendor: string, max: number): Promise<PendingOrder[]> {
    const out: PendingOrder[] = []
    for await (const [, o] of this.orderRecs.entries(`${vendor}/`)) {
      if (out.length >= max) break
      out.push(o)
    }
    return out
  }

  /** A digest of the materialised table: replicas that agree have the same one. */
  async digest (): Promise<string> {
    const h = createHash('sha256')
    for (const prefix of TABLE_PREFIXES.filter(p => p !== 'meta')) {
      for await (const [k, v] of this.db.iterator({ gte: `${prefix}/`, lt: `${prefix}/\xff` })) h.update(k).update(v)
    }
    return h.digest('hex')
  }

  // ---- checks that turn a request into an op

  /** Did the vendor's resources or addresses change since it was last logged? */
  vendorChanged (rec: VendorRecord): boolean {
    const old = this.vendors.get(rec.peer)
    return old == null || old.capacity !== rec.capacity || old.addrs.join() !== rec.addrs.join() || old.zone !== rec.zone ||
      JSON.stringify(old.devices.map(d => [d.path, d.capacity, d.failed])) !== JSON.stringify(rec.devices.map(d => [d.path, d.capacity, d.failed]))
  }

  /**
   * Plans an allocation for files of `sizes` at `replicas` copies: every candidate vendor may
   * take up to one whole copy, and there are more candidates than replicas where the network allows.
   */
  planAllocation (owner: string, sizes: number[], replicas: number, chunkSize: number, expires: number, alive: (peer: string) => boolean, packed: number[] = []): AllocationRecord {
    const inPack = new Set(packed)
    if (inPack.size !== packed.length || packed.some(i => i >= sizes.length)) throw new InvalidArgumentError('packed: each index must name a file of the allocation once')
    if (inPack.size === sizes.length) throw new InvalidArgumentError('packed: the files must lie in packs that are files of the allocation too')
    const need = sizes.reduce((n, s, i) => inPack.has(i) ? n : n + storedSize(s, chunkSize), 0)
    const largestChunk = Math.min(need, chunkSize + CHUNK_OVERHEAD)
    const eligible = this.listVendors()
      .filter(v => alive(v.peer))
      .map(v => ({ peer: v.peer, available: this.usage(v.peer).available }))
      .filter(v => v.available >= largestChunk)
      .sort((a, b) => b.available - a.available || (a.peer < b.peer ? -1 : 1))
    if (eligible.length < replicas) {
      throw new NoSpaceError(`${replicas} replicas need ${replicas} vendors with room, and ${eligible.length} ${eligible.length === 1 ? 'has' : 'have'} it; add vendors or lower --replicas`)
    }
    // the candidates span as many zones as there are, the roomiest vendor of each first, so the
    // user can place each chunk's replicas in distinct zones
    const zones = new Set<string>()
    const firstOfZone = eligible.filter(v => {
      const z = this.vendors.get(v.peer)?.zone
      if (z == null) return true
      if (zones.has(z)) return false
      zones.add(z)
      return true
    })
    const chosen = [...firstOfZone, ...eligible.filter(v => !firstOfZone.includes(v))].slice(0, replicas + 2)
    const grants: Record<string, number> = {}
    for (const v of chosen) grants[v.peer] = Math.min(v.available, need)
    const total = Object.values(grants).reduce((a, b) => a + b, 0)
    if (total < need * replicas) throw new NoSpaceError(`the network has room for ${total} of the ${need * replicas} bytes this upload needs`)
    return {
      allocationId: randomBytes(16).toString('hex'),
      owner,
      sizes,
      fileIds: sizes.map(() => randomBytes(16).toString('hex')),
      ...(packed.length > 0 ? { packed } : {}),
      replicas,
      chunkSize,
      expires,
      grants
    }
  }

  /** The owner's allocation, open still; a clear error otherwise. */
  private openAllocation (owner: string, allocationId: string): AllocationRecord {
    const a = this.allocations.get(allocationId)
    if (a == null || a.expires <= Date.now()) throw new NotFoundError(`no open allocation ${allocationId}: it was committed already, or its lease expired; upload again`)
    if (a.owner !== owner) throw new AccessDeniedError(`allocation ${allocationId} belongs to another user`)
    return a
  }

  /** Chunk line `c` at index `i` of file `fileId` of `size` bytes: right index and size, replicas on distinct granted vendors. */
  private checkLine (a: AllocationRecord, fileId: string, size: number, c: ChunkEntry, i: number): void {
    const plain = Math.min(a.chunkSize, size - i * a.chunkSize)
    if (c.i !== i || c.size !== plain + CHUNK_OVERHEAD) throw new InvalidArgumentError(`file ${fileId}: chunk ${i} has the wrong index or size`)
    const vendors = new Set(c.replicas.map(r => r.vendor))
    if (c.replicas.length !== a.replicas || vendors.size !== c.replicas.length) throw new InvalidArgumentError(`file ${fileId}: chunk ${i} needs ${a.replicas} replicas on distinct vendors`)
    for (const v of vendors) {
      if (a.grants[v] == null) throw new AccessDeniedError(`chunk ${i} names vendor ${v}, which was not granted to this allocation`)
    }
  }

  /**
   * Checks a commit-part: lines `first`.. of a file of the owner's open allocation that has chunks
   * of its own. The grants' totals are checked on the whole table, at the commit.
   */
  checkPart (owner: string, allocationId: string, fileId: string, first: number, chunks: ChunkEntry[]): AllocationRecord {
    const a = this.openAllocation(owner, allocationId)
    const slot = a.fileIds.indexOf(fileId)
    if (slot < 0) throw new InvalidArgumentError(`file ${fileId} is not part of allocation ${allocationId}`)
    if ((a.packed ?? []).includes(slot)) throw new InvalidArgumentError(`file ${fileId} lies in a pack: it has no chunk lines to stage`)
    const count = chunkCount(a.sizes[slot], a.chunkSize)
    if (chunks.length === 0 || first + chunks.length > count) throw new InvalidArgumentError(`file ${fileId} has ${count} chunks: a part from line ${first} holds 1 to ${Math.max(0, count - first)} lines, not ${chunks.length}`)
    chunks.forEach((c, k) => { this.checkLine(a, fileId, a.sizes[slot], c, first + k) })
    return a
  }

  /** Checks final tables against their allocation; throws a clear error for anything off. */
  checkCommit (owner: string, allocationId: string, tables: FileTable[]): AllocationRecord {
    const a = this.openAllocation(owner, allocationId)
    const perVendor = new Map<string, number>()
    const seen = new Set<string>()
    const inPack = new Set((a.packed ?? []).map(i => a.fileIds[i]))
    this.checkPacks(tables, inPack)
    for (const table of tables) {
      const slot = a.fileIds.indexOf(table.fileId)
      if (slot < 0 || seen.has(table.fileId)) throw new InvalidArgumentError(`file ${table.fileId} is not part of allocation ${allocationId}, or is listed twice`)
      seen.add(table.fileId)
      if (table.owner !== owner) throw new AccessDeniedError(`file ${table.fileId} names another owner`)
      if (table.size !== a.sizes[slot] || table.chunkSize !== a.chunkSize || table.replicas !== a.replicas) {
        throw new InvalidArgumentError(`file ${table.fileId}: the final table does not match its allocation (size, chunk size or replicas)`)
      }
      if (inPack.has(table.fileId)) continue
      const count = chunkCount(table.size, a.chunkSize)
      if (table.chunks.length !== count) throw new InvalidArgumentError(`file ${table.fileId} lists ${table.chunks.length} chunks, the file has ${count}`)
      table.chunks.forEach((c, i) => {
        this.checkLine(a, table.fileId, table.size, c, i)
        for (const r of c.replicas) add(perVendor, r.vendor, c.size)
      })
    }
    for (const [v, b] of perVendor) {
      if (b > a.grants[v]) throw new AccessDeniedError(`the tables put ${b} bytes on ${v}, over its grant of ${a.grants[v]}`)
    }
    return a
  }

  /**
   * Files of an allocation's `packed` list lie in a pack of the same commit, within its bytes, with
   * no chunks of their own; every other file has no `packed`; every pack holds at least one file.
   */
  private checkPacks (tables: FileTable[], inPack: Set<string>): void {
    const byId = new Map(tables.map(t => [t.fileId, t]))
    const used = new Set<string>()
    for (const t of tables) {
      if (t.packed == null) {
        if (inPack.has(t.fileId)) throw new InvalidArgumentError(`file ${t.fileId} was allocated inside a pack, and its table names none`)
        continue
      }
      if (!inPack.has(t.fileId)) throw new InvalidArgumentError(`file ${t.fileId} names a pack, and was not allocated inside one`)
      const pack = byId.get(t.packed.pack)
      if (pack == null || pack.kind !== 'pack' || inPack.has(pack.fileId)) throw new InvalidArgumentError(`file ${t.fileId}: its pack ${t.packed.pack} is not a pack of this commit`)
      if (t.chunks.length > 0 || t.kind != null || t.packed.offset + t.size > pack.size) throw new InvalidArgumentError(`file ${t.fileId}: a packed file has no chunks and lies within its pack's bytes`)
      used.add(pack.fileId)
    }
    for (const t of tables) {
      if (t.kind === 'pack' && !used.has(t.fileId)) throw new InvalidArgumentError(`pack ${t.fileId} holds no file of this commit`)
    }
  }

  private addFile (t: FileTable): void {
    this.owners.set(t.fileId, t.owner)
    for (const [v, b] of bytesPerVendor(t)) add(this.used, v, b)
    const infos: ChunkInfo[] = []
    for (const c of t.chunks) {
      const info: ChunkInfo = { fileId: t.fileId, chunkId: c.id, owner: t.owner, size: c.size, want: t.replicas, holders: c.replicas.map(r => this.peerId(r.vendor)) }
      infos.push(info)
      this.chunkInfo.set(chunkKey(t.fileId, c.id), info)
      for (const v of info.holders) this.index(v, info, true)
    }
    if (infos.length > 0) this.fileChunks.set(t.fileId, infos)
    if (t.packed != null) {
      const set = this.packMembers.get(t.packed.pack) ?? new Set<string>()
      set.add(t.fileId)
      this.packMembers.set(t.packed.pack, set)
    }
  }

  private removeFile (t: FileTable, batch: Batch): void {
    for (const [v, b] of bytesPerVendor(t)) add(this.used, v, -b)
    this.owners.delete(t.fileId)
    for (const info of this.fileChunks.get(t.fileId) ?? []) {
      for (const v of info.holders) this.index(v, info, false)
      this.chunkInfo.delete(chunkKey(info.fileId, info.chunkId))
    }
    this.fileChunks.delete(t.fileId)
    batch.push(this.fileRecs.del(t.fileId))
    for (const x of this.listTransfers()) if (x.fileId === t.fileId) this.endTransfer(x.id, batch)
  }

  // ---- the one way the table changes

  /** Applies op number `seq` of the replicated log: memory and level change together. */
  async apply (seq: number, op: Op): Promise<void> {
    if (seq !== this.seq + 1) throw new Error(`op ${seq} applied out of order after ${this.seq}`)
    const batch: Batch = []
    const orders = (list: PendingOrder[]): void => {
      for (const o of list) {
        batch.push(this.orderRecs.put(`${o.vendor}/${o.id}`, o))
        this.wait(o.vendor, o.id, true)
      }
    }
    /** An allocation ends (committed or expired): its locks are released. */
    const closeAllocation = (id: string): void => {
      const a = this.allocations.get(id)
      if (a == null) return
      this.lock(a, -1)
      this.allocations.delete(id)
      batch.push(this.allocRecs.del(id))
    }
    /** An allocation's staged parts go with it, whether committed or expired. */
    const dropStaged = async (allocationId: string): Promise<void> => {
      for await (const k of this.db.keys({ gte: this.stageRecs.key(`${allocationId}/`), lt: this.stageRecs.key(`${allocationId}/\xff`) })) batch.push({ type: 'del', key: k })
    }
    switch (op.op) {
      case 'vendor': {
        const old = this.vendors.get(op.vendor.peer)
        const joined = old?.joined ?? op.vendor.joined
        const rec: VendorRecord = { ...op.vendor, joined, draining: old?.draining, state: old?.state, since: old?.since }
        this.vendors.set(rec.peer, rec)
        batch.push(this.vendorRecs.put(rec.peer, rec))
        break
      }
      case 'allocate':
        this.allocations.set(op.allocation.allocationId, op.allocation)
        this.lock(op.allocation, 1)
        batch.push(this.allocRecs.put(op.allocation.allocationId, op.allocation))
        break
      case 'commit-part':
        // staged only under an allocation still open; nothing in memory changes until the commit
        if (this.allocations.has(op.allocationId)) batch.push(this.stageRecs.put(stageKey(op.allocationId, op.fileId, op.first), op.chunks))
        break
      case 'commit': {
        closeAllocation(op.allocationId)
        // a staged file's chunk lines are read back from its parts, in the same batch as its table
        const staged = new Set(op.staged ?? [])
        const tables: FileTable[] = []
        for (const t of op.tables) tables.push(staged.has(t.fileId) ? { ...t, chunks: await this.stagedChunks(op.allocationId, t.fileId) } : t)
        await dropStaged(op.allocationId)
        for (const t of tables) {
          this.addFile(t)
          batch.push(this.fileRecs.put(t.fileId, t))
        }
        // a settle order's keep list repeats the tables' chunk ids: the entry leaves it out (so a
        // large file's commit fits one log entry) and every replica derives the same list here
        orders(op.orders.map(o => o.kind === 'settle' && o.keep.length === 0 ? { ...o, keep: settleKeep(tables, o.vendor) } : o))
        break
      }
      case 'renew': {
        const a = this.allocations.get(op.allocationId)
        if (a == null) break
        const renewed = { ...a, expires: op.expires }
        this.allocations.set(a.allocationId, renewed)
        batch.push(this.allocRecs.put(a.allocationId, renewed))
        break
      }
      case 'expire':
        closeAllocation(op.allocationId)
        await dropStaged(op.allocationId)
        orders(op.orders)
        break
      case 'release': {
        const t = await this.fileRecs.get(op.fileId)
        if (t != null) {
          this.removeFile(t, batch)
          // the last file of a pack takes the pack with it
          const members = t.packed != null ? this.packMembers.get(t.packed.pack) : undefined
          members?.delete(t.fileId)
          if (t.packed != null && members?.size === 0) {
            this.packMembers.delete(t.packed.pack)
            const pack = await this.fileRecs.get(t.packed.pack)
            if (pack != null) this.removeFile(pack, batch)
          }
        }
        orders(op.orders)
        break
      }
      case 'drain': {
        const v = this.vendors.get(op.vendor)
        if (v != null) {
          const rec = { ...v, draining: true }
          this.vendors.set(rec.peer, rec)
          batch.push(this.vendorRecs.put(rec.peer, rec))
        }
        break
      }
      case 'transfer':
        this.transfers.set(op.transfer.id, op.transfer)
        add(this.locked, op.transfer.to, op.transfer.size)
        batch.push(this.transferRecs.put(op.transfer.id, op.transfer))
        break
      case 'replace-replica':
        await this.replace([op], batch)
        orders(op.orders)
        break
      case 'replaced':
        await this.replace(op.copies, batch)
        orders(op.orders)
        break
      case 'transfers':
        for (const x of op.transfers) {
          this.transfers.set(x.id, x)
          add(this.locked, x.to, x.size)
          batch.push(this.transferRecs.put(x.id, x))
        }
        break
      case 'vendor-state': {
        const v = this.vendors.get(op.vendor)
        if (v != null) {
          const rec: VendorRecord = { ...v, state: op.state === 'in' ? undefined : op.state, since: op.state === 'in' ? undefined : op.at }
          this.vendors.set(rec.peer, rec)
          batch.push(this.vendorRecs.put(rec.peer, rec))
        }
        break
      }
      case 'transfer-end':
        this.endTransfer(op.transferId, batch)
        orders(op.orders)
        break
      case 'delivered':
        for (const id of op.ids) {
          batch.push(this.orderRecs.del(`${op.vendor}/${id}`))
          this.wait(op.vendor, id, false)
        }
        break
      case 'members':
        batch.push(this.memberRecs.put('current', op.members))
        break
      case 'records':
        await this.records.apply(op, batch)
        break
      case 'noop':
        break
    }
    batch.push(this.metaRecs.put('seq', seq))
    try {
      await this.db.batch(batch, { sync: true })
    } catch (err) {
      // the maps above changed as the op was read; a write that failed must not leave them ahead
      // of disk, so they are read back from level, where the op left no trace
      await this.reload()
      throw err
    }
    this.seq = seq
  }

  /** Confirmed copies: each `to` takes the place of `replaces`; one read and one write per file. */
  private async replace (copies: Replaced[], batch: Batch): Promise<void> {
    const byFile = new Map<string, Replaced[]>()
    for (const r of copies) byFile.set(r.fileId, [...(byFile.get(r.fileId) ?? []), r])
    let repairedNow = false
    for (const [fileId, list] of byFile) {
      const t = await this.fileRecs.get(fileId)
      let changed = false
      for (const r of list) {
        const x = this.transfers.get(r.transferId)
        for (const c of t?.chunks ?? []) {
          if (c.id !== r.chunkId) continue
          const at = c.replicas.findIndex(p => p.vendor === r.replaces)
          if (at >= 0 && r.to === r.replaces && x?.reason === 'repair') {
            // restored onto its own vendor's other devices: the table stays, the repair counts
            this.repaired.copies++
            this.repaired.bytes += c.size
            repairedNow = true
          }
          if (at < 0 || c.replicas.some(p => p.vendor === r.to)) continue
          c.replicas[at] = { vendor: r.to, sig: r.sig }
          add(this.used, r.replaces, -c.size)
          add(this.used, r.to, c.size)
          changed = true
          const info = this.chunkInfo.get(chunkKey(fileId, c.id))
          if (info != null) {
            info.holders = c.replicas.map(p => this.peerId(p.vendor))
            this.index(r.replaces, info, false)
            this.index(r.to, info, true)
          }
          if (x?.reason === 'repair') {
            this.repaired.copies++
            this.repaired.bytes += c.size
            repairedNow = true
          }
        }
        this.endTransfer(r.transferId, batch)
      }
      if (changed && t != null) batch.push(this.fileRecs.put(t.fileId, t))
    }
    if (repairedNow) batch.push(this.metaRecs.put('repaired-copies', this.repaired.copies), this.metaRecs.put('repaired-bytes', this.repaired.bytes))
  }

  private peerId (id: string): string {
    const known = this.peerIds.get(id)
    if (known != null) return known
    this.peerIds.set(id, id)
    return id
  }

  private index (vendor: string, chunk: ChunkInfo, on: boolean): void { toggle(this.onVendor, vendor, chunk, on) }
  private wait (vendor: string, id: string, on: boolean): void { toggle(this.waiting, vendor, id, on) }

  private endTransfer (id: string, batch: Batch): void {
    const x = this.transfers.get(id)
    if (x == null) return
    this.transfers.delete(id)
    add(this.locked, x.to, -x.size)
    batch.push(this.transferRecs.del(id))
  }

  private lock (a: AllocationRecord, sign: 1 | -1): void {
    for (const [v, b] of Object.entries(a.grants)) add(this.locked, v, sign * b)
  }
}
