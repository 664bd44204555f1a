import { createHash } from 'node:crypto'
import type { DB } from '../../store/db.ts'
import { LimitError } from '../../errors.ts'
import { MAX_RECORDS_PER_OWNER, type RecordEntry, type RecordExpect, type RecordWrite, type RecordsOp } from '../../protocol/messages.ts'

type Batch = Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }>

const PREFIX = 'urec'
const enc = new TextEncoder()
const dec = new TextDecoder()
const keyOf = (owner: string, scope: string, id: string): string => `${PREFIX}/${owner}/${scope}/${id}`

/**
 * The users' records (see src/protocol/records.ts), in level under `urec/OWNER/SCOPE/ID`: sealed
 * values the FAT keeps and orders but cannot read. Self-contained: FatTable.apply hands it the
 * `records` ops, and its whole state is the level range under its prefix (plus a count per owner,
 * rebuilt on load).
 */
export class UserRecords {
  /** records per owner, for the per-owner limit */
  private readonly counts = new Map<string, number>()

  constructor (private readonly db: DB) {}

  static readonly prefix = PREFIX

  /** (Re)counts each owner's records from level, e.g. after a snapshot replaced the table. */
  async load (): Promise<void> {
    this.counts.clear()
    for await (const k of this.db.keys({ gte: `${PREFIX}/`, lt: `${PREFIX}/\xff` })) {
      const owner = k.slice(PREFIX.length + 1, k.indexOf('/', PREFIX.length + 1))
      this.counts.set(owner, (this.counts.get(owner) ?? 0) + 1)
    }
  }

  /** Records `owner` keeps. */
  count (owner: string): number { return this.counts.get(owner) ?? 0 }

  async get (owner: string, scope: string, id: string): Promise<string | undefined> {
    const v = await this.db.get(keyOf(owner, scope, id))
    return v == null ? undefined : dec.decode(v)
  }

  async list (owner: string, scope: string, after: string | undefined, limit: number): Promise<{ records: RecordEntry[], more: boolean }> {
    const base = `${PREFIX}/${owner}/${scope}/`
    const records: RecordEntry[] = []
    let more = false
    for await (const [k, v] of this.db.iterator({ ...(after != null ? { gt: base + after } : { gte: base }), lt: `${base}\xff`, limit: limit + 1 })) {
      if (records.length === limit) { more = true; break }
      records.push({ id: k.slice(base.length), value: dec.decode(v) })
    }
    return { records, more }
  }

  /** Do the records hold what `expect` says? */
  async holds (owner: string, expect: RecordExpect[]): Promise<boolean> {
    for (const e of expect) {
      const v = await this.get(owner, e.scope, e.id)
      if (e.absent === true && v != null) return false
      if (e.sha256 != null && (v == null || createHash('sha256').update(v).digest('hex') !== e.sha256)) return false
    }
    return true
  }

  /** Throws if the writes would take `owner` past its limit (checked before the op is logged). */
  async checkLimit (owner: string, writes: RecordWrite[]): Promise<void> {
    let added = 0
    for (const w of writes) if (w.value != null && await this.get(owner, w.scope, w.id) == null) added++
    if ((this.counts.get(owner) ?? 0) + added > MAX_RECORDS_PER_OWNER) throw new LimitError(`this identity keeps ${MAX_RECORDS_PER_OWNER} records at most; delete some first`)
  }

  /** Adds a `records` op's changes to the table's batch. */
  async apply (op: RecordsOp, batch: Batch): Promise<void> {
    // the last write of an id in one op wins
    const last = new Map<string, RecordWrite>()
    for (const w of op.writes) last.set(keyOf(op.owner, w.scope, w.id), w)
    let count = this.counts.get(op.owner) ?? 0
    for (const [key, w] of last) {
      const had = await this.db.get(key) != null
      if (w.value != null) {
        batch.push({ type: 'put', key, value: enc.encode(w.value) })
        if (!had) count++
      } else if (had) {
        batch.push({ type: 'del', key })
        count--
      }
    }
    if (count > 0) this.counts.set(op.owner, count)
    else this.counts.delete(op.owner)
  }
}
