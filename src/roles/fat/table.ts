import { randomBytes } from 'node:crypto'
import { AccessDeniedError, InvalidArgumentError, NoSpaceError, NotFoundError } from '../../errors.ts'
import { CHUNK_OVERHEAD } from '../../protocol/ids.ts'
import type { Device, FileTable, FileSummary } from '../../protocol/messages.ts'
import { Records, type DB } from '../../store/db.ts'

export interface VendorRecord {
  peer: string
  addrs: string[]
  capacity: number
  free: number
  devices: Device[]
  inflight: number
  joined: number
}

export interface AllocationRecord {
  fileId: string
  owner: string
  bytes: number
  replicas: number
  chunkSize: number
  expires: number
  /** vendor -> bytes locked for this allocation */
  grants: Record<string, number>
}

/** An order the FAT owes a vendor until the vendor acknowledges it. */
export interface PendingOrder { id: string, vendor: string, kind: 'settle' | 'erase', fileId: string, keep: string[], issued: number }

/** One entry of the ordered op log; every change to the table is one, so replicas can replay it. */
export type Op =
  | { op: 'vendor', vendor: VendorRecord }
  | { op: 'allocate', allocation: AllocationRecord }
  | { op: 'commit', table: FileTable }
  | { op: 'expire', fileId: string }
  | { op: 'release', fileId: string }

/** Bytes a file of `size` takes on a vendor once encrypted in chunks of `chunkSize`. */
export function storedSize (size: number, chunkSize: number): number {
  return size + chunkCount(size, chunkSize) * CHUNK_OVERHEAD
}

export function chunkCount (size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize)
}

/**
 * The comprehensive table: vendors and their resources, open allocations and committed files.
 * Level holds the op log and the materialised records; the byte counters are derived on load.
 */
export class FatTable {
  private readonly vendors = new Map<string, VendorRecord>()
  private readonly allocations = new Map<string, AllocationRecord>()
  private readonly owners = new Map<string, string>()
  private readonly used = new Map<string, number>()
  private readonly locked = new Map<string, number>()
  private readonly lastSeen = new Map<string, number>()
  private readonly vendorRecs: Records<VendorRecord>
  private readonly allocRecs: Records<AllocationRecord>
  private readonly fileRecs: Records<FileTable>
  private readonly orderRecs: Records<PendingOrder>
  private readonly logRecs: Records<Op & { seq: number, at: number }>
  private seq = 0

  constructor (private readonly db: DB) {
    this.vendorRecs = new Records(db, 'vendor')
    this.allocRecs = new Records(db, 'alloc')
    this.fileRecs = new Records(db, 'file')
    this.orderRecs = new Records(db, 'order')
    this.logRecs = new Records(db, 'log')
  }

  async load (): Promise<void> {
    for await (const [, v] of this.vendorRecs.entries()) this.vendors.set(v.peer, v)
    for await (const [, a] of this.allocRecs.entries()) {
      this.allocations.set(a.fileId, a)
      for (const [v, b] of Object.entries(a.grants)) add(this.locked, v, b)
    }
    for await (const [, f] of this.fileRecs.entries()) {
      this.owners.set(f.fileId, f.owner)
      for (const [v, b] of bytesPerVendor(f)) add(this.used, v, b)
    }
    for await (const [k] of this.logRecs.entries()) this.seq = Math.max(this.seq, Number.parseInt(k, 10))
  }

  get logPosition (): number { return this.seq }

  // ---- vendors

  seen (peer: string, at: number): void { this.lastSeen.set(peer, at) }

  isAlive (peer: string, now: number, silentMs: number): boolean {
    return now - (this.lastSeen.get(peer) ?? 0) <= silentMs
  }

  vendor (peer: string): VendorRecord | undefined { return this.vendors.get(peer) }

  listVendors (): VendorRecord[] { return [...this.vendors.values()] }

  usage (peer: string): { used: number, locked: number, available: number, lastSeen: number } {
    const v = this.vendors.get(peer)
    const used = this.used.get(peer) ?? 0
    const locked = this.locked.get(peer) ?? 0
    const available = v == null ? 0 : Math.max(0, Math.min(v.capacity - used - locked, v.free - locked))
    return { used, locked, available, lastSeen: this.lastSeen.get(peer) ?? 0 }
  }

  /** Records a vendor's announcement; only a change of its resources or addresses is logged. */
  async upsertVendor (rec: VendorRecord): Promise<void> {
    const old = this.vendors.get(rec.peer)
    const changed = old == null || old.capacity !== rec.capacity || old.addrs.join() !== rec.addrs.join() ||
      JSON.stringify(old.devices.map(d => [d.path, d.capacity, d.failed])) !== JSON.stringify(rec.devices.map(d => [d.path, d.capacity, d.failed]))
    const joined = old?.joined ?? rec.joined
    this.vendors.set(rec.peer, { ...rec, joined })
    if (changed) await this.write({ op: 'vendor', vendor: { ...rec, joined } }, [this.vendorRecs.put(rec.peer, { ...rec, joined })])
  }

  // ---- allocations

  /**
   * Locks room for `bytes` at `replicas` copies: every candidate vendor may take up to one whole
   * copy of the file, and there are more candidates than replicas where the network allows.
   */
  async allocate (owner: string, bytes: number, replicas: number, chunkSize: number, expires: number, alive: (peer: string) => boolean): Promise<AllocationRecord> {
    const need = storedSize(bytes, chunkSize)
    const largestChunk = Math.min(need, chunkSize + CHUNK_OVERHEAD)
    const eligible = this.listVendors()
      .filter(v => alive(v.peer))
      .map(v => ({ peer: v.peer, available: this.usage(v.peer).available }))
      .filter(v => v.available >= largestChunk)
      .sort((a, b) => b.available - a.available)
    if (eligible.length < replicas) {
      throw new NoSpaceError(`${replicas} replicas need ${replicas} vendors with room, and ${eligible.length} ${eligible.length === 1 ? 'has' : 'have'} it; add vendors or lower --replicas`)
    }
    const chosen = eligible.slice(0, replicas + 2)
    const grants: Record<string, number> = {}
    for (const v of chosen) grants[v.peer] = Math.min(v.available, need)
    const total = Object.values(grants).reduce((a, b) => a + b, 0)
    if (total < need * replicas) throw new NoSpaceError(`the network has room for ${total} of the ${need * replicas} bytes this upload needs`)
    const allocation: AllocationRecord = { fileId: randomBytes(16).toString('hex'), owner, bytes, replicas, chunkSize, expires, grants }
    this.allocations.set(allocation.fileId, allocation)
    this.lock(allocation, 1)
    await this.write({ op: 'allocate', allocation }, [this.allocRecs.put(allocation.fileId, allocation)])
    return allocation
  }

  allocation (fileId: string): AllocationRecord | undefined { return this.allocations.get(fileId) }

  expired (now: number): AllocationRecord[] {
    return [...this.allocations.values()].filter(a => a.expires <= now)
  }

  /** Checks a final table against its allocation; throws a clear error for anything off. */
  checkCommit (owner: string, table: FileTable): AllocationRecord {
    const a = this.allocations.get(table.fileId)
    if (a == null) throw new NotFoundError(`no open allocation ${table.fileId}: it was committed already, or its lease expired; upload again`)
    if (a.owner !== owner || table.owner !== owner) throw new AccessDeniedError(`allocation ${table.fileId} belongs to another user`)
    if (table.size !== a.bytes || table.chunkSize !== a.chunkSize || table.replicas !== a.replicas) {
      throw new InvalidArgumentError('final table does not match its allocation (size, chunk size or replicas)')
    }
    const count = chunkCount(a.bytes, a.chunkSize)
    if (table.chunks.length !== count) throw new InvalidArgumentError(`final table lists ${table.chunks.length} chunks, the file has ${count}`)
    const perVendor = new Map<string, number>()
    table.chunks.forEach((c, i) => {
      const plain = Math.min(a.chunkSize, a.bytes - i * a.chunkSize)
      if (c.i !== i || c.size !== plain + CHUNK_OVERHEAD) throw new InvalidArgumentError(`chunk ${i} has the wrong index or size`)
      const vendors = new Set(c.replicas.map(r => r.vendor))
      if (c.replicas.length !== a.replicas || vendors.size !== c.replicas.length) throw new InvalidArgumentError(`chunk ${i} needs ${a.replicas} replicas on distinct vendors`)
      for (const v of vendors) {
        if (a.grants[v] == null) throw new AccessDeniedError(`chunk ${i} names vendor ${v}, which was not granted to this allocation`)
        add(perVendor, v, c.size)
      }
    })
    for (const [v, b] of perVendor) {
      if (b > a.grants[v]) throw new AccessDeniedError(`the table puts ${b} bytes on ${v}, over its grant of ${a.grants[v]}`)
    }
    return a
  }

  /** Marks what the final table uses, releases every other lock of the allocation. */
  async commit (table: FileTable, orders: PendingOrder[]): Promise<void> {
    const a = this.allocations.get(table.fileId)
    if (a == null) throw new NotFoundError(`no open allocation ${table.fileId}`)
    this.lock(a, -1)
    this.allocations.delete(a.fileId)
    this.owners.set(table.fileId, table.owner)
    for (const [v, b] of bytesPerVendor(table)) add(this.used, v, b)
    await this.write({ op: 'commit', table }, [
      this.allocRecs.del(a.fileId),
      this.fileRecs.put(table.fileId, table),
      ...orders.map(o => this.orderRecs.put(`${o.vendor}/${o.id}`, o))
    ])
  }

  async expire (fileId: string, orders: PendingOrder[]): Promise<void> {
    const a = this.allocations.get(fileId)
    if (a == null) return
    this.lock(a, -1)
    this.allocations.delete(fileId)
    await this.write({ op: 'expire', fileId }, [this.allocRecs.del(fileId), ...orders.map(o => this.orderRecs.put(`${o.vendor}/${o.id}`, o))])
  }

  // ---- files

  /** The file's table, for its owner only. */
  async file (owner: string, fileId: string): Promise<FileTable> {
    const o = this.owners.get(fileId)
    if (o == null) throw new NotFoundError(`no file ${fileId}; \`stordaemon ls\` lists yours`)
    if (o !== owner) throw new AccessDeniedError(`file ${fileId} belongs to another user`)
    const t = await this.fileRecs.get(fileId)
    if (t == null) throw new NotFoundError(`no file ${fileId}`)
    return t
  }

  async files (owner: string): Promise<FileSummary[]> {
    const out: FileSummary[] = []
    for (const [fileId, o] of this.owners) {
      if (o !== owner) continue
      const t = await this.fileRecs.get(fileId)
      if (t != null) out.push({ fileId, name: t.name, size: t.size, chunks: t.chunks.length, replicas: t.replicas, created: t.created })
    }
    return out.sort((a, b) => a.created - b.created)
  }

  fileCount (): number { return this.owners.size }
  allocationCount (): number { return this.allocations.size }

  async release (table: FileTable, orders: PendingOrder[]): Promise<number> {
    let freed = 0
    for (const [v, b] of bytesPerVendor(table)) { add(this.used, v, -b); freed += b }
    this.owners.delete(table.fileId)
    await this.write({ op: 'release', fileId: table.fileId }, [this.fileRecs.del(table.fileId), ...orders.map(o => this.orderRecs.put(`${o.vendor}/${o.id}`, o))])
    return freed
  }

  // ---- orders owed to vendors

  async pendingOrders (vendor: string, max: number): Promise<PendingOrder[]> {
    const out: PendingOrder[] = []
    for await (const [, o] of this.orderRecs.entries(`${vendor}/`)) {
      if (out.length >= max) break
      out.push(o)
    }
    return out
  }

  async orderDone (vendor: string, ids: string[]): Promise<void> {
    if (ids.length > 0) await this.db.batch(ids.map(id => this.orderRecs.del(`${vendor}/${id}`)))
  }

  private lock (a: AllocationRecord, sign: 1 | -1): void {
    for (const [v, b] of Object.entries(a.grants)) add(this.locked, v, sign * b)
  }

  private async write (op: Op, ops: Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }>): Promise<void> {
    const seq = ++this.seq
    await this.db.batch([...ops, this.logRecs.put(String(seq).padStart(16, '0'), { ...op, seq, at: Date.now() })], { sync: true })
  }
}

function add (m: Map<string, number>, k: string, n: number): void {
  const v = (m.get(k) ?? 0) + n
  if (v === 0) m.delete(k)
  else m.set(k, v)
}

export function bytesPerVendor (t: FileTable): Map<string, number> {
  const m = new Map<string, number>()
  for (const c of t.chunks) for (const r of c.replicas) add(m, r.vendor, c.size)
  return m
}
