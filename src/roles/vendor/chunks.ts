import { AccessDeniedError, IntegrityError, LimitError } from '../../errors.ts'
import { Records, type DB } from '../../store/db.ts'
import type { Devices, PieceRef } from '../../store/devices.ts'
import type { IndexLine } from '../../store/device-files.ts'
import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { Serial } from '../../serial.ts'
import { PAGE_ALIGN } from '../../buffer-pool.ts'

export interface ChunkRecord {
  owner: string
  allocationId: string
  fileId: string
  chunkId: string
  size: number
  pieces: PieceRef[]
  /** Set once the FAT's settle order confirms the chunk is part of a committed file. */
  kept: boolean
  stored: number
  /** Why the chunk can no longer be served (a piece corrupt or gone); it waits for the FAT to replace it. */
  damaged?: string
}

/** The damage mark of a chunk lost with a failed device (it may come back onto this vendor's other devices, or with the device). */
const deviceFailed = (path: string): string => `device ${path} failed`
const DEVICE_FAILED = /^device .* failed$/

/** What the start-up check found. */
export interface CheckReport { chunks: number, damaged: number, quarantined: string[] }

/** What adopting devices re-registered. */
export interface AdoptReport { chunks: number, incomplete: number }

export interface ChunkPlace { owner: string, allocationId: string, fileId: string, chunkId: string }

export interface GrantUse { owner: string, bytes: number, used: number, expires: number, closed?: boolean }

/**
 * The vendor's local table (chunk -> pieces -> device, with hashes) over its devices. A chunk's
 * record is written only after every piece is on disk and checked, so the table never names a
 * piece that is not there.
 */
export class ChunkStore {
  private readonly chunks: Records<ChunkRecord>
  private readonly grants: Records<GrantUse>
  /** allocationId/fileId/chunkId, so a settle order finds an allocation's chunks without a scan */
  private readonly byAllocation: Records<number>
  private readonly serial = new Serial()
  /** Stores in progress, so a retried chunk waits for the first attempt instead of writing twice. */
  private readonly writing = new Map<string, Promise<void>>()
  /** fileId/chunkId of damaged chunks, reported to the FAT on every heartbeat until replaced. */
  private readonly damagedKeys = new Set<string>()
  /** Of those, chunks lost with a failed device (size by key): a healthy replica may be copied back here. */
  private readonly deviceLost = new Map<string, number>()
  private count = 0

  constructor (readonly db: DB, readonly devices: Devices) {
    this.chunks = new Records(db, 'chunk')
    this.grants = new Records(db, 'grant')
    this.byAllocation = new Records(db, 'by-alloc')
  }

  async load (): Promise<number> {
    let n = 0
    for await (const [, c] of this.chunks.entries()) {
      c.pieces.forEach(p => { this.devices.account(p) })
      if (c.damaged != null) this.damagedKeys.add(`${c.fileId}/${c.chunkId}`)
      if (c.damaged != null && DEVICE_FAILED.test(c.damaged)) this.deviceLost.set(`${c.fileId}/${c.chunkId}`, c.size)
      n++
    }
    this.count = n
    return n
  }

  /**
   * Start-up check of the table against the disks: a chunk with a piece missing or of the wrong
   * size is marked damaged; a temporary file (a write cut short by a crash) is removed; any other
   * file in a piece folder that no chunk names is never deleted: it is moved to the device's
   * quarantine folder and reported (`stordaemon quarantine` removes it). Each device's piece index
   * is then rewritten from the table.
   */
  async check (): Promise<CheckReport> {
    const named = new Set<string>()
    let chunks = 0
    let damaged = 0
    await this.devices.rewriteIndexes(async add => {
      for await (const [, c] of this.chunks.entries()) {
        chunks++
        for (const [i, p] of c.pieces.entries()) {
          named.add(`${p.device}\0${p.name}`)
          await add(p.device, indexLine(c, i, p))
        }
        if (c.damaged != null) { damaged++; continue }
        const missing = []
        for (const p of c.pieces) if (!await this.devices.present(p)) missing.push(p.name)
        if (missing.length > 0) {
          await this.markDamaged(c.fileId, c.chunkId, `piece ${missing.join(', ')} missing at start`)
          damaged++
        }
      }
    })
    const quarantined = await this.sweep(named)
    return { chunks, damaged, quarantined }
  }

  /** Moves the files of the piece folders (of one device, or all) that no chunk names into quarantine; temporary files are removed. */
  private async sweep (named: Set<string>, only?: string): Promise<string[]> {
    const moved: string[] = []
    for (const f of await this.devices.files(only)) {
      // a write in progress names its piece only once all pieces are down: leave those alone
      if (named.has(`${f.device}\0${f.name}`) || this.writingPiece(f.name)) continue
      if (f.name.endsWith('.tmp')) { await this.devices.removeTemporary(f.device, f.name); continue }
      await this.devices.quarantine(f.device, f.name)
      moved.push(`${f.device}/${f.name}`)
    }
    return moved
  }

  private writingPiece (name: string): boolean {
    const [fileId, chunkId] = name.split('.')
    return this.writing.has(`${fileId}/${chunkId}`)
  }

  /**
   * Re-registers the pieces of devices taken over from another vendor (`--adopt-device`), from
   * each device's piece index: a chunk whose every piece is there with its recorded size and hash
   * goes into the table as it was; pieces of incomplete or unlisted chunks are left on disk for
   * the start-up check to quarantine. Nothing is deleted.
   */
  async adopt (devices: string[]): Promise<AdoptReport> {
    const report: AdoptReport = { chunks: 0, incomplete: 0 }
    const found = new Map<string, { line: IndexLine, pieces: Map<number, PieceRef> }>()
    for (const device of devices) {
      for (const line of await this.devices.readIndex(device)) {
        const key = `${line.f}/${line.c}`
        // the latest line of a chunk wins: one stored again after an erase may be cut otherwise
        const entry = found.get(key) ?? { line, pieces: new Map() }
        entry.line = line
        entry.pieces.set(line.i, { device, name: `${line.f}.${line.c}.${line.i}`, size: line.z, sha256: line.h, crc32: line.r })
        found.set(key, entry)
      }
    }
    for (const [key, { line, pieces }] of found) {
      if (await this.chunks.get(key) != null) continue
      const refs: PieceRef[] = []
      for (let i = 0; i < line.n; i++) {
        const p = pieces.get(i)
        if (p == null) break
        const ok = await this.devices.read(p).then(() => true, () => false)
        if (!ok) break
        refs.push(p)
      }
      if (refs.length !== line.n || refs.reduce((n, p) => n + p.size, 0) !== line.s) { report.incomplete++; continue }
      const rec: ChunkRecord = { owner: line.o, allocationId: line.a, fileId: line.f, chunkId: line.c, size: line.s, pieces: refs, kept: line.k, stored: Date.now() }
      await this.db.batch([this.chunks.put(key, rec), this.byAllocation.put(`${line.a}/${line.f}/${line.c}`, 1)], { sync: true })
      refs.forEach(p => { this.devices.account(p) })
      this.count++
      report.chunks++
    }
    return report
  }

  /**
   * A device failed: each chunk with a piece there is kept here if it can be, with no network
   * traffic: a piece that still reads back with its hash is copied to another healthy device and
   * the record follows. A chunk with a piece that cannot be read, or no room for it, is marked
   * damaged, and the FAT has a healthy replica copied back.
   */
  async deviceFailed (path: string): Promise<{ moved: number, damaged: number }> {
    let moved = 0
    let damaged = 0
    for await (const [, c] of this.chunks.entries()) {
      if (!c.pieces.some(p => p.device === path)) continue
      // a chunk marked already (the scrub found its piece gone before the device was known to have
      // failed) comes back onto the healthy devices here like the others
      if (c.damaged == null) {
        if (await this.relocate(c, path)) { moved++; continue }
        if (!(await this.markDamaged(c.fileId, c.chunkId, deviceFailed(path)))) continue
      }
      this.deviceLost.set(`${c.fileId}/${c.chunkId}`, c.size)
      damaged++
    }
    return { moved, damaged }
  }

  /** Copies a chunk's pieces off a failed device onto healthy ones; false if any cannot be. */
  private async relocate (c: ChunkRecord, failed: string): Promise<boolean> {
    const written: PieceRef[] = []
    const giveBack = async (): Promise<void> => { await Promise.all(written.map(async r => { await this.devices.remove(r).catch(() => {}) })) }
    try {
      const pieces: PieceRef[] = []
      const avoid = new Set(c.pieces.filter(p => p.device !== failed).map(p => p.device))
      for (const p of c.pieces) {
        if (p.device !== failed) { pieces.push(p); continue }
        const bytes = await this.devices.read(p)
        const ref = await this.devices.write(p.name, bytes, avoid, undefined, p.sha256)
        written.push(ref)
        avoid.add(ref.device)
        pieces.push(ref)
      }
      const swapped = await this.serial.run(async () => {
        const now = await this.get(c.fileId, c.chunkId)
        // erased, replaced or marked meanwhile: the copies are not wanted
        if (now == null || now.stored !== c.stored || now.damaged != null) return false
        await this.db.batch([this.chunks.put(`${c.fileId}/${c.chunkId}`, { ...now, pieces })], { sync: true })
        return true
      })
      if (!swapped) { await giveBack(); return true }
      this.devices.note(pieces.flatMap((p, i) => written.includes(p) ? [{ device: p.device, line: indexLine(c, i, p) }] : []))
      await Promise.all(c.pieces.filter(p => p.device === failed).map(async p => { await this.devices.remove(p).catch(() => {}) }))
      return true
    } catch {
      await giveBack()
      return false
    }
  }

  /**
   * A failed device is back: a chunk marked damaged only because the device failed is served
   * again once all its pieces read back with their hashes (if the FAT replaced it meanwhile, its
   * erase order follows); files that no chunk names any more (erased meanwhile) go to quarantine.
   */
  async deviceReturned (path: string): Promise<{ restored: number, quarantined: string[] }> {
    const named = new Set<string>()
    let restored = 0
    for await (const [, c] of this.chunks.entries()) {
      if (!c.pieces.some(p => p.device === path)) continue
      for (const p of c.pieces) if (p.device === path) named.add(`${p.device}\0${p.name}`)
      if (c.damaged !== deviceFailed(path)) continue
      const whole = await Promise.all(c.pieces.map(async p => await this.devices.read(p))).then(() => true, () => false)
      if (!whole) continue
      const cleared = await this.serial.run(async () => {
        const now = await this.get(c.fileId, c.chunkId)
        if (now == null || now.stored !== c.stored || now.damaged !== c.damaged) return false
        const { damaged: _gone, ...rest } = now
        await this.db.batch([this.chunks.put(`${c.fileId}/${c.chunkId}`, rest)], { sync: true })
        this.damagedKeys.delete(`${c.fileId}/${c.chunkId}`)
        this.deviceLost.delete(`${c.fileId}/${c.chunkId}`)
        return true
      })
      if (cleared) restored++
    }
    return { restored, quarantined: await this.sweep(named, path) }
  }

  /** Chunks in the table. */
  size (): number { return this.count }

  /** Damaged chunks, up to `max`, for the heartbeat. */
  damaged (max: number): Array<{ fileId: string, chunkId: string }> {
    const out = []
    for (const k of this.damagedKeys) {
      if (out.length >= max) break
      const [fileId, chunkId] = k.split('/')
      out.push({ fileId, chunkId })
    }
    return out
  }

  /** Chunks lost with a failed device that fit on the healthy devices, up to `max`, for the heartbeat. */
  restorable (max: number): Array<{ fileId: string, chunkId: string }> {
    const out = []
    for (const [k, size] of this.deviceLost) {
      if (out.length >= max) break
      if (!this.damagedKeys.has(k) || this.devices.choose(size, new Set()) == null) continue
      const [fileId, chunkId] = k.split('/')
      out.push({ fileId, chunkId })
    }
    return out
  }

  /** Marks a chunk unservable; the FAT is told on the next heartbeat and replaces this replica. */
  async markDamaged (fileId: string, chunkId: string, reason: string, unless?: (c: ChunkRecord) => boolean): Promise<boolean> {
    return await this.serial.run(async () => {
      const c = await this.get(fileId, chunkId)
      if (c == null || c.damaged != null || unless?.(c) === true) return false
      await this.db.batch([this.chunks.put(`${fileId}/${chunkId}`, { ...c, damaged: reason })], { sync: true })
      this.damagedKeys.add(`${fileId}/${chunkId}`)
      return true
    })
  }

  /**
   * Stores a chunk copied from another vendor under a FAT transfer order: no grant is counted
   * (the FAT reserved the room), and it is kept at once (the file is committed already). The
   * caller has checked that `bytes` hash to `where.chunkId`.
   */
  async putCopy (where: ChunkPlace, bytes: Uint8Array, pieces: number): Promise<void> {
    const key = `${where.fileId}/${where.chunkId}`
    const running = this.writing.get(key)
    if (running != null) { await running; return }
    const job = (async () => {
      const old = await this.get(where.fileId, where.chunkId)
      if (old != null && old.damaged == null) return
      if (old != null) await this.erase(old)
      await this.writePieces(where, bytes, pieces, true)
    })().finally(() => this.writing.delete(key))
    this.writing.set(key, job)
    await job
  }
  async get (fileId: string, chunkId: string): Promise<ChunkRecord | undefined> {
    return await this.chunks.get(`${fileId}/${chunkId}`)
  }

  /**
   * Cuts a chunk into `pieces` sub-chunks on distinct devices where there are enough, counting its
   * bytes against the owner's grant. Storing the same chunk twice is a no-op. The caller has
   * checked that `bytes` hash to `where.chunkId`.
   */
  async put (where: ChunkPlace, bytes: Uint8Array, pieces: number, grant: { bytes: number, expires: number }): Promise<void> {
    const key = `${where.fileId}/${where.chunkId}`
    const running = this.writing.get(key)
    if (running != null) { await running; return }
    const job = this.write(where, bytes, pieces, grant).finally(() => this.writing.delete(key))
    this.writing.set(key, job)
    await job
  }

  private async write ({ owner, allocationId, fileId, chunkId }: ChunkPlace, bytes: Uint8Array, pieces: number, grant: { bytes: number, expires: number }): Promise<void> {
    const held = await this.get(fileId, chunkId)
    if (held != null) {
      // the same chunk again (a resend) is a no-op; under another owner or allocation it is refused,
      // so nobody can claim, and later erase, a chunk someone else is storing
      if (held.owner === owner && held.allocationId === allocationId) return
      throw new AccessDeniedError(`chunk ${chunkId} of file ${fileId} is held here under another allocation`)
    }
    await this.reserve(owner, allocationId, bytes.byteLength, grant)
    try {
      await this.writePieces({ owner, allocationId, fileId, chunkId }, bytes, pieces, false)
    } catch (err) {
      await this.reserve(owner, allocationId, -bytes.byteLength, grant)
      throw err
    }
  }

  /**
   * Pieces first, each flushed; the record last, so the table never names a missing piece. The
   * caller has checked that `bytes` hash to `chunkId`, so a chunk kept whole needs no second hash.
   */
  private async writePieces ({ owner, allocationId, fileId, chunkId }: ChunkPlace, bytes: Uint8Array, pieces: number, kept: boolean): Promise<void> {
    const refs: PieceRef[] = []
    try {
      // pieces exist to spread a chunk over devices: on fewer devices than pieces, more pieces on
      // one device only cost file operations (open, write, fsync, rename), so a chunk is cut into
      // no more pieces than devices can take one. Every piece, a whole chunk too, gets a CRC-32:
      // reads and scrubs check it at a third of SHA-256's CPU
      let { pieceSize, count } = pieceCut(bytes.byteLength, pieces)
      const devices = this.devices.roomFor(pieceSize)
      if (devices >= 1 && devices < count) ({ pieceSize, count } = pieceCut(bytes.byteLength, devices))
      // the pieces go to their devices at once: each device chosen before any write starts
      const used = new Set<string>()
      const writes: Array<Promise<PieceRef>> = []
      for (let i = 0; i < count; i++) {
        const device = this.devices.choose(pieceSize, used)
        if (device != null) used.add(device)
        const piece = bytes.subarray(i * pieceSize, (i + 1) * pieceSize)
        writes.push(this.devices.write(`${fileId}.${chunkId}.${i}`, piece, used, device))
      }
      const settled = await Promise.allSettled(writes)
      for (const r of settled) if (r.status === 'fulfilled') refs.push(r.value)
      const failed = settled.find(r => r.status === 'rejected')
      if (failed != null) throw (failed as PromiseRejectedResult).reason
      const rec: ChunkRecord = { owner, allocationId, fileId, chunkId, size: bytes.byteLength, pieces: refs, kept, stored: Date.now() }
      await this.db.batch([this.chunks.put(`${fileId}/${chunkId}`, rec), this.byAllocation.put(`${allocationId}/${fileId}/${chunkId}`, 1)], { sync: true })
      this.count++
      this.devices.note(refs.map((p, i) => ({ device: p.device, line: indexLine(rec, i, p) })))
    } catch (err) {
      await Promise.all(refs.map(async r => { await this.devices.remove(r).catch(() => {}) }))
      throw err
    }
  }

  /**
   * Reads a chunk's pieces, in order, into `into` (exactly the chunk's size, e.g. a pooled
   * page-aligned buffer, so the pieces come straight from disk with O_DIRECT), and checks them:
   * each piece against its CRC-32 where all have one (a third of SHA-256's CPU; the check is for
   * what the disk did to bytes already checked against the chunk id when they came in, and
   * whoever receives the chunk checks the chunk id itself), else the whole against the chunk id.
   */
  async read (rec: ChunkRecord, into: Uint8Array): Promise<Uint8Array> {
    if (rec.damaged != null) throw new IntegrityError(`chunk ${rec.chunkId} is damaged here (${rec.damaged}); fetch another replica`)
    if (into.byteLength !== rec.size) throw new RangeError(`read: the buffer holds ${into.byteLength} bytes, chunk ${rec.chunkId} ${rec.size}`)
    let offset = 0
    const reads = rec.pieces.map(p => {
      const part = into.subarray(offset, offset + p.size)
      offset += p.size
      return this.devices.readInto(p, part)
    })
    await Promise.all(reads)
    if (offset !== rec.size) throw new IntegrityError(`chunk ${rec.chunkId}: its pieces hold ${offset} bytes, not ${rec.size}`)
    if (rec.pieces.every(p => p.crc32 != null)) {
      offset = 0
      for (const p of rec.pieces) {
        if (crc32(into.subarray(offset, offset + p.size)) !== p.crc32) throw new IntegrityError(`piece ${p.name} on ${p.device} is corrupt`)
        offset += p.size
      }
      return into
    }
    // one hash over the whole chunk; only when it fails are the pieces checked, to name the bad one
    if (createHash('sha256').update(into).digest('hex') !== rec.chunkId) {
      await Promise.all(rec.pieces.map(async p => await this.devices.read(p)))
      throw new IntegrityError(`chunk ${rec.chunkId} does not match its hash`)
    }
    return into
  }

  /** Of the chunks stored under an allocation, keeps the listed ones (now committed) and erases the rest. */
  async settle (allocationId: string, keep: Set<string>): Promise<number> {
    let erased = 0
    for await (const [key] of this.byAllocation.entries(`${allocationId}/`)) {
      const [, fileId, chunkId] = key.split('/')
      const c = await this.get(fileId, chunkId)
      if (c != null && keep.has(chunkId)) {
        // read again under the queue, so a damage mark made meanwhile is not overwritten
        if (!c.kept) {
          await this.serial.run(async () => {
            const now = await this.get(fileId, chunkId)
            if (now != null) await this.db.batch([this.chunks.put(`${fileId}/${chunkId}`, { ...now, kept: true })])
          })
        }
      } else if (c != null) {
        await this.erase(c)
        erased++
      }
    }
    // settled: the allocation takes no more chunks here, even while its grant has time left
    const use = await this.grants.get(allocationId)
    if (use != null) await this.db.batch([this.grants.put(allocationId, { ...use, closed: true })])
    return erased
  }

  /** Erases every chunk of a released file. */
  async eraseFile (fileId: string): Promise<number> {
    let erased = 0
    for await (const [, c] of this.chunks.entries(`${fileId}/`)) {
      await this.erase(c)
      erased++
    }
    return erased
  }

  /** Erases the listed chunks of one file (replicas that now live elsewhere). */
  async eraseChunks (fileId: string, chunkIds: string[]): Promise<number> {
    let erased = 0
    for (const chunkId of chunkIds) {
      const c = await this.get(fileId, chunkId)
      if (c == null) continue
      await this.erase(c)
      erased++
    }
    return erased
  }

  async list (): Promise<ChunkRecord[]> {
    const out: ChunkRecord[] = []
    for await (const [, c] of this.chunks.entries()) out.push(c)
    return out
  }

  private async erase (c: ChunkRecord): Promise<void> {
    const gone = await this.serial.run(async () => {
      if (await this.get(c.fileId, c.chunkId) == null) return true
      await this.db.batch([this.chunks.del(`${c.fileId}/${c.chunkId}`), this.byAllocation.del(`${c.allocationId}/${c.fileId}/${c.chunkId}`)], { sync: true })
      this.count--
      this.damagedKeys.delete(`${c.fileId}/${c.chunkId}`)
      this.deviceLost.delete(`${c.fileId}/${c.chunkId}`)
      return false
    })
    if (gone) return
    await Promise.all(c.pieces.map(async p => { await this.devices.remove(p) }))
  }

  private async reserve (owner: string, allocationId: string, delta: number, grant: { bytes: number, expires: number }): Promise<void> {
    await this.serial.run(async () => {
      const use = await this.grants.get(allocationId) ?? { owner, bytes: grant.bytes, used: 0, expires: grant.expires }
      if (delta > 0 && use.closed === true) throw new AccessDeniedError(`allocation ${allocationId} is settled: it takes no more chunks`)
      if (delta > 0 && use.used + delta > use.bytes) {
        throw new LimitError(`the grant for allocation ${allocationId} allows ${use.bytes} bytes here; ${use.used} are used and this chunk needs ${delta}`)
      }
      await this.db.batch([this.grants.put(allocationId, { ...use, used: Math.max(0, use.used + delta) })])
    })
  }
}

/**
 * How a chunk of `size` bytes asked to be cut in `pieces` is cut: pieces start on page boundaries
 * of the chunk's buffer, so each can be written to its device with O_DIRECT (see Devices.write);
 * the last piece may be shorter, and a small chunk may make fewer pieces than asked.
 */
export function pieceCut (size: number, pieces: number): { pieceSize: number, count: number } {
  const pieceSize = Math.max(1, Math.ceil(Math.ceil(size / pieces) / PAGE_ALIGN) * PAGE_ALIGN)
  return { pieceSize, count: Math.max(1, Math.ceil(size / pieceSize)) }
}

/** A piece's line in its device's index. */
function indexLine (c: ChunkRecord, i: number, p: PieceRef): IndexLine {
  return { o: c.owner, a: c.allocationId, f: c.fileId, c: c.chunkId, s: c.size, n: c.pieces.length, i, z: p.size, ...(p.crc32 != null ? { r: p.crc32 } : { h: p.sha256 }), k: c.kept }
}
