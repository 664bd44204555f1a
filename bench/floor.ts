// The work a transfer must add to the transport, measured in this process in the same run: each
// primitive's CPU per MB over chunk-sized blocks, the way the product calls it. Summed with the raw
// stream's CPU, it is the least a transfer can cost with today's design (every sealed chunk hashed
// by the user and by each vendor that stores it, AES-GCM end to end, a CRC-32 per piece on disk),
// that is, with no overhead of ours at all. A target below that floor needs a different design,
// not faster code.
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'

const MiB = 1024 * 1024
/** The product's default chunk size, and the cipher's piece size (src/roles/user/cipher.ts). */
const BLOCK = 4 * MiB
const CIPHER_PIECE = 64 * 1024

/** CPU ms per MB (10^6 bytes) of each primitive. */
export interface Floor {
  sha256: number
  md5: number
  aesGcm: number
  crc32: number
  /** write(2) into the page cache (writeback is the kernel's, off this process) */
  fileWrite: number
  /** read(2) from the page cache */
  fileRead: number
}

/** CPU ms per MB of `run` over `bytes`: the least of three runs, since the floor is what the work costs when nothing else gets in its way. */
function cpuMsPerMB (bytes: number, run: () => void): number {
  let least = Infinity
  for (let i = 0; i < 3; i++) {
    const before = process.cpuUsage()
    run()
    const used = process.cpuUsage(before)
    least = Math.min(least, (used.user + used.system) / 1e3 / (bytes / 1e6))
  }
  return least
}

/** Measures each primitive over `total` bytes (at most 128 MiB) in 4 MiB blocks; `dir` takes a scratch file. */
export function measureFloor (dir: string, total: number): Floor {
  const bytes = Math.max(BLOCK, Math.floor(Math.min(total, 128 * MiB) / BLOCK) * BLOCK)
  const blocks = bytes / BLOCK
  const block = randomBytes(BLOCK)
  const out = Buffer.allocUnsafe(BLOCK)
  const key = randomBytes(32)
  const each = (f: () => void): () => void => () => { for (let i = 0; i < blocks; i++) f() }
  const sha256 = (): void => { createHash('sha256').update(block).digest() }
  const md5 = (): void => { createHash('md5').update(block).digest() }
  const aesGcm = (): void => {
    const c = createCipheriv('aes-256-gcm', key, randomBytes(12))
    for (let i = 0; i < BLOCK; i += CIPHER_PIECE) out.set(c.update(block.subarray(i, i + CIPHER_PIECE)), i)
    c.final()
  }
  const crc = (): void => { crc32(block) }
  const file = join(dir, 'floor-scratch.bin')
  // each write pass goes to a new file, as a vendor's pieces do
  const fileWrite = cpuMsPerMB(bytes, () => {
    const fd = openSync(file, 'w')
    try { for (let i = 0; i < blocks; i++) writeSync(fd, block, 0, BLOCK, i * BLOCK) } finally { closeSync(fd) }
  })
  const fd = openSync(file, 'r')
  try {
    const fileRead = cpuMsPerMB(bytes, () => { for (let i = 0; i < blocks; i++) readSync(fd, out, 0, BLOCK, i * BLOCK) })
    return { sha256: cpuMsPerMB(bytes, each(sha256)), md5: cpuMsPerMB(bytes, each(md5)), aesGcm: cpuMsPerMB(bytes, each(aesGcm)), crc32: cpuMsPerMB(bytes, each(crc)), fileWrite, fileRead }
  } finally {
    closeSync(fd)
    unlinkSync(file)
  }
}

/** The least CPU per MB each side of a transfer can spend today: the raw stream's side plus the work it must add. */
export function floors (f: Floor, rawSender: number, rawReceiver: number): { cliUpload: number, cliDownload: number, vendorUpload: number, vendorUploadRelay: number, vendorDownload: number } {
  return {
    // read the file, seal each chunk, hash the sealed chunk for its id, send
    cliUpload: rawSender + f.fileRead + f.aesGcm + f.sha256,
    // receive, check the chunk's hash, open it, write the file
    cliDownload: rawReceiver + f.sha256 + f.aesGcm + f.fileWrite,
    // receive, check the hash against the chunk id, a CRC-32 per piece, write
    vendorUpload: rawReceiver + f.sha256 + f.crc32 + f.fileWrite,
    // replicas 2, per copy: as above, and the first vendor also sends each chunk on (half a send per copy)
    vendorUploadRelay: rawReceiver + f.sha256 + f.crc32 + f.fileWrite + rawSender / 2,
    // read the pieces, check their CRC-32, send
    vendorDownload: rawSender + f.fileRead + f.crc32
  }
}
