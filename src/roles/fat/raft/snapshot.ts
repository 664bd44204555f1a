import type { Member } from '../../../protocol/fat-sync.ts'
import type { DB } from '../../../store/db.ts'
import type { SnapshotMeta } from './core.ts'

/**
 * A snapshot is the table's own records in level, as they stand at one applied index: every key
 * under the table's prefixes, `meta/seq` (that index) included. Nothing is materialised on the
 * sending side: a level iterator reads from an implicit snapshot of the database taken when it is
 * created, so the leader streams its table as of that moment while it goes on applying.
 */

/** One record, or one piece of a record larger than a chunk: each piece but its last has `more`. */
export interface SnapshotRecord { k: string, v: string, more?: boolean }

/** Bytes of records per chunk on the wire (a message may be 16 MiB; keep well under it). */
export const SNAPSHOT_CHUNK_BYTES = 1024 * 1024

const STAGE = 'raft-snapin/'
const STAGE_META = 'raft-meta/snapin'
const INSTALLING = 'raft-meta/installing'
const enc = new TextEncoder()
const dec = new TextDecoder()

/** The snapshot of the table as it is now, in chunks; `index` must be what the table has applied. */
export function readSnapshot (db: DB, prefixes: readonly string[], index: number): AsyncGenerator<SnapshotRecord[]> {
  const sorted = [...prefixes].sort()
  const wanted = new Set(prefixes)
  // created now, synchronously: its implicit snapshot is the table at `index`
  const it = db.iterator({ gte: `${sorted[0]}/`, lt: `${sorted[sorted.length - 1]}/\xff` })
  return (async function * () {
    try {
      let chunk: SnapshotRecord[] = []
      let bytes = 0
      let seq: number | undefined
      for await (const [k, v] of it) {
        if (!wanted.has(k.slice(0, k.indexOf('/')))) continue
        const text = dec.decode(v)
        if (k === 'meta/seq') seq = Number(text)
        if (chunk.length > 0 && bytes + k.length + v.byteLength > SNAPSHOT_CHUNK_BYTES) { yield chunk; chunk = []; bytes = 0 }
        if (v.byteLength > SNAPSHOT_CHUNK_BYTES) {
          // a record larger than a chunk (a big file's table) travels in pieces, one per chunk
          const pieces = splitText(text, SNAPSHOT_CHUNK_BYTES)
          for (const piece of pieces.slice(0, -1)) yield [{ k, v: piece, more: true }]
          yield [{ k, v: pieces[pieces.length - 1] }]
          continue
        }
        chunk.push({ k, v: text })
        bytes += k.length + v.byteLength
      }
      if ((seq ?? 0) !== index) throw new Error(`the table moved on while its snapshot was taken (${seq ?? 0}, expected ${index})`)
      yield chunk
    } finally {
      await it.close()
    }
  })()
}

/** `text` in pieces of at most `size` UTF-16 units, never splitting a surrogate pair. */
export function splitText (text: string, size: number): string[] {
  const out: string[] = []
  for (let at = 0; at < text.length;) {
    let end = Math.min(text.length, at + size)
    const last = text.charCodeAt(end - 1)
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--
    out.push(text.slice(at, end))
    at = end
  }
  return out
}

interface Staged { id: string, next: number, bytes: number, meta?: SnapshotMeta<Member> }

/**
 * The receiving side: chunks are staged in level as they arrive (memory stays bounded whatever
 * the table's size), and installed in one pass once Raft accepts the snapshot. The install is
 * restartable: a marker written first makes a replica that crashed half-way finish it on start.
 */
export class SnapshotInbox {
  private staged: Staged | undefined
  /** the pieces so far of a record that comes in pieces (memory: one record, however large the table) */
  private partial: { k: string, pieces: string[] } | undefined

  constructor (private readonly db: DB, private readonly prefixes: readonly string[]) {}

  /** Stages one chunk; returns the snapshot's meta once the last chunk is in. */
  async receive (id: string, seq: number, records: SnapshotRecord[], last: SnapshotMeta<Member> | undefined): Promise<SnapshotMeta<Member> | undefined> {
    if (seq === 0) {
      await this.db.clear({ gte: STAGE, lt: `${STAGE}\xff` })
      this.staged = { id, next: 0, bytes: 0 }
      this.partial = undefined
    }
    if (this.staged == null || this.staged.id !== id || this.staged.next !== seq) {
      throw new Error(`snapshot chunk ${seq} of ${id} is out of order; the leader starts it again`)
    }
    const wanted = new Set(this.prefixes)
    const batch: Array<{ type: 'put', key: string, value: Uint8Array }> = []
    for (const r of records) {
      if (!wanted.has(r.k.slice(0, r.k.indexOf('/')))) throw new Error(`snapshot record ${r.k} is not a table record`)
      if (this.partial != null && this.partial.k !== r.k) throw new Error(`snapshot record ${this.partial.k} ends without its last piece`)
      if (r.more === true) {
        this.partial ??= { k: r.k, pieces: [] }
        this.partial.pieces.push(r.v)
        continue
      }
      const text = this.partial != null ? [...this.partial.pieces, r.v].join('') : r.v
      this.partial = undefined
      JSON.parse(text) // every table record is JSON; a garbled one stops the snapshot here
      const value = enc.encode(text)
      this.staged.bytes += r.k.length + value.byteLength
      batch.push({ type: 'put', key: `${STAGE}${r.k}`, value })
    }
    this.staged.next++
    if (last != null) {
      if (this.partial != null) throw new Error(`snapshot record ${this.partial.k} ends without its last piece`)
      const seqRecord = await this.db.get(`${STAGE}meta/seq`)
      const at = seqRecord != null ? Number(dec.decode(seqRecord)) : Number(records.find(r => r.k === 'meta/seq')?.v ?? 0)
      if (at !== last.index) throw new Error(`the snapshot's table is at ${at}, its meta says ${last.index}`)
      this.staged.meta = last
    }
    batch.push({ type: 'put', key: STAGE_META, value: enc.encode(JSON.stringify(this.staged)) })
    await this.db.batch(batch, { sync: last != null })
    return last
  }

  /** Bytes of records staged (keys and values): the snapshot's size. */
  get stagedBytes (): number { return this.staged?.bytes ?? 0 }

  /** Whether a complete snapshot with this index and term is staged. */
  has (meta: SnapshotMeta<Member>): boolean {
    return this.staged?.meta?.index === meta.index && this.staged.meta.term === meta.term
  }

  /** Replaces the table's records with the staged ones; `resetLog` empties the log in between. */
  async install (meta: SnapshotMeta<Member>, resetLog: (meta: SnapshotMeta<Member>) => Promise<void>): Promise<void> {
    await this.db.put(INSTALLING, enc.encode(JSON.stringify(meta)), { sync: true })
    await this.finish(meta, resetLog)
  }

  /** On start: finishes an install a crash interrupted; true if there was one. */
  async recover (resetLog: (meta: SnapshotMeta<Member>) => Promise<void>): Promise<boolean> {
    const marker = await this.db.get(INSTALLING)
    if (marker == null) return false
    await this.finish(JSON.parse(dec.decode(marker)) as SnapshotMeta<Member>, resetLog)
    return true
  }

  private async finish (meta: SnapshotMeta<Member>, resetLog: (meta: SnapshotMeta<Member>) => Promise<void>): Promise<void> {
    for (const p of this.prefixes) await this.db.clear({ gte: `${p}/`, lt: `${p}/\xff` })
    let batch: Array<{ type: 'put', key: string, value: Uint8Array }> = []
    let bytes = 0
    for await (const [k, v] of this.db.iterator({ gte: STAGE, lt: `${STAGE}\xff` })) {
      batch.push({ type: 'put', key: k.slice(STAGE.length), value: v })
      bytes += v.byteLength
      if (bytes > 4 * 1024 * 1024) { await this.db.batch(batch); batch = []; bytes = 0 }
    }
    await this.db.batch(batch, { sync: true })
    await resetLog(meta)
    await this.db.batch([{ type: 'del', key: INSTALLING }, { type: 'del', key: STAGE_META }], { sync: true })
    await this.db.clear({ gte: STAGE, lt: `${STAGE}\xff` })
    this.staged = undefined
  }
}
