import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { access, constants, mkdir, open, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { InvalidArgumentError, IntegrityError, NoSpaceError } from '../errors.ts'
import { formatSize, parseSize } from '../units.ts'
import { DIRECT_FLAG, openDirect, readAt } from './direct.ts'
import type { Logger } from '../logger.ts'
import { IndexRewrite, IndexWriter, MARKER_FILE, PIECES_DIR, quarantine, readIndex, readMarker, writeDurably, writeMarker, type IndexLine } from './device-files.ts'

export interface DeviceSpec { path: string, quota?: number }

export interface DeviceInfo { path: string, capacity: number, used: number, free: number, failed: boolean, reason?: string }

/**
 * Where a piece is, and its checksum: the SHA-256 when the piece is a whole chunk (its id) or was
 * written before CRC-32s were used, else the CRC-32. A piece's checksum only finds disk damage and
 * names the bad piece; a chunk is always checked whole against its SHA-256 id when it is served,
 * so a piece needs no second cryptographic hash (CRC-32: 0.14 ms of CPU per MB here, SHA-256: 0.49).
 */
export interface PieceRef { device: string, name: string, size: number, sha256?: string, crc32?: number }

/**
 * Parses --device PATH[:SIZE]. The text after the last colon is a quota unless it holds a slash
 * (then the colon is part of the path); a quota that is not a size is an error, not a folder name.
 */
export function parseDeviceSpec (text: string): DeviceSpec {
  const colon = text.lastIndexOf(':')
  const tail = colon >= 0 ? text.slice(colon + 1) : ''
  const hasQuota = colon >= 0 && !tail.includes('/')
  const path = hasQuota ? text.slice(0, colon) : text
  if (path.trim() === '') throw new InvalidArgumentError(`--device: "${text}" is not PATH or PATH:SIZE`)
  let quota: number | undefined
  if (hasQuota) {
    try {
      quota = parseSize(tail, `--device ${text}`)
    } catch {
      throw new InvalidArgumentError(`--device ${text}: "${tail}" is not a size; write PATH:SIZE like /mnt/disk1:500GiB, or the PATH alone to offer the whole disk`)
    }
    if (quota < 1) throw new InvalidArgumentError(`--device ${text}: a quota must be more than 0 bytes`)
  }
  return { path: resolve(path), quota }
}

export function sha256 (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Space a piece file takes beyond its blocks: its directory entry (about 100 bytes for a
 * 100-character name) and its line in the device's piece index (about 300 bytes).
 */
export const PIECE_OVERHEAD = 512

export interface OpenDevicesOptions {
  /** The vendor's peer id: written in each device's owner marker, and checked against it. */
  owner: string
  /** Create a device folder that does not exist (else it is refused: it may be an unmounted disk's mount point). */
  create?: boolean
  /** Paths of devices marked by another vendor that this vendor takes over on purpose (their pieces are re-registered). */
  adopt?: Set<string>
  /** Told about a quota capped to the space there is. */
  warn?: (message: string) => void
}

/** A piece's checksum: its SHA-256 if the caller has it (a piece that is a whole chunk), else its CRC-32. */
function checksum (bytes: Uint8Array, sha?: string): Pick<PieceRef, 'sha256' | 'crc32'> {
  return sha != null ? { sha256: sha } : { crc32: crc32(bytes) }
}

/** Does `bytes` match the piece's recorded checksum? */
function matches (piece: PieceRef, bytes: Uint8Array): boolean {
  if (piece.crc32 != null) return crc32(bytes) === piece.crc32
  return sha256(bytes) === piece.sha256
}

interface Device extends DeviceInfo {
  dir: string
  /** bytes given by --device PATH:SIZE; undefined offers the file system's space */
  quota?: number
  /** the file system's block size: a piece takes whole blocks */
  blockSize: number
  /** bytes the file system has available, as last measured */
  available: number
  /** the device had no owner marker: it is used for the first time */
  fresh: boolean
  /** taken over on purpose (--adopt-device): its pieces are to be re-registered from its index */
  adopted: boolean
  index: IndexWriter
  /** Writes may bypass the page cache (O_DIRECT); false once the file system refused it. */
  direct: boolean
}

/** The disks a vendor offers: directories with quotas, where pieces are written durably and checked. */
export class Devices {
  /** Called once when a device is marked failed (a failed write, or its directory is gone). */
  onFail?: (path: string, reason: string) => void
  /** Called when a failed device works again (its folder and owner marker are back). */
  onReturn?: (path: string) => void

  private constructor (private readonly devices: Device[], private readonly owner: string, private readonly log: Logger, private readonly warn: (message: string) => void) {}

  static async open (specs: DeviceSpec[], log: Logger, opts: OpenDevicesOptions): Promise<Devices> {
    if (specs.length === 0) throw new InvalidArgumentError('--device: a vendor needs at least one --device PATH[:SIZE]')
    const devices: Device[] = []
    for (const spec of specs) {
      if (devices.some(d => d.path === spec.path)) throw new InvalidArgumentError(`--device ${spec.path}: given twice`)
      await checkFolder(spec.path, opts.create === true)
      let marker
      try {
        marker = await readMarker(spec.path)
      } catch (err: any) {
        throw new InvalidArgumentError(`--device ${spec.path}: ${err.message}; if this device is yours, take it over with --adopt-device ${spec.path}`)
      }
      const adopt = opts.adopt?.has(spec.path) === true
      if (marker != null && marker.vendor !== opts.owner && !adopt) {
        throw new InvalidArgumentError(`--device ${spec.path}: belongs to vendor ${marker.vendor}, not this one (${opts.owner}); run that vendor with its own --data-dir, or take the device over on purpose with --adopt-device ${spec.path}`)
      }
      const dir = join(spec.path, PIECES_DIR)
      const fsInfo = await statfs(spec.path)
      const available = fsInfo.bavail * fsInfo.bsize
      // a device used for the first time can only be promised what its file system has free; one
      // in use already is checked once its pieces are counted (checkQuotas)
      const fresh = marker == null && (await readdir(dir).catch(() => [] as string[])).length === 0
      if (fresh && spec.quota != null && spec.quota > available) {
        throw new InvalidArgumentError(`--device ${spec.path}:${formatSize(spec.quota)}: the quota is more than the ${formatSize(available)} free on that disk; give at most that, or free space first`)
      }
      try {
        await mkdir(dir, { recursive: true })
        const probe = join(dir, '.probe')
        await writeFile(probe, 'ok')
        await rm(probe)
      } catch (err: any) {
        throw new InvalidArgumentError(`--device ${spec.path}: not a writable directory (${err.code ?? err.message}); create it or fix its permissions`)
      }
      devices.push({ path: spec.path, dir, quota: spec.quota, capacity: spec.quota ?? available, used: 0, free: Math.min(spec.quota ?? available, available), failed: false, blockSize: fsInfo.bsize > 0 ? fsInfo.bsize : 4096, available, fresh, adopted: adopt, index: new IndexWriter(spec.path), direct: DIRECT_FLAG != null })
    }
    // marked only once every device passed its checks, so a refused start marks nothing
    for (const d of devices) if (d.fresh || d.adopted || await readMarker(d.path) == null) await writeMarker(d.path, opts.owner)
    return new Devices(devices, opts.owner, log, opts.warn ?? (() => {}))
  }

  info (): DeviceInfo[] {
    return this.devices.map(({ path, capacity, used, free, failed, reason }) => ({ path, capacity, used, free, failed, ...(reason != null ? { reason } : {}) }))
  }

  /** Paths of devices taken over at this start (from another vendor, or from this one's lost table). */
  adopted (): string[] { return this.devices.filter(d => d.adopted).map(d => d.path) }

  capacity (): number { return this.devices.reduce((n, d) => n + d.capacity, 0) }
  /** Capacity of the devices that have not failed. */
  healthyCapacity (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : d.capacity), 0) }
  /** Bytes pieces take on devices that have not failed. */
  used (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : d.used), 0) }
  isFailed (path: string): boolean { return this.byPath(path)?.failed ?? true }

  /** Bytes a piece of `size` takes on a device: whole blocks, and its directory entry and index line. */
  footprint (path: string, size: number): number {
    const bs = this.byPath(path)?.blockSize ?? 4096
    return Math.ceil(size / bs) * bs + PIECE_OVERHEAD
  }

  /** Marks a device failed: nothing more is written there, and its pieces are to be replaced. */
  fail (path: string, reason: string): void {
    const d = this.byPath(path)
    if (d == null || d.failed) return
    d.failed = true
    d.reason = reason
    void d.index.close()
    this.log.error('device %s failed: %s', path, reason)
    this.onFail?.(path, reason)
  }

  /**
   * Checks every healthy device's folder is still there and writable, and measures its free space
   * (a disk filled by something else offers less); marks the others failed. A failed device is
   * tried again: once its folder is writable and holds this vendor's owner marker (the same disk
   * is back), it returns.
   */
  async probe (): Promise<{ failed: string[], returned: string[] }> {
    const failed: string[] = []
    const returned: string[] = []
    for (const d of this.devices) {
      if (d.failed) {
        if (await this.works(d)) {
          d.failed = false
          d.reason = undefined
          this.log('device %s works again', d.path)
          returned.push(d.path)
          this.onReturn?.(d.path)
        }
        continue
      }
      try {
        if (!(await stat(d.dir)).isDirectory()) throw new Error('not a directory')
        await access(d.dir, constants.W_OK)
      } catch (err: any) {
        this.fail(d.path, `its folder ${d.dir} is gone or not writable (${err.code ?? err.message})`)
        failed.push(d.path)
        continue
      }
      // another disk mounted in its place, or the device handed to another vendor: stop using it
      const marker = await readMarker(d.path).catch(() => undefined)
      if (marker?.vendor !== this.owner) {
        this.fail(d.path, marker == null ? `its owner marker ${join(d.path, MARKER_FILE)} is gone` : `its owner marker names vendor ${marker.vendor} now`)
        failed.push(d.path)
        continue
      }
      await this.measure(d)
    }
    return { failed, returned }
  }

  /** A failed device works again: its folder is there and writable, and its marker is this vendor's. */
  private async works (d: Device): Promise<boolean> {
    try {
      const marker = await readMarker(d.path)
      if (marker?.vendor !== this.owner) {
        d.reason = marker == null
          ? `its folder holds no owner marker (another disk, or an unmounted mount point?); restart the vendor to take it as a new device`
          : `its folder belongs to vendor ${marker.vendor} now`
        return false
      }
      const probe = join(d.dir, '.probe')
      const fh = await open(probe, 'w')
      try { await fh.write(Buffer.from('ok')); await fh.sync() } finally { await fh.close() }
      await rm(probe)
      await this.measure(d)
      return true
    } catch {
      return false
    }
  }

  /** The file system's available bytes now: a device never offers more than that. */
  private async measure (d: Device): Promise<void> {
    try {
      const s = await statfs(d.dir)
      d.available = s.bavail * s.bsize
    } catch {}
    if (d.quota == null) d.capacity = d.used + d.available
    this.refresh(d)
  }

  private refresh (d: Device): void {
    d.free = Math.min(d.capacity - d.used, d.available)
  }

  /**
   * After the pieces are counted: a quota over what the disk can hold (its pieces plus its free
   * space) is capped, with a warning; a device used for the first time was refused at open instead.
   */
  checkQuotas (): void {
    for (const d of this.devices) {
      if (d.quota == null) continue
      const room = d.used + d.available
      if (d.quota > room) {
        d.capacity = room
        this.refresh(d)
        this.warn(`--device ${d.path}: the quota of ${formatSize(d.quota)} is more than the disk holds (${formatSize(room)} with the pieces on it); offering ${formatSize(room)}`)
      }
    }
  }

  /** Is the piece on its device with its recorded size? (a quick check, without reading it) */
  async present (piece: PieceRef): Promise<boolean> {
    const d = this.byPath(piece.device)
    if (d == null || d.failed) return false
    try {
      return (await stat(join(d.dir, piece.name))).size === piece.size
    } catch {
      return false
    }
  }

  /** Every file in the piece folders of healthy devices (or of `only`), to find those no table names. */
  async files (only?: string): Promise<Array<{ device: string, name: string }>> {
    const out: Array<{ device: string, name: string }> = []
    for (const d of this.devices) {
      if (d.failed || (only != null && d.path !== only)) continue
      for (const name of await readdir(d.dir).catch(() => [] as string[])) out.push({ device: d.path, name })
    }
    return out
  }

  /** Removes a temporary file a write cut short by a crash left behind. */
  async removeTemporary (device: string, name: string): Promise<void> {
    const d = this.byPath(device)
    if (d != null && name.endsWith('.tmp')) await rm(join(d.dir, name), { force: true })
  }

  /** Moves a file no table names out of the piece folder, into the device's quarantine folder. */
  async quarantine (device: string, name: string): Promise<string> {
    return await quarantine(device, name)
  }

  /** The index lines of a device (to re-register an adopted device's pieces). */
  async readIndex (device: string): Promise<IndexLine[]> { return await readIndex(device) }

  /** Records pieces just written in their devices' indexes. */
  note (lines: Array<{ device: string, line: IndexLine }>): void {
    for (const { device, line } of lines) {
      const d = this.byPath(device)
      if (d != null && !d.failed) d.index.write(line)
    }
  }

  /**
   * Rewrites every healthy device's index from the table (at start: erased pieces drop out): `fill`
   * adds each piece's line; the new indexes replace the old ones only once all are written.
   */
  async rewriteIndexes (fill: (add: (device: string, line: IndexLine) => Promise<void>) => Promise<void>): Promise<void> {
    const rewrites = new Map<string, IndexRewrite>()
    for (const d of this.devices) {
      if (d.failed) continue
      await d.index.close()
      rewrites.set(d.path, new IndexRewrite(d.path))
    }
    try {
      await fill(async (device, line) => { await rewrites.get(device)?.add(line) })
    } catch (err) {
      await Promise.all([...rewrites.values()].map(async r => { await r.abort() }))
      throw err
    }
    for (const r of rewrites.values()) await r.finish()
  }

  async close (): Promise<void> {
    await Promise.all(this.devices.map(async d => { await d.index.close() }))
  }

  free (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : Math.max(0, d.free)), 0) }

  /** Counts a piece already on disk (from the local table at start). */
  account (piece: PieceRef): void {
    const d = this.byPath(piece.device)
    if (d == null) return
    d.used += this.footprint(d.path, piece.size)
    // without a quota, capacity is what the pieces take plus the disk's free space
    if (d.quota == null) d.capacity = d.used + d.available
    this.refresh(d)
  }

  /** How many healthy devices have room for `bytes` (a piece's size) now. */
  roomFor (bytes: number): number {
    return this.order(bytes, new Set()).length
  }

  /** The healthy device with the most room for `bytes`, preferring those not in `avoid`. */
  choose (bytes: number, avoid: Set<string>): string | undefined {
    return this.order(bytes, avoid)[0]?.path
  }

  private order (bytes: number, avoid: Set<string>, first?: string): Device[] {
    return this.devices
      .filter(d => !d.failed && d.free >= this.footprint(d.path, bytes))
      .sort((a, b) => Number(b.path === first) - Number(a.path === first) || Number(avoid.has(a.path) && a.path !== first) - Number(avoid.has(b.path) && b.path !== first) || b.free - a.free)
  }

  /**
   * Writes a piece to `first` if given, else to the healthy device with the most room, preferring
   * those not in `avoid`; a write counts once it and its folder are flushed. (It is not read back:
   * that would read the page cache, not the disk; reads and the scrubber check the checksum.) A
   * full disk (ENOSPC) is counted as full until the next probe measures it again; any other
   * failure marks the device failed; the piece then goes to the next device. A piece's checksum is
   * its CRC-32; `hash` keeps the SHA-256 a piece was recorded with (one moved off a failed device,
   * stored whole before pieces had a CRC-32 each).
   */
  async write (name: string, bytes: Uint8Array, avoid: Set<string>, first?: string, hash?: string): Promise<PieceRef> {
    const sum = checksum(bytes, hash)
    for (const d of this.order(bytes.byteLength, avoid, first)) {
      // the room is taken before the write starts, so pieces written at once do not overbook a device
      const takes = this.footprint(d.path, bytes.byteLength)
      d.used += takes
      this.refresh(d)
      try {
        await writeDurably(join(d.dir, name), bytes, d)
        return { device: d.path, name, size: bytes.byteLength, ...sum }
      } catch (err: any) {
        d.used -= takes
        await Promise.all([name, `${name}.tmp`].map(async n => { await rm(join(d.dir, n), { force: true }).catch(() => {}) }))
        if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
          this.log.error('device %s is full (%s): nothing more goes there until it has room', d.path, err.code)
          d.available = 0
          this.refresh(d)
        } else {
          this.refresh(d)
          this.fail(d.path, `writing ${name}: ${err.message}`)
        }
      }
    }
    throw new NoSpaceError(`no healthy device has room for ${bytes.byteLength} bytes`)
  }

  /** Reads a piece and checks its size, and its checksum unless `hash` is false (the caller checks the whole chunk). */
  async read (piece: PieceRef, hash = true): Promise<Uint8Array> {
    const d = this.byPath(piece.device)
    if (d == null) throw new IntegrityError(`device ${piece.device} is no longer configured`)
    const bytes = await readFile(join(d.dir, piece.name))
    if (bytes.byteLength !== piece.size || (hash && !matches(piece, bytes))) throw new IntegrityError(`piece ${piece.name} on ${piece.device} is corrupt`)
    return bytes
  }

  /**
   * Reads a piece into `into` (exactly its size), the aligned part with O_DIRECT where the device
   * allows it, and checks its size; the caller checks the bytes (the whole chunk's hash).
   */
  async readInto (piece: PieceRef, into: Uint8Array): Promise<void> {
    const d = this.byPath(piece.device)
    if (d == null) throw new IntegrityError(`device ${piece.device} is no longer configured`)
    if (into.byteLength !== piece.size) throw new RangeError(`readInto: the buffer holds ${into.byteLength} bytes, piece ${piece.name} ${piece.size}`)
    const path = join(d.dir, piece.name)
    const fh = await open(path, 'r')
    try {
      const direct = d.direct ? await openDirect(path, 'read') : undefined
      try {
        const got = await readAt(fh, direct, into, 0)
        const { size } = await fh.stat()
        if (got !== piece.size || size !== piece.size) throw new IntegrityError(`piece ${piece.name} on ${piece.device} is corrupt (${size} bytes, ${piece.size} recorded)`)
      } finally {
        await direct?.close()
      }
    } finally {
      await fh.close()
    }
  }

  async remove (piece: PieceRef): Promise<void> {
    const d = this.byPath(piece.device)
    if (d == null) return
    // a failed device may be gone altogether: the piece is then gone with it
    await rm(join(d.dir, piece.name), { force: true }).catch(err => { if (!d.failed) throw err })
    d.used = Math.max(0, d.used - this.footprint(d.path, piece.size))
    if (d.quota == null) d.capacity = d.used + d.available
    this.refresh(d)
  }

  private byPath (path: string): Device | undefined {
    return this.devices.find(d => d.path === path)
  }
}

/** A device folder must exist (unless `create`) and be a directory. */
async function checkFolder (path: string, create: boolean): Promise<void> {
  let info
  try {
    info = await stat(path)
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw new InvalidArgumentError(`--device ${path}: not a writable directory (${err.code ?? err.message}); create it or fix its permissions`)
    // a missing folder is often a disk that is not mounted: filling its mount point would fill the root file system
    if (!create) throw new InvalidArgumentError(`--device ${path}: does not exist (is its disk mounted?); create the folder, or pass --create-device to have it created`)
    try {
      await mkdir(path, { recursive: true })
      return
    } catch (e: any) {
      throw new InvalidArgumentError(`--device ${path}: cannot be created (${e.code ?? e.message})`)
    }
  }
  if (!info.isDirectory()) throw new InvalidArgumentError(`--device ${path}: not a writable directory (it is a file)`)
}
