import { AccessDeniedError, IntegrityError, LimitError } from '../../errors.ts'
import { Records, type DB } from '../../store/db.ts'
import type { Devices, PieceRef } from '../../store/devices.ts'
import { sha256 } from '../../store/devices.ts'
import { Serial } from '../../serial.ts'

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
}

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

  constructor (readonly db: DB, readonly devices: Devices) {
    this.chunks = new Records(db, 'chunk')
    this.grants = new Records(db, 'grant')
    this.byAllocation = new Records(db, 'by-alloc')
  }

  async load (): Promise<number> {
    let n = 0
    for await (const [, c] of this.chunks.entries()) { c.pieces.forEach(p => { this.devices.account(p) }); n++ }
    return n
  }

  async get (fileId: string, chunkId: string): Promise<ChunkRecord | undefined> {
    return await this.chunks.get(`${fileId}/${chunkId}`)
  }

  /**
   * Cuts a chunk into `pieces` sub-chunks on distinct devices where there are enough, counting its
   * bytes against the owner's grant. Storing the same chunk twice is a no-op.
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
    const refs: PieceRef[] = []
    try {
      const pieceSize = Math.max(1, Math.ceil(bytes.byteLength / pieces))
      const used = new Set<string>()
      for (let i = 0; i * pieceSize < bytes.byteLength || i === 0; i++) {
        const ref = await this.devices.write(`${fileId}.${chunkId}.${i}`, bytes.subarray(i * pieceSize, (i + 1) * pieceSize), used)
        used.add(ref.device)
        refs.push(ref)
      }
      const rec: ChunkRecord = { owner, allocationId, fileId, chunkId, size: bytes.byteLength, pieces: refs, kept: false, stored: Date.now() }
      await this.db.batch([this.chunks.put(`${fileId}/${chunkId}`, rec), this.byAllocation.put(`${allocationId}/${fileId}/${chunkId}`, 1)], { sync: true })
    } catch (err) {
      await Promise.all(refs.map(async r => { await this.devices.remove(r) }))
      await this.reserve(owner, allocationId, -bytes.byteLength, grant)
      throw err
    }
  }

  /** Reassembles a chunk from its pieces and checks it against its id. */
  async read (rec: ChunkRecord): Promise<Uint8Array> {
    const parts = await Promise.all(rec.pieces.map(async p => await this.devices.read(p)))
    const bytes = Buffer.concat(parts)
    if (sha256(bytes) !== rec.chunkId) throw new IntegrityError(`chunk ${rec.chunkId} does not match its hash`)
    return bytes
  }

  /** Of the chunks stored under an allocation, keeps the listed ones (now committed) and erases the rest. */
  async settle (allocationId: string, keep: Set<string>): Promise<number> {
    let erased = 0
    for await (const [key] of this.byAllocation.entries(`${allocationId}/`)) {
      const [, fileId, chunkId] = key.split('/')
      const c = await this.get(fileId, chunkId)
      if (c != null && keep.has(chunkId)) {
        if (!c.kept) await this.db.batch([this.chunks.put(`${fileId}/${chunkId}`, { ...c, kept: true })])
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

  async list (): Promise<ChunkRecord[]> {
    const out: ChunkRecord[] = []
    for await (const [, c] of this.chunks.entries()) out.push(c)
    return out
  }

  private async erase (c: ChunkRecord): Promise<void> {
    await this.db.batch([this.chunks.del(`${c.fileId}/${c.chunkId}`), this.byAllocation.del(`${c.allocationId}/${c.fileId}/${c.chunkId}`)], { sync: true })
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
