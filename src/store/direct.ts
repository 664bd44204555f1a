import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'

/**
 * Direct file I/O (O_DIRECT): bytes move between the disk and the caller's buffer without a copy
 * through the page cache. On the machines measured here that copy is the dearest part of storing
 * a chunk: writing through the page cache cost 2.4-2.8 ms of CPU per MB (the kernel fills freshly
 * touched page-cache memory), writing direct 0.1. Direct I/O needs the buffer's address, the file
 * offset and the length on block boundaries: buffers from an aligned BufferPool start on one, and
 * whatever is not aligned (a buffer's tail, a small or plain buffer) goes through the page cache.
 */

/** O_DIRECT where the platform has it (Linux); undefined elsewhere. */
export const DIRECT_FLAG: number | undefined = constants.O_DIRECT
/** The alignment direct I/O is given: a page, which covers the common block sizes (512 B, 4 KiB). */
export const DIRECT_ALIGN = 4096

/** Opens an existing file for direct I/O; undefined where the platform or the file system has none. */
export async function openDirect (path: string, mode: 'read' | 'write'): Promise<FileHandle | undefined> {
  if (DIRECT_FLAG == null) return undefined
  try {
    return await open(path, (mode === 'read' ? constants.O_RDONLY : constants.O_WRONLY) | DIRECT_FLAG)
  } catch (err: any) {
    // tmpfs and some network file systems refuse O_DIRECT
    if (err.code === 'EINVAL') return undefined
    throw err
  }
}

/** The part of `bytes` at `position` that direct I/O can move: 0 unless both start on a block boundary. */
function directLength (bytes: Uint8Array, position: number): number {
  if (bytes.byteOffset % DIRECT_ALIGN !== 0 || position % DIRECT_ALIGN !== 0) return 0
  return bytes.byteLength - (bytes.byteLength % DIRECT_ALIGN)
}

async function writeAll (fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.byteLength;) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, position + done)
    done += bytesWritten
  }
}

/** Reads until `into` is full or the file ends; returns the bytes read. */
async function readAll (fh: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0
  while (done < into.byteLength) {
    const { bytesRead } = await fh.read(into, done, into.byteLength - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

/**
 * Runs `io` on the direct head of `bytes` if `direct` is given; returns how many bytes it moved
 * (0 when the memory turned out not to be aligned: EINVAL, nothing moved).
 */
async function directHead (direct: FileHandle | undefined, bytes: Uint8Array, position: number, io: (fh: FileHandle, part: Uint8Array) => Promise<number>): Promise<number> {
  const head = direct != null ? directLength(bytes, position) : 0
  if (head === 0) return 0
  try {
    return await io(direct as FileHandle, bytes.subarray(0, head))
  } catch (err: any) {
    // an address not on a block boundary after all (a buffer not from an aligned pool)
    if (err.code === 'EINVAL') return 0
    throw err
  }
}

/** Writes `bytes` at `position`: the aligned head through `direct` where it can, the rest through `buffered`. */
export async function writeAt (buffered: FileHandle, direct: FileHandle | undefined, bytes: Uint8Array, position: number): Promise<void> {
  const done = await directHead(direct, bytes, position, async (fh, part) => { await writeAll(fh, part, position); return part.byteLength })
  await writeAll(buffered, bytes.subarray(done), position + done)
}

/**
 * Fills `into` from `position`: the aligned head through `direct` where it can, the rest through
 * `buffered`; returns the bytes read (fewer than asked only if the file is shorter).
 */
export async function readAt (buffered: FileHandle, direct: FileHandle | undefined, into: Uint8Array, position: number): Promise<number> {
  const done = await directHead(direct, into, position, async (fh, part) => await readAll(fh, part, position))
  if (done < directLength(into, position) && done > 0) return done // the file ended inside the direct part
  return done + await readAll(buffered, into.subarray(done), position + done)
}
