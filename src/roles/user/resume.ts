import { createHash } from 'node:crypto'
import { createWriteStream, type WriteStream } from 'node:fs'
import { mkdir, readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type * as M from '../../protocol/messages.ts'

/** Appends lines to a file; each line reaches the kernel at once, so a killed process loses none. */
class Lines {
  private readonly out: WriteStream
  private closed = false
  constructor (readonly path: string, fresh: boolean) {
    this.out = createWriteStream(path, { flags: fresh ? 'w' : 'a' })
    this.out.on('error', () => {})
  }

  write (value: unknown): void { if (!this.closed) this.out.write(`${JSON.stringify(value)}\n`) }
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await new Promise<void>(resolve => { this.out.end(resolve) })
  }
}

async function readLines (path: string): Promise<unknown[]> {
  const text = await readFile(path, 'utf8')
  const out: unknown[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    try { out.push(JSON.parse(line)) } catch { break } // a line cut short by a crash ends the record
  }
  return out
}

const digestOf = (value: unknown): string => createHash('sha256').update(JSON.stringify(value)).digest('hex')

/**
 * The record of a download in progress, `OUT.stor-part.state` beside the partial file `OUT.stor-part`:
 * a header naming the file (id, size, chunk size, a digest of its chunk ids), then one line per
 * chunk verified and written. A rerun that finds both, for the same file, fetches only the rest.
 */
export class DownloadJournal {
  private constructor (private readonly lines: Lines, readonly reused: Set<number>) {}

  static async open (part: string, table: M.FileTable, resume: boolean): Promise<DownloadJournal> {
    const path = `${part}.state`
    const header = { fileId: table.fileId, size: table.size, chunkSize: table.chunkSize, chunks: digestOf(table.chunks.map(c => c.id)) }
    const reused = new Set<number>()
    if (resume) {
      try {
        await stat(part)
        const [head, ...rest] = await readLines(path)
        if (JSON.stringify(head) === JSON.stringify(header)) {
          for (const i of rest) if (typeof i === 'number' && Number.isInteger(i) && i >= 0 && i < table.chunks.length) reused.add(i)
        }
      } catch {}
    }
    const lines = new Lines(path, reused.size === 0)
    if (reused.size === 0) lines.write(header)
    return new DownloadJournal(lines, reused)
  }

  record (i: number): void { this.lines.write(i) }
  async close (): Promise<void> { await this.lines.close() }
  async remove (): Promise<void> { await this.lines.close(); await rm(this.lines.path, { force: true }) }
}

/** What an upload must remember to resume: the allocation, the file keys, and each placed chunk. */
export interface UploadState {
  allocation: M.Message<typeof M.Allocated>
  /** per file, its key wrapped with the master key */
  wrappedKeys: string[]
  /** per file, the chunk entries (with receipts) already placed */
  chunks: Array<Map<number, M.ChunkEntry>>
  /** per file, chunks that were on their way: the nonce and id they were sealed with */
  intents: Array<Map<number, { nonce: string, id: string }>>
}

/** Lease an allocation must have left for a rerun to try renewing it and resume. */
export const RESUME_MARGIN_MS = 2_000

/**
 * The record of an upload in progress, `DATA_DIR/uploads/<key>.jsonl`, where the key is a digest
 * of what the command was asked (paths, their sizes and mtimes, names, replicas, chunk size,
 * pieces, owner): a header with the allocation reply (grants included) and the wrapped file keys,
 * then a line per chunk as it is sent (its nonce and id) and one when it is placed (its entry and
 * receipts). A rerun of the same command finds it and
 * sends only the chunks not listed, while the allocation's lease lasts.
 */
export class UploadJournal {
  private lines: Lines | undefined
  private constructor (readonly path: string) {}

  static async key (dataDir: string, what: object): Promise<UploadJournal> {
    const dir = join(dataDir, 'uploads')
    await mkdir(dir, { recursive: true })
    return new UploadJournal(join(dir, `${digestOf(what).slice(0, 32)}.jsonl`))
  }

  /** The state of an earlier run, if its lease has at least RESUME_MARGIN_MS left (the caller renews it). */
  async load (now = Date.now()): Promise<UploadState | undefined> {
    let records: unknown[]
    try { records = await readLines(this.path) } catch { return undefined }
    const [head, ...rest] = records as [{ allocation: M.Message<typeof M.Allocated>, wrappedKeys: string[] } | undefined, ...Array<{ f: number, c?: M.ChunkEntry, i?: number, n?: string, id?: string }>]
    if (head?.allocation == null || !Array.isArray(head.wrappedKeys)) return undefined
    if (head.allocation.expires - now < RESUME_MARGIN_MS) return undefined
    const chunks = head.allocation.fileIds.map(() => new Map<number, M.ChunkEntry>())
    const intents = head.allocation.fileIds.map(() => new Map<number, { nonce: string, id: string }>())
    for (const r of rest) {
      if (r?.c != null && chunks[r.f] != null) chunks[r.f].set(r.c.i, r.c)
      else if (typeof r?.i === 'number' && typeof r.n === 'string' && typeof r.id === 'string' && intents[r.f] != null) intents[r.f].set(r.i, { nonce: r.n, id: r.id })
    }
    this.lines = new Lines(this.path, false)
    return { allocation: head.allocation, wrappedKeys: head.wrappedKeys, chunks, intents }
  }

  /** Starts a fresh record for a new allocation. */
  start (allocation: M.Message<typeof M.Allocated>, wrappedKeys: string[]): void {
    this.lines = new Lines(this.path, true)
    this.lines.write({ allocation, wrappedKeys })
  }

  /** A chunk about to be sent: if the run dies, the next one seals it the same way, so vendors that got it already keep one copy. */
  intent (f: number, i: number, nonce: string, id: string): void { this.lines?.write({ f, i, n: nonce, id }) }
  record (f: number, c: M.ChunkEntry): void { this.lines?.write({ f, c }) }
  async close (): Promise<void> { await this.lines?.close() }
  async remove (): Promise<void> { await this.close(); await rm(this.path, { force: true }) }
}
