import type { Entry, Member } from '../../protocol/fat-sync.ts'
import { Records, type DB } from '../../store/db.ts'

interface Vote { term: number, votedFor: string | null }

const key = (index: number): string => String(index).padStart(16, '0')

/**
 * The replicated op log and the election state, kept in level. Entries past the commit index
 * may still be replaced by a later leader's; committed ones never change.
 */
export class RaftLog {
  private readonly entries: Records<Entry>
  private readonly meta: Records<Vote>
  lastIndex = 0
  lastTerm = 0
  term = 0
  votedFor: string | null = null
  /** The replica set: the last `members` op in the log, committed or not (as Raft's single-server changes require). */
  members: Member[] = []

  constructor (private readonly db: DB) {
    this.entries = new Records(db, 'raft-entry')
    this.meta = new Records(db, 'raft-meta')
  }

  async load (): Promise<void> {
    const vote = await this.meta.get('vote')
    if (vote != null) { this.term = vote.term; this.votedFor = vote.votedFor }
    for await (const [, e] of this.db.iterator({ gte: 'raft-entry/', lt: 'raft-entry/\xff', reverse: true, limit: 1 })) {
      const last = JSON.parse(new TextDecoder().decode(e)) as Entry
      this.lastIndex = last.index
      this.lastTerm = last.term
    }
    this.members = await this.findMembers(this.lastIndex)
  }

  async setVote (term: number, votedFor: string | null): Promise<void> {
    this.term = term
    this.votedFor = votedFor
    await this.db.batch([this.meta.put('vote', { term, votedFor })], { sync: true })
  }

  async get (index: number): Promise<Entry | undefined> {
    return index < 1 ? undefined : await this.entries.get(key(index))
  }

  async termAt (index: number): Promise<number> {
    if (index === 0) return 0
    if (index === this.lastIndex) return this.lastTerm
    return (await this.get(index))?.term ?? -1
  }

  /** Entries from `from` on, at most `max` of them and about `maxBytes`. */
  async slice (from: number, max: number, maxBytes: number): Promise<Entry[]> {
    const out: Entry[] = []
    let bytes = 0
    for await (const [, v] of this.db.iterator({ gte: `raft-entry/${key(from)}`, lt: 'raft-entry/\xff', limit: max })) {
      bytes += v.byteLength
      if (out.length > 0 && bytes > maxBytes) break
      out.push(JSON.parse(new TextDecoder().decode(v)) as Entry)
    }
    return out
  }

  /** Appends entries that follow on from lastIndex, replacing any conflicting tail first. */
  async append (entries: Entry[]): Promise<void> {
    if (entries.length === 0) return
    const first = entries[0].index
    const batch: Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }> = []
    for (let i = first; i <= this.lastIndex; i++) batch.push(this.entries.del(key(i)))
    for (const e of entries) batch.push(this.entries.put(key(e.index), e))
    await this.db.batch(batch, { sync: true })
    const last = entries[entries.length - 1]
    const truncated = first <= this.lastIndex
    this.lastIndex = last.index
    this.lastTerm = last.term
    const newMembers = [...entries].reverse().find(e => e.op.op === 'members')
    if (newMembers != null && newMembers.op.op === 'members') this.members = newMembers.op.members
    else if (truncated) this.members = await this.findMembers(this.lastIndex)
  }

  private async findMembers (upTo: number): Promise<Member[]> {
    for await (const [, v] of this.db.iterator({ gte: 'raft-entry/', lte: `raft-entry/${key(upTo)}`, reverse: true })) {
      const e = JSON.parse(new TextDecoder().decode(v)) as Entry
      if (e.op.op === 'members') return e.op.members
    }
    return []
  }
}
