import { createWriteStream, type WriteStream } from 'node:fs'
import { once } from 'node:events'
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { openDirect, writeAt } from './direct.ts'

/**
 * The files a vendor keeps on each device besides its pieces: the owner marker (which vendor the
 * device belongs to), the piece index (enough to re-register the pieces without the vendor's own
 * table, when a device is adopted), and the quarantine folder (pieces no table names, kept until
 * an operator removes them).
 */
export const MARKER_FILE = 'stor-owner.json'
export const INDEX_FILE = 'stor-index.jsonl'
export const PIECES_DIR = 'stor-pieces'
export const QUARANTINE_DIR = 'stor-quarantine'
const MARKER_FORMAT = 'stordaemon-device/1'

export interface DeviceMarker { format: string, vendor: string, since: number }

/** The owner marker of a device folder; undefined if there is none; throws if it is unreadable. */
export async function readMarker (device: string): Promise<DeviceMarker | undefined> {
  const path = join(device, MARKER_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err: any) {
    if (err.code === 'ENOENT') return undefined
    throw err
  }
  try {
    const m = JSON.parse(text)
    if (m?.format === MARKER_FORMAT && typeof m.vendor === 'string' && typeof m.since === 'number') return m
  } catch {}
  throw new Error(`${path} is not a ${MARKER_FORMAT} marker`)
}

/** Marks a device as `vendor`'s: written to a temporary file, flushed, renamed, and the folder flushed. */
export async function writeMarker (device: string, vendor: string): Promise<void> {
  const body: DeviceMarker = { format: MARKER_FORMAT, vendor, since: Date.now() }
  await writeDurably(join(device, MARKER_FILE), Buffer.from(`${JSON.stringify(body)}\n`))
}

/**
 * Writes a file through `.tmp`, fsync and rename, then fsyncs its folder: all or nothing after a
 * crash. Given a `device` whose `direct` is set, the page-aligned head of the bytes bypasses the
 * page cache (O_DIRECT, see direct.ts); a file system that refuses it is not asked again.
 */
export async function writeDurably (path: string, bytes: Uint8Array, device?: { direct: boolean }): Promise<void> {
  const tmp = `${path}.tmp`
  const fh = await open(tmp, 'w')
  try {
    const direct = device?.direct === true ? await openDirect(tmp, 'write') : undefined
    if (device != null && direct == null) device.direct = false
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

/**
 * One line of a device's piece index: what the vendor's table says of one piece on this device.
 * Short keys: there is a line per piece.
 */
export interface IndexLine {
  /** owner, allocation (or transfer) id, file id, chunk id, chunk size, pieces in the chunk */
  o: string, a: string, f: string, c: string, s: number, n: number
  /** this piece: index, size, and its checksum (SHA-256 `h` or CRC-32 `r`, as in its PieceRef) */
  i: number, z: number, h?: string, r?: number
  /** kept (part of a committed file) */
  k: boolean
}

/** Appends index lines to a device's index; each line reaches the kernel at once. */
export class IndexWriter {
  private out: WriteStream | undefined
  constructor (private readonly device: string) {}
  write (line: IndexLine): void {
    if (this.out == null) {
      this.out = createWriteStream(join(this.device, INDEX_FILE), { flags: 'a' })
      // a device that fails loses its index appends; the start-up rewrite recreates the index
      this.out.on('error', () => {})
    }
    this.out.write(`${JSON.stringify(line)}\n`)
  }

  async close (): Promise<void> {
    const out = this.out
    this.out = undefined
    if (out != null) await new Promise<void>(resolve => { out.end(resolve) })
  }
}

/**
 * A device's index written afresh (so it does not grow with every erase), line by line (a table
 * of millions of pieces is never held in memory), then flushed and put in place by a rename.
 */
export class IndexRewrite {
  private readonly tmp: string
  private readonly out: WriteStream
  private failed: Error | undefined

  constructor (private readonly device: string) {
    this.tmp = join(device, `${INDEX_FILE}.tmp`)
    this.out = createWriteStream(this.tmp)
    this.out.on('error', err => { this.failed = err })
  }

  async add (line: IndexLine): Promise<void> {
    if (this.failed != null) throw this.failed
    if (!this.out.write(`${JSON.stringify(line)}\n`)) await once(this.out, 'drain')
  }

  async finish (): Promise<void> {
    await new Promise<void>(resolve => { this.out.end(resolve) })
    if (this.failed != null) throw this.failed
    const fh = await open(this.tmp, 'r+')
    try { await fh.sync() } finally { await fh.close() }
    await rename(this.tmp, join(this.device, INDEX_FILE))
    const dir = await open(this.device, 'r')
    try { await dir.sync() } finally { await dir.close() }
  }

  /** Gives up: the old index stays. */
  async abort (): Promise<void> {
    await new Promise<void>(resolve => { this.out.end(resolve) })
    await rm(this.tmp, { force: true })
  }
}

/** The lines of a device's index (a line cut short by a crash, and anything malformed, is skipped). */
export async function readIndex (device: string): Promise<IndexLine[]> {
  let text: string
  try { text = await readFile(join(device, INDEX_FILE), 'utf8') } catch { return [] }
  const out: IndexLine[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    try {
      const l = JSON.parse(line)
      if (typeof l?.o === 'string' && typeof l.a === 'string' && typeof l.f === 'string' && typeof l.c === 'string' &&
        Number.isSafeInteger(l.s) && Number.isSafeInteger(l.n) && Number.isSafeInteger(l.i) && Number.isSafeInteger(l.z) && (typeof l.h === 'string' || Number.isSafeInteger(l.r))) {
        out.push({ ...l, k: l.k === true })
      }
    } catch {}
  }
  return out
}

/** Moves a file out of the piece folder into the device's quarantine folder; returns its new name. */
export async function quarantine (device: string, name: string): Promise<string> {
  const dir = join(device, QUARANTINE_DIR)
  await mkdir(dir, { recursive: true })
  let target = name
  for (let n = 1; await stat(join(dir, target)).then(() => true, () => false); n++) target = `${name}.${n}`
  await rename(join(device, PIECES_DIR, name), join(dir, target))
  return target
}

export interface QuarantineReport { device: string, files: Array<{ name: string, size: number }>, bytes: number, removed: boolean }

/**
 * The files in a device's quarantine folder; with `purge`, removes them. Used by `stordaemon
 * quarantine`, the one way quarantined pieces are deleted.
 */
export async function inspectQuarantine (device: string, purge: boolean): Promise<QuarantineReport> {
  const dir = join(device, QUARANTINE_DIR)
  const names = await readdir(dir).catch((err: any) => { if (err.code === 'ENOENT') return [] as string[]; throw err })
  const files = []
  for (const name of names.sort()) files.push({ name, size: (await stat(join(dir, name)).catch(() => ({ size: 0 }))).size })
  if (purge) for (const f of files) await rm(join(dir, f.name), { force: true })
  return { device, files, bytes: files.reduce((n, f) => n + f.size, 0), removed: purge }
}
