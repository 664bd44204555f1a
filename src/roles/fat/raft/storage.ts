import type { Entry, Member } from '../../../protocol/fat-sync.ts'
import type { DB } from '../../../store/db.ts'
import type { HardState, RaftStorage, SnapshotMeta } from './core.ts'

const enc = new TextEncoder()
const dec = new TextDecoder()
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v))
const parse = <T>(v: Uint8Array): T => JSON.parse(dec.decode(v)) as T

const ENTRY = 'raft-entry/'
const entryKey = (index: number): string => `${ENTRY}${String(index).padStart(16, '0')}`
/** Term, vote and commit (the vote record of the earlier format, with commit added). */
const HARD = 'raft-meta/vote'
/** What the compacted prefix of the log covers: the table on disk holds at least that much. */
const SNAP = 'raft-meta/snap'

type Op = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

/**
 * The Raft log and hard state in the replica's level database. Every write is one synced batch,
 * so a crash leaves either the whole of a Ready on disk or none of it.
 */
export class LogStorage {
  /** The last index on disk; entries past a new first index are deleted when a tail is replaced. */
  private lastIndex = 0
  /** Bytes of the stored entries, for the compaction threshold. */
  bytes = 0

  constructor (private readonly db: DB) {}

  async load (applied: number): Promise<RaftStorage<Entry, Member>> {
    const hard = await this.db.get(HARD)
    const h = hard != null ? parse<{ term: number, votedFor: string | null, commit?: number }>(hard) : { term: 0, votedFor: null }
    const snapRaw = await this.db.get(SNAP)
    const snapshot: SnapshotMeta<Member> = snapRaw != null ? parse(snapRaw) : { index: 0, term: 0, members: [] }
    const entries: Entry[] = []
    for await (const [, v] of this.db.iterator({ gt: entryKey(snapshot.index), lt: `${ENTRY}\xff` })) {
      entries.push(parse(v))
      this.bytes += v.byteLength
    }
    this.lastIndex = entries.at(-1)?.index ?? snapshot.index
    return { hardState: { term: h.term, vote: h.votedFor, commit: h.commit ?? 0 }, snapshot, entries, applied: Math.max(applied, snapshot.index) }
  }

  /** Persists a Ready's hard state and entries (a new tail replaces what was stored from its first index on). */
  async save (hard: HardState | undefined, entries: Entry[]): Promise<void> {
    const batch: Op[] = []
    if (hard != null) batch.push({ type: 'put', key: HARD, value: json({ term: hard.term, votedFor: hard.vote, commit: hard.commit }) })
    if (entries.length > 0) {
      for (let i = entries[0].index; i <= this.lastIndex; i++) batch.push({ type: 'del', key: entryKey(i) })
      for (const e of entries) {
        const value = json(e)
        this.bytes += value.byteLength
        batch.push({ type: 'put', key: entryKey(e.index), value })
      }
    }
    if (batch.length === 0) return
    await this.db.batch(batch, { sync: true })
    if (entries.length > 0) this.lastIndex = entries[entries.length - 1].index
  }

  /** Drops the entries the snapshot now covers; the table on disk holds their effect. */
  async compact (meta: SnapshotMeta<Member>): Promise<void> {
    await this.db.batch([{ type: 'put', key: SNAP, value: json(meta) }], { sync: true })
    await this.db.clear({ gte: ENTRY, lte: entryKey(meta.index) })
    this.bytes = 0
    for await (const v of this.db.values({ gt: entryKey(meta.index), lt: `${ENTRY}\xff` })) this.bytes += v.byteLength
  }

  /** After a snapshot was installed: the log is empty and begins after it. */
  async reset (meta: SnapshotMeta<Member>): Promise<void> {
    await this.db.batch([{ type: 'put', key: SNAP, value: json(meta) }], { sync: true })
    await this.db.clear({ gte: ENTRY, lt: `${ENTRY}\xff` })
    this.lastIndex = meta.index
    this.bytes = 0
  }
}
