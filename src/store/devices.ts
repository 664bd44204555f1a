import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { access, constants, mkdir, open, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { InvalidArgumentError, IntegrityError, NoSpaceError } from '../errors.ts'
import { parseSize } from '../units.ts'
import { DIRECT_FLAG, openDirect, readAt, writeAt } from './direct.ts'
import type { Logger } from '../logger.ts'

export interface DeviceSpec { path: string, quota?: number }

export interface DeviceInfo { path: string, capacity: number, used: number, free: number, failed: boolean }

/**
 * Where a piece is, and its checksum: the SHA-256 when the piece is a whole chunk (its id) or was
 * written before CRC-32s were used, else the CRC-32. A piece's checksum only finds disk damage and
 * names the bad piece; a chunk is always checked whole against its SHA-256 id when it is served,
 * so a piece needs no second cryptographic hash (CRC-32: 0.14 ms of CPU per MB here, SHA-256: 0.49).
 */
export interface PieceRef { device: string, name: string, size: number, sha256?: string, crc32?: number }

/** Parses --device PATH[:SIZE]. */
export function parseDeviceSpec (text: string): DeviceSpec {
  const m = /^(.+?)(?::([0-9.]+\s*[a-zA-Z]*))?$/.exec(text)
  if (m == null || m[1] === '') throw new InvalidArgumentError(`--device: "${text}" is not PATH or PATH:SIZE`)
  return { path: resolve(m[1]), quota: m[2] != null ? parseSize(m[2], `--device ${text}`) : undefined }
}

export function sha256 (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
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
  quota: boolean
  /** Writes may bypass the page cache (O_DIRECT); false once the file system refused it. */
  direct: boolean
}

/** The disks a vendor offers: directories with quotas, where pieces are written durably and checked. */
export class Devices {
  /** Called once when a device is marked failed (a failed write, or its directory is gone). */
  onFail?: (path: string, reason: string) => void

  private constructor (private readonly devices: Device[], private readonly log: Logger) {}

  static async open (specs: DeviceSpec[], log: Logger): Promise<Devices> {
    if (specs.length === 0) throw new InvalidArgumentError('--device: a vendor needs at least one --device PATH[:SIZE]')
    const devices: Device[] = []
    for (const spec of specs) {
      const dir = join(spec.path, 'stor-pieces')
      try {
        await mkdir(dir, { recursive: true })
        const probe = join(dir, '.probe')
        await writeFile(probe, 'ok')
        await rm(probe)
      } catch (err: any) {
        throw new InvalidArgumentError(`--device ${spec.path}: not a writable directory (${err.code ?? err.message}); create it or fix its permissions`)
      }
      const fsInfo = await statfs(dir)
      const capacity = spec.quota ?? fsInfo.bavail * fsInfo.bsize
      if (devices.some(d => d.path === spec.path)) throw new InvalidArgumentError(`--device ${spec.path}: given twice`)
      devices.push({ path: spec.path, dir, capacity, used: 0, free: capacity, failed: false, quota: spec.quota != null, direct: DIRECT_FLAG != null })
    }
    return new Devices(devices, log)
  }

  info (): DeviceInfo[] {
    return this.devices.map(({ path, capacity, used, free, failed }) => ({ path, capacity, used, free, failed }))
  }

  capacity (): number { return this.devices.reduce((n, d) => n + d.capacity, 0) }
  /** Capacity of the devices that have not failed. */
  healthyCapacity (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : d.capacity), 0) }
  /** Bytes of pieces on devices that have not failed. */
  used (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : d.used), 0) }
  isFailed (path: string): boolean { return this.byPath(path)?.failed ?? true }

  /** Marks a device failed: nothing more is written there, and its pieces are to be replaced. */
  fail (path: string, reason: string): void {
    const d = this.byPath(path)
    if (d == null || d.failed) return
    d.failed = true
    this.log.error('device %s failed: %s', path, reason)
    this.onFail?.(path, reason)
  }

  /** Checks that every healthy device's folder is still there and writable; marks the others failed. */
  async probe (): Promise<string[]> {
    const failed: string[] = []
    for (const d of this.devices) {
      if (d.failed) continue
      try {
        if (!(await stat(d.dir)).isDirectory()) throw new Error('not a directory')
        await access(d.dir, constants.W_OK)
      } catch (err: any) {
        this.fail(d.path, `its folder ${d.dir} is gone or not writable (${err.code ?? err.message})`)
        failed.push(d.path)
      }
    }
    return failed
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

  /** Every file in the devices' piece folders, to find leftovers no table names. */
  async files (): Promise<Array<{ device: string, name: string }>> {
    const out: Array<{ device: string, name: string }> = []
    for (const d of this.devices) {
      if (d.failed) continue
      for (const name of await readdir(d.dir).catch(() => [] as string[])) out.push({ device: d.path, name })
    }
    return out
  }

  /** Removes a file no table names (a write cut short by a crash). */
  async removeLeftover (device: string, name: string): Promise<void> {
    const d = this.byPath(device)
    if (d != null) await rm(join(d.dir, name), { force: true })
  }
  free (): number { return this.devices.reduce((n, d) => n + (d.failed ? 0 : d.free), 0) }

  /** Counts a piece already on disk (from the local table at start). */
  account (piece: PieceRef): void {
    const d = this.byPath(piece.device)
    if (d == null) return
    // without a quota, capacity was the disk's free space, which these pieces already took
    if (!d.quota) d.capacity += piece.size
    d.used += piece.size
    d.free = d.capacity - d.used
  }

  /** The healthy device with the most room for `bytes`, preferring those not in `avoid`. */
  choose (bytes: number, avoid: Set<string>): string | undefined {
    return this.order(bytes, avoid)[0]?.path
  }

  private order (bytes: number, avoid: Set<string>, first?: string): Device[] {
    return this.devices
      .filter(d => !d.failed && d.free >= bytes)
      .sort((a, b) => Number(b.path === first) - Number(a.path === first) || Number(avoid.has(a.path) && a.path !== first) - Number(avoid.has(b.path) && b.path !== first) || b.free - a.free)
  }

  /**
   * Writes a piece to `first` if given, else to the healthy device with the most room, preferring
   * those not in `avoid`; a write counts once it and its folder are flushed. (It is not read back:
   * that would read the page cache, not the disk; reads and the scrubber check the hash.) A
   * failing device is marked failed and the piece goes to the next one. `hash` is the bytes'
   * SHA-256 if the caller has it already (a piece that is a whole chunk); otherwise the piece's
   * checksum is its CRC-32.
   */
  async write (name: string, bytes: Uint8Array, avoid: Set<string>, first?: string, hash?: string): Promise<PieceRef> {
    const sum = checksum(bytes, hash)
    for (const d of this.order(bytes.byteLength, avoid, first)) {
      // the room is taken before the write starts, so pieces written at once do not overbook a device
      d.used += bytes.byteLength
      d.free = d.capacity - d.used
      try {
        await writeDurably(join(d.dir, name), bytes, d)
        return { device: d.path, name, size: bytes.byteLength, ...sum }
      } catch (err: any) {
        d.used -= bytes.byteLength
        d.free = d.capacity - d.used
        this.fail(d.path, `writing ${name}: ${err.message}`)
        await Promise.all([name, `${name}.tmp`].map(async n => { await rm(join(d.dir, n), { force: true }).catch(() => {}) }))
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
    d.used = Math.max(0, d.used - piece.size)
    d.free = d.capacity - d.used
  }

  private byPath (path: string): Device | undefined {
    return this.devices.find(d => d.path === path)
  }
}

/** Writes a piece under a temporary name, flushes it, and renames it into place. */
async function writeDurably (path: string, bytes: Uint8Array, device: { direct: boolean }): Promise<void> {
  const tmp = `${path}.tmp`
  const fh = await open(tmp, 'w')
  try {
    // the aligned head bypasses the page cache (see direct.ts); a file system that refuses
    // O_DIRECT is not asked again
    const direct = device.direct ? await openDirect(tmp, 'write') : undefined
    if (direct == null) device.direct = false
    try {
      await writeAt(fh, direct, bytes, 0)
    } finally {
      await direct?.close()
    }
    // flushes what went either way: the page-cache tail, the direct head out of the disk's cache, the size
    await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, path)
  // the rename itself must survive a crash too
  const dir = await open(dirname(path), 'r')
  try { await dir.sync() } finally { await dir.close() }
}
