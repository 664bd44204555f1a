import { IntegrityError } from '../errors.ts'
import { encode } from './codec.ts'
import { MiB } from './ids.ts'
import { MAX_PART_CHUNKS, type ChunkEntry, type FileTable } from './messages.ts'

/**
 * A file's table can be larger than one message (16 MiB): a 200 GiB file in 4 MiB chunks at two
 * replicas has ~25 MiB of chunk lines. Its chunk lines then travel in parts: to the FAT as
 * `commit-part` requests before the `commit` (which names the file in `staged`), and back in
 * pages of the `get` reply. These are the pure halves of both, shared by the FAT and the user.
 */

/** Bytes of chunk lines in one commit-part or one page of a table (well under a message). */
export const PART_BYTES = 4 * MiB
/** A commit larger than this stages its largest files' chunk lines first. */
export const COMMIT_INLINE_BYTES = 8 * MiB

export interface CommitPart { fileId: string, first: number, chunks: ChunkEntry[] }

const lineBytes = (c: ChunkEntry): number => encode(c).byteLength + 1

/** Cuts `chunks` into runs of at most `budget` bytes and MAX_PART_CHUNKS lines (at least one line each). */
export function cutLines (chunks: ChunkEntry[], budget = PART_BYTES): ChunkEntry[][] {
  const out: ChunkEntry[][] = []
  let run: ChunkEntry[] = []
  let bytes = 0
  for (const c of chunks) {
    const b = lineBytes(c)
    if (run.length > 0 && (bytes + b > budget || run.length >= MAX_PART_CHUNKS)) { out.push(run); run = []; bytes = 0 }
    run.push(c)
    bytes += b
  }
  if (run.length > 0) out.push(run)
  return out
}

/**
 * How a commit of `tables` travels: inline when it fits `inline` bytes; otherwise the files with
 * the most chunk lines are staged, largest first, until what is left fits. A staged file's table
 * goes in the commit without chunks, and its lines go before it in `parts`.
 */
export function splitCommit (tables: FileTable[], inline = COMMIT_INLINE_BYTES, part = PART_BYTES): { tables: FileTable[], staged: string[], parts: CommitPart[] } {
  let bytes = encode(tables).byteLength
  if (bytes <= inline) return { tables, staged: [], parts: [] }
  const staged = new Set<string>()
  const parts: CommitPart[] = []
  const sizes = tables.map(t => ({ t, bytes: encode(t.chunks).byteLength })).sort((a, b) => b.bytes - a.bytes)
  for (const { t, bytes: own } of sizes) {
    if (bytes <= inline || t.chunks.length === 0) break
    staged.add(t.fileId)
    let first = 0
    for (const run of cutLines(t.chunks, part)) {
      parts.push({ fileId: t.fileId, first, chunks: run })
      first += run.length
    }
    bytes -= own - 2
  }
  return { tables: tables.map(t => staged.has(t.fileId) ? { ...t, chunks: [] } : t), staged: [...staged], parts }
}

/** A page of table `t`: its chunk lines from `from`, as many as fit `budget` bytes; `next` where the rest begins. */
export function tablePage (t: FileTable, from = 0, budget = PART_BYTES): { table: FileTable, next?: number } {
  if (from === 0 && encode(t).byteLength <= budget) return { table: t }
  // the lines from `from` while they fit (one at least); the rest is not looked at
  let next = from
  for (let bytes = 0; next < t.chunks.length; next++) {
    bytes += lineBytes(t.chunks[next])
    if (next > from && (bytes > budget || next - from >= MAX_PART_CHUNKS)) break
  }
  const run = t.chunks.slice(from, next)
  return { table: { ...t, chunks: run }, ...(next < t.chunks.length ? { next } : {}) }
}

/**
 * The whole table from its first page and the pages `fetch` brings from each `next` on. Each page
 * must be the same file and continue exactly where the last ended, or the FAT answered wrongly.
 */
export async function wholeTable (first: { table: FileTable, next?: number }, fetch: (from: number) => Promise<{ table: FileTable, next?: number }>): Promise<FileTable> {
  const chunks = [...first.table.chunks]
  let next = first.next
  while (next != null) {
    if (next !== chunks.length) throw new IntegrityError(`the FAT's page of file ${first.table.fileId} continues at chunk ${next}, after ${chunks.length} lines`)
    const page = await fetch(next)
    if (page.table.fileId !== first.table.fileId || page.table.chunks.length === 0 || page.table.chunks[0].i !== next) {
      throw new IntegrityError(`the FAT answered a page of file ${first.table.fileId} from chunk ${next} with another file's lines, or none`)
    }
    chunks.push(...page.table.chunks)
    next = page.next
  }
  return { ...first.table, chunks }
}
