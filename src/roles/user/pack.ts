import { open as openFile, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { IntegrityError, InvalidArgumentError } from '../../errors.ts'
import type { FileTable } from '../../protocol/messages.ts'

/** A pack: small files laid end to end, stored as one hidden file of at most one chunk. */
export interface Pack {
  /** indexes of the files in it, and where each begins */
  members: number[]
  offsets: number[]
  size: number
}

/**
 * A file this small (a sixteenth of a chunk or less) is packed with the other small files of
 * the same upload: one chunk, one store per replica and one table entry carry many files, where
 * each would otherwise cost a chunk of its own (a stream, a signature, an fsync per replica).
 */
export function packLimit (chunkSize: number): number {
  return Math.floor(chunkSize / 16)
}

/** Packs the small files of an upload, in order, each pack filled up to one chunk; one small file alone is not packed. */
export function planPacks (sizes: number[], chunkSize: number): Pack[] {
  const limit = packLimit(chunkSize)
  const small = sizes.flatMap((s, i) => s <= limit ? [i] : [])
  if (small.length < 2) return []
  const packs: Pack[] = []
  let open: Pack | undefined
  for (const i of small) {
    if (open == null || open.size + sizes[i] > chunkSize) {
      open = { members: [], offsets: [], size: 0 }
      packs.push(open)
    }
    open.members.push(i)
    open.offsets.push(open.size)
    open.size += sizes[i]
  }
  return packs
}

/** Reads `length` bytes at `offset` of a file into `into` at `at`; the file must not have shrunk. */
export async function readRange (path: string, offset: number, length: number, into: Buffer, at = 0): Promise<void> {
  const fh = await openFile(path, 'r')
  try {
    let got = 0
    while (got < length) {
      const { bytesRead } = await fh.read(into, at + got, length - got, offset + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    if (got !== length) throw new InvalidArgumentError(`FILE: ${path} changed while it was being read`)
  } finally {
    await fh.close()
  }
}

/**
 * Cuts packed files out of their fetched packs (`packs`: pack id -> the fetched file), each
 * written beside its place and renamed into it, then removes the packs.
 */
export async function unpack (files: Array<{ table: FileTable, out: string }>, packs: Map<string, string>): Promise<void> {
  const bytes = new Map<string, Buffer>()
  for (const [id, path] of packs) bytes.set(id, await readFile(path))
  for (const { table, out } of files) {
    const { pack, offset } = table.packed as { pack: string, offset: number }
    const whole = bytes.get(pack) as Buffer
    if (offset + table.size > whole.byteLength) throw new IntegrityError(`file ${table.fileId} lies outside its pack ${pack}`)
    await writeFile(`${out}.stor-part`, whole.subarray(offset, offset + table.size))
    await rename(`${out}.stor-part`, out)
  }
  await Promise.all([...packs.values()].map(async p => { await rm(p, { force: true }) }))
}
