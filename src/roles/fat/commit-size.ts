import { LimitError } from '../../errors.ts'
import { encode } from '../../protocol/codec.ts'
import { MAX_CHUNK_SIZE, MAX_FAT_MESSAGE, MAX_WIRE_CHUNK, MiB } from '../../protocol/ids.ts'
import type { ChunkEntry, FileTable } from '../../protocol/messages.ts'
import { chunkCount } from './table.ts'

/**
 * One log entry must fit in one message to the other replicas with room to spare (an append
 * carries it with its envelope). A large file's commit is several entries (commit-part ops and the
 * commit: src/protocol/table-pages.ts), so this bounds an entry, not a file.
 */
export const MAX_ENTRY_BYTES = MAX_FAT_MESSAGE - MiB

/**
 * The most bytes of tables one upload may commit. Every replica holds a committed table in memory
 * and writes it as one record, and a download holds it too: 256 MiB is a 1 TiB file in 4 MiB
 * chunks at four replicas, or 4 TiB in 16 MiB chunks at two.
 */
export const MAX_COMMIT_BYTES = 256 * MiB

/** A peer id is 52 characters for the Ed25519 keys we make; other key types make them up to 59. */
const LONGEST_PEER = 'x'.repeat(59)

/** The most bytes one chunk's line of a table takes in a commit, at `replicas` replicas (JSON, with its comma). */
export function chunkLineBytes (replicas: number): number {
  const worst: ChunkEntry = {
    i: 2 ** 40,
    id: 'f'.repeat(64),
    size: MAX_WIRE_CHUNK,
    replicas: Array.from({ length: replicas }, () => ({ vendor: LONGEST_PEER, sig: 'f'.repeat(128) }))
  }
  return encode(worst).byteLength + 1
}

/** The most bytes a table takes apart from its chunks: a name of 255 characters, each field at its widest. */
function tableHeadBytes (): number {
  const worst: FileTable = {
    fileId: 'f'.repeat(32),
    owner: LONGEST_PEER,
    // a name's characters may be escaped in JSON (\uXXXX): up to six bytes each
    name: '\u0001'.repeat(255),
    size: Number.MAX_SAFE_INTEGER,
    chunkSize: MAX_CHUNK_SIZE,
    replicas: 16,
    created: Number.MAX_SAFE_INTEGER,
    cipher: { alg: 'aes-256-gcm', wrappedKey: 'f'.repeat(256) },
    chunks: [],
    kind: 'pack',
    packed: { pack: 'f'.repeat(32), offset: Number.MAX_SAFE_INTEGER }
  }
  return encode(worst).byteLength + 1
}

/** Room in a commit's entry for what is not a table: the entry's envelope and one settle order per vendor. */
const COMMIT_ENVELOPE_BYTES = 256 * 1024

/**
 * An upper bound on the bytes of the commit that will close an allocation of `sizes` at
 * `chunkSize` and `replicas` (files listed in `packed` have no chunks of their own: their bytes
 * are in a pack, which is one of `sizes` too).
 */
export function commitBytesBound (sizes: number[], chunkSize: number, replicas: number, packed: number[] = []): number {
  return COMMIT_ENVELOPE_BYTES + sizes.length * tableHeadBytes() + chunkLines(sizes, chunkSize, packed) * chunkLineBytes(replicas)
}

/** The chunk lines of the tables of files of `sizes` (a file in a pack has none of its own). */
function chunkLines (sizes: number[], chunkSize: number, packed: number[]): number {
  const inPack = new Set(packed)
  return sizes.reduce((n, s, i) => inPack.has(i) ? n : n + chunkCount(s, chunkSize), 0)
}

/**
 * Refuses, before any byte is uploaded, an allocation whose tables would be larger than the FAT
 * keeps for one upload (see docs/replication.md, Limits). Names the chunk size that would fit.
 */
export function checkCommitFits (sizes: number[], chunkSize: number, replicas: number, packed: number[] = []): void {
  const bound = commitBytesBound(sizes, chunkSize, replicas, packed)
  if (bound <= MAX_COMMIT_BYTES) return
  const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`
  let fits: number | undefined
  for (let c = chunkSize * 2; c <= MAX_CHUNK_SIZE * 2 && fits == null; c *= 2) {
    const size = Math.min(c, MAX_CHUNK_SIZE)
    if (commitBytesBound(sizes, size, replicas, packed) <= MAX_COMMIT_BYTES) fits = size
  }
  const chunks = chunkLines(sizes, chunkSize, packed)
  const fix = fits != null
    ? `use --chunk-size ${fits / MiB}MiB or more`
    : `even the largest --chunk-size (${MAX_CHUNK_SIZE / MiB}MiB) is not enough: ${sizes.length > 1 ? 'upload fewer files at once, ' : ''}split the file, or use fewer --replicas`
  throw new LimitError(`${sizes.length === 1 ? 'this file, in' : `these ${sizes.length} files, in`} ${chunks} chunks of ${chunkSize} bytes at ${replicas} replicas, ${sizes.length === 1 ? 'needs' : 'need'} a table of up to ${mib(bound)}, more than the FAT keeps for one upload (${mib(MAX_COMMIT_BYTES)}); ${fix}`)
}
