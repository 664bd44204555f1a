/**
 * A pure Raft state machine (Ongaro's thesis, with pre-vote and check-quorum, chapter 9.6, and
 * single-server membership changes, chapter 4): no I/O, no timers, no network. Time arrives as
 * `tick()`, messages as `step(msg)`, proposals as `propose(...)`; what the node must do in return
 * is collected in a `Ready` (entries and hard state to persist, a snapshot to install, committed
 * entries to apply, messages to send). The driver must persist a Ready's entries and hard state
 * before it sends its messages: a vote or an acknowledgement is a promise about what is on disk.
 *
 * Modelled on etcd-io/raft (raft.go, log.go, tracker/progress.go), written afresh.
 */

export interface RaftEntry { index: number, term: number }
export interface RaftMember { peer: string }

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader'

export interface SnapshotMeta<M extends RaftMember> {
  /** The last index the snapshot covers, and that entry's term. */
  index: number
  term: number
  /** The replica set as of `index`. */
  members: M[]
}

export interface HardState { term: number, vote: string | null, commit: number }

interface Base { from: string, to: string, term: number }
export type Message<E, M extends RaftMember> =
  | Base & { type: 'vote' | 'pre-vote', lastIndex: number, lastTerm: number }
  | Base & { type: 'vote-resp' | 'pre-vote-resp', reject: boolean }
  | Base & { type: 'app', prevIndex: number, prevTerm: number, entries: E[], commit: number }
  /** `index`: the last index that now matches the leader's log, or on a reject the probed index, with `hint` where the follower's log ends. */
  | Base & { type: 'app-resp', index: number, reject: boolean, hint: number }
  | Base & { type: 'heartbeat', commit: number }
  | Base & { type: 'heartbeat-resp' }
  /** The leader asks the follower to replace its log with a snapshot; the driver carries the data. */
  | Base & { type: 'snap', snapshot: SnapshotMeta<M> }

export interface Ready<E, M extends RaftMember> {
  /** Set when term, vote or commit changed: persist before sending. */
  hardState?: HardState
  /** A snapshot received from the leader: install it (table and log) before anything below. */
  snapshot?: SnapshotMeta<M>
  /** Entries to persist, in order; the first may overwrite a stored tail from its index on. */
  entries: E[]
  /** Committed entries to apply to the state machine, in order. */
  committed: E[]
  /** Messages to send once the above is on disk. */
  messages: Array<Message<E, M>>
}

export interface RaftConfig<E extends RaftEntry, M extends RaftMember> {
  id: string
  /** Ticks without a leader before a follower stands (randomised in [electionTicks, 2 x electionTicks)). */
  electionTicks: number
  heartbeatTicks: number
  preVote: boolean
  checkQuorum: boolean
  /** A random number in [0, 1): injected, so tests are deterministic. */
  random: () => number
  /** The replica set an entry sets, if it is a membership change. */
  membersOf: (entry: E) => M[] | undefined
  /** A new leader's first entry of its term. */
  noop: (index: number, term: number) => E
  /** Bytes an entry takes on the wire, to bound a message. */
  sizeOf: (entry: E) => number
  maxEntriesPerMessage: number
  maxBytesPerMessage: number
  /** Appends sent to a follower ahead of its acknowledgements. */
  maxInflight: number
}

/** What a node starts from: its persisted state. */
export interface RaftStorage<E, M extends RaftMember> {
  hardState: HardState
  /** The compacted prefix of the log (index 0 and no members for a new node). */
  snapshot: SnapshotMeta<M>
  /** The stored entries after the snapshot, consecutive. */
  entries: E[]
  /** What the state machine has applied already (at least snapshot.index). */
  applied: number
}

export class NotLeaderError extends Error {
  constructor (readonly leader: string | null) { super('not the leader') }
}

export class ConfigChangeError extends Error {}

interface Progress {
  match: number
  next: number
  state: 'probe' | 'replicate' | 'snapshot'
  /** In probe state: an append is out and unanswered, send no more until a reply or the next heartbeat. */
  paused: boolean
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot: number
  /** Heard from in this election timeout (check-quorum). */
  recentActive: boolean
  /** Last indexes of the appends in flight (replicate state). */
  inflight: number[]
}

export class Raft<E extends RaftEntry, M extends RaftMember> {
  readonly id: string
  term = 0
  vote: string | null = null
  lead: string | null = null
  role: Role = 'follower'
  commit = 0
  /** Committed entries up to here were handed out in a Ready. */
  applied = 0

  private snap: SnapshotMeta<M>
  private log: E[] = []
  /** The replica set: the last membership entry in the log, committed or not (thesis 4.1), else the snapshot's. */
  private members: M[]
  private membersIndex: number
  /** The first index of the leader's own term: nothing is ready to serve before it commits. */
  private termStart = Number.POSITIVE_INFINITY

  private electionElapsed = 0
  private heartbeatElapsed = 0
  private randomizedElection: number
  private readonly progress = new Map<string, Progress>()
  private readonly votes = new Map<string, boolean>()

  private msgs: Array<Message<E, M>> = []
  /** The lowest index changed since the last Ready (entries from here on must be persisted). */
  private unstableFrom: number
  private pendingSnapshot: SnapshotMeta<M> | undefined
  private lastHard: HardState

  constructor (private readonly cfg: RaftConfig<E, M>, storage: RaftStorage<E, M>) {
    this.id = cfg.id
    this.term = storage.hardState.term
    this.vote = storage.hardState.vote
    this.snap = storage.snapshot
    this.log = storage.entries.slice()
    for (const [i, e] of this.log.entries()) {
      if (e.index !== this.snap.index + 1 + i) throw new Error(`stored entry ${e.index} is not consecutive after ${this.snap.index + i}`)
    }
    this.commit = Math.max(storage.hardState.commit, storage.applied, this.snap.index)
    if (this.commit > this.lastIndex) this.commit = this.lastIndex
    this.applied = Math.max(storage.applied, this.snap.index)
    this.members = this.snap.members
    this.membersIndex = this.snap.index
    this.reloadMembers()
    this.unstableFrom = this.lastIndex + 1
    this.lastHard = this.hardState()
    this.randomizedElection = this.drawElection()
  }

  // ---- reads

  get lastIndex (): number { return this.log.length > 0 ? this.log[this.log.length - 1].index : this.snap.index }
  get lastTerm (): number { return this.termAt(this.lastIndex) as number }
  get firstIndex (): number { return this.snap.index + 1 }
  get snapshotMeta (): SnapshotMeta<M> { return this.snap }

  /** The term of entry `index`, or undefined where it is compacted away or not yet written. */
  termAt (index: number): number | undefined {
    if (index === this.snap.index) return this.snap.term
    if (index < this.snap.index || index > this.lastIndex) return undefined
    return this.log[index - this.snap.index - 1].term
  }

  entry (index: number): E | undefined {
    return index > this.snap.index && index <= this.lastIndex ? this.log[index - this.snap.index - 1] : undefined
  }

  /** The current replica set (the last membership entry, committed or not). */
  config (): M[] { return this.members }
  isMember (peer: string): boolean { return this.members.some(m => m.peer === peer) }

  /** The replica set as of `index` (which must not be compacted away). */
  configAt (index: number): M[] {
    for (let i = Math.min(index, this.lastIndex); i > this.snap.index; i--) {
      const set = this.cfg.membersOf(this.entry(i) as E)
      if (set != null) return set
    }
    return this.snap.members
  }

  /** The leader has committed an entry of its own term, so every earlier committed entry is known here. */
  committedInTerm (): boolean { return this.role === 'leader' && this.commit >= this.termStart }
  /** The index the state machine must reach before the leader plans from it. */
  readyIndex (): number { return this.role === 'leader' ? this.termStart : Number.POSITIVE_INFINITY }

  hardState (): HardState { return { term: this.term, vote: this.vote, commit: this.commit } }

  // ---- inputs

  tick (): void {
    if (this.role === 'leader') {
      this.heartbeatElapsed++
      this.electionElapsed++
      if (this.electionElapsed >= this.cfg.electionTicks) {
        this.electionElapsed = 0
        if (this.cfg.checkQuorum && !this.quorumActive()) {
          this.becomeFollower(this.term, null)
          return
        }
      }
      if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
        this.heartbeatElapsed = 0
        this.broadcastHeartbeat()
      }
      return
    }
    this.electionElapsed++
    if (this.promotable() && this.electionElapsed >= this.randomizedElection) {
      this.electionElapsed = 0
      this.campaign(this.cfg.preVote ? 'pre-candidate' : 'candidate')
    }
  }

  /** Starts an election now (used by tests and by a founder). */
  campaignNow (): void {
    if (this.role !== 'leader' && this.promotable()) this.campaign(this.cfg.preVote ? 'pre-candidate' : 'candidate')
  }

  /**
   * Appends an entry built by `make(index, term)` to the leader's log; returns its index and term.
   * A membership change is refused while another is uncommitted, or before the leader has
   * committed an entry of its term, or if it adds or removes more than one replica.
   */
  propose (make: (index: number, term: number) => E): { index: number, term: number } {
    if (this.role !== 'leader') throw new NotLeaderError(this.lead)
    const entry = make(this.lastIndex + 1, this.term)
    const set = this.cfg.membersOf(entry)
    if (set != null) this.checkConfigChange(set)
    this.appendEntries([entry])
    this.progressFor(this.id)
    this.maybeCommit()
    this.broadcastAppend()
    return { index: entry.index, term: entry.term }
  }

  step (m: Message<E, M>): void {
    if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'pre-vote') {
        // check-quorum: a replica that heard from a live leader within the election timeout ignores
        // candidates, so a replica returning from a partition cannot depose a healthy leader
        const inLease = this.cfg.checkQuorum && this.lead != null && this.electionElapsed < this.cfg.electionTicks
        if (inLease) return
      }
      if (m.type === 'pre-vote') {
        // a pre-vote never changes our term
      } else if (m.type === 'pre-vote-resp' && !m.reject) {
        // a granted pre-vote carries the term we would stand in; we move to it only by standing
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from)
      } else {
        this.becomeFollower(m.term, null)
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === 'app' || m.type === 'heartbeat')) {
        // a leader of an older term: tell it ours. Without this, a replica whose term ran ahead in
        // a partition (possible without pre-vote) would be ignored for ever under check-quorum.
        this.send({ type: 'app-resp', to: m.from, term: this.term, index: 0, reject: true, hint: 0 })
      } else if (m.type === 'pre-vote') {
        this.send({ type: 'pre-vote-resp', to: m.from, term: this.term, reject: true })
      }
      return
    }

    if (m.type === 'vote' || m.type === 'pre-vote') {
      this.handleVote(m)
      return
    }
    switch (this.role) {
      case 'leader': this.stepLeader(m); break
      case 'candidate': case 'pre-candidate': this.stepCandidate(m); break
      case 'follower': this.stepFollower(m); break
    }
  }

  /** The driver could not deliver to `peer`: probe it again from its last known match. */
  reportUnreachable (peer: string): void {
    const pr = this.progress.get(peer)
    if (this.role !== 'leader' || pr == null) return
    if (pr.state === 'replicate') this.toProbe(pr)
  }

  /** The driver finished (or failed) sending a snapshot to `peer`. */
  reportSnapshot (peer: string, ok: boolean): void {
    const pr = this.progress.get(peer)
    if (this.role !== 'leader' || pr == null || pr.state !== 'snapshot') return
    if (!ok) pr.pendingSnapshot = 0
    this.toProbe(pr)
    // wait for the follower's answer (or the next heartbeat) before sending more
    pr.paused = true
  }

  /**
   * Forgets the log up to `index` (applied and persisted, with the state machine saved at that
   * point): the snapshot now covers it.
   */
  compact (index: number): void {
    if (index <= this.snap.index) return
    if (index > this.applied) throw new Error(`cannot compact to ${index}: only ${this.applied} is applied`)
    const meta: SnapshotMeta<M> = { index, term: this.termAt(index) as number, members: this.configAt(index) }
    this.log = this.log.slice(index - this.snap.index)
    this.snap = meta
  }

  // ---- output

  hasReady (): boolean {
    return this.msgs.length > 0 || this.unstableFrom <= this.lastIndex || this.pendingSnapshot != null ||
      this.applied < this.commit || !sameHard(this.lastHard, this.hardState())
  }

  /** Takes what is to be done; the driver does it in order (install, persist, send, apply). */
  ready (): Ready<E, M> {
    const hard = this.hardState()
    const rd: Ready<E, M> = {
      entries: this.unstableFrom <= this.lastIndex ? this.log.slice(Math.max(0, this.unstableFrom - this.snap.index - 1)) : [],
      committed: [],
      messages: this.msgs
    }
    if (!sameHard(this.lastHard, hard)) rd.hardState = hard
    if (this.pendingSnapshot != null) rd.snapshot = this.pendingSnapshot
    if (this.applied < this.commit) rd.committed = this.log.slice(this.applied - this.snap.index, this.commit - this.snap.index)
    this.msgs = []
    this.pendingSnapshot = undefined
    this.unstableFrom = this.lastIndex + 1
    this.lastHard = hard
    this.applied = this.commit
    return rd
  }

  // ---- roles

  private becomeFollower (term: number, lead: string | null): void {
    if (term !== this.term) { this.term = term; this.vote = null }
    this.role = 'follower'
    this.lead = lead
    this.reset()
  }

  private becomePreCandidate (): void {
    // the term stays: a pre-candidate that loses has disturbed nobody
    this.role = 'pre-candidate'
    this.lead = null
    this.votes.clear()
    this.electionElapsed = 0
    this.randomizedElection = this.drawElection()
  }

  private becomeCandidate (): void {
    this.term++
    this.vote = this.id
    this.role = 'candidate'
    this.lead = null
    this.reset()
  }

  private becomeLeader (): void {
    this.role = 'leader'
    this.lead = this.id
    this.reset()
    for (const m of this.members) this.progress.set(m.peer, this.newProgress(m.peer))
    // an entry of its own term lets the leader commit what earlier leaders left uncommitted (5.4.2)
    this.termStart = this.lastIndex + 1
    this.appendEntries([this.cfg.noop(this.lastIndex + 1, this.term)])
    this.progressFor(this.id)
    this.maybeCommit()
    this.broadcastAppend()
  }

  private reset (): void {
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.randomizedElection = this.drawElection()
    this.votes.clear()
    this.progress.clear()
    this.termStart = Number.POSITIVE_INFINITY
  }

  private campaign (kind: 'pre-candidate' | 'candidate'): void {
    if (kind === 'pre-candidate') this.becomePreCandidate()
    else this.becomeCandidate()
    const term = kind === 'pre-candidate' ? this.term + 1 : this.term
    this.votes.set(this.id, true)
    if (this.tally() === 'won') {
      if (kind === 'pre-candidate') this.campaign('candidate')
      else this.becomeLeader()
      return
    }
    for (const m of this.members) {
      if (m.peer === this.id) continue
      this.send({ type: kind === 'pre-candidate' ? 'pre-vote' : 'vote', to: m.peer, term, lastIndex: this.lastIndex, lastTerm: this.lastTerm })
    }
  }

  private tally (): 'won' | 'lost' | 'pending' {
    let granted = 0
    let rejected = 0
    for (const m of this.members) {
      const v = this.votes.get(m.peer)
      if (v === true) granted++
      else if (v === false) rejected++
    }
    const q = this.quorum()
    if (granted >= q) return 'won'
    if (rejected > this.members.length - q) return 'lost'
    return 'pending'
  }

  private handleVote (m: Extract<Message<E, M>, { type: 'vote' | 'pre-vote' }>): void {
    const respType = m.type === 'vote' ? 'vote-resp' : 'pre-vote-resp'
    // any replica votes, members or not: a new replica that has received nothing yet must be able to
    // help elect, or a set that just added it could be left without a majority. A removed replica
    // that asks is ignored in the leader's lease (check-quorum, in step).
    const canVote = (this.vote === m.from ||
      (this.vote == null && this.lead == null) ||
      (m.type === 'pre-vote' && m.term > this.term))
    const upToDate = m.lastTerm > this.lastTerm || (m.lastTerm === this.lastTerm && m.lastIndex >= this.lastIndex)
    if (canVote && upToDate) {
      // a granted pre-vote answers in the term asked about, so the candidate counts it
      this.send({ type: respType, to: m.from, term: m.term, reject: false })
      if (m.type === 'vote') {
        this.electionElapsed = 0
        this.vote = m.from
      }
    } else {
      this.send({ type: respType, to: m.from, term: this.term, reject: true })
    }
  }

  private stepCandidate (m: Message<E, M>): void {
    const want = this.role === 'pre-candidate' ? 'pre-vote-resp' : 'vote-resp'
    switch (m.type) {
      case 'app': case 'heartbeat': case 'snap':
        this.becomeFollower(m.term, m.from)
        this.stepFollower(m)
        return
      case 'vote-resp': case 'pre-vote-resp': {
        if (m.type !== want) return
        if (!this.votes.has(m.from)) this.votes.set(m.from, !m.reject)
        const result = this.tally()
        if (result === 'won') {
          if (this.role === 'pre-candidate') this.campaign('candidate')
          else this.becomeLeader()
        } else if (result === 'lost') {
          this.becomeFollower(this.term, null)
        }
      }
    }
  }

  private stepFollower (m: Message<E, M>): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0
        this.lead = m.from
        this.handleAppend(m)
        return
      case 'heartbeat':
        this.electionElapsed = 0
        this.lead = m.from
        // the leader sends at most what it knows we hold
        if (m.commit > this.commit) this.commitTo(Math.min(m.commit, this.lastIndex))
        this.send({ type: 'heartbeat-resp', to: m.from, term: this.term })
        return
      case 'snap':
        this.electionElapsed = 0
        this.lead = m.from
        this.handleSnapshot(m)
    }
  }

  private handleAppend (m: Extract<Message<E, M>, { type: 'app' }>): void {
    if (m.prevIndex < this.commit) {
      // already committed here: tell the leader how far we are
      this.send({ type: 'app-resp', to: m.from, term: this.term, index: this.commit, reject: false, hint: 0 })
      return
    }
    if (this.termAt(m.prevIndex) !== m.prevTerm) {
      this.send({ type: 'app-resp', to: m.from, term: this.term, index: m.prevIndex, reject: true, hint: Math.min(this.lastIndex, m.prevIndex - 1) })
      return
    }
    // log matching: skip what we hold already, replace a conflicting tail (never a committed entry)
    let i = 0
    while (i < m.entries.length && this.termAt(m.entries[i].index) === m.entries[i].term) i++
    if (i < m.entries.length) {
      const first = m.entries[i].index
      if (first <= this.commit) throw new Error(`entry ${first} conflicts with a committed entry`)
      this.truncateFrom(first)
      this.appendEntries(m.entries.slice(i))
    }
    const lastNew = m.prevIndex + m.entries.length
    if (m.commit > this.commit) this.commitTo(Math.min(m.commit, lastNew))
    this.send({ type: 'app-resp', to: m.from, term: this.term, index: lastNew, reject: false, hint: 0 })
  }

  private handleSnapshot (m: Extract<Message<E, M>, { type: 'snap' }>): void {
    const s = m.snapshot
    if (s.index <= this.commit) {
      this.send({ type: 'app-resp', to: m.from, term: this.term, index: this.commit, reject: false, hint: 0 })
      return
    }
    if (this.termAt(s.index) === s.term) {
      // our log holds it already: the snapshot only tells us it is committed
      this.commitTo(s.index)
    } else {
      this.log = []
      this.snap = s
      this.commit = s.index
      this.applied = s.index
      this.unstableFrom = s.index + 1
      this.members = s.members
      this.membersIndex = s.index
      this.pendingSnapshot = s
    }
    this.send({ type: 'app-resp', to: m.from, term: this.term, index: this.lastIndex, reject: false, hint: 0 })
  }

  private stepLeader (m: Message<E, M>): void {
    const pr = this.progress.get(m.from)
    if (pr == null) return
    switch (m.type) {
      case 'app-resp': {
        pr.recentActive = true
        if (m.reject) {
          // the append after m.index did not match; back up to where the follower's log ends.
          // A reject for an append we have moved past is stale (reordered or duplicated): ignore it.
          if (pr.state === 'snapshot') return
          if (pr.state === 'replicate' ? m.index <= pr.match : m.index !== pr.next - 1) return
          this.toProbe(pr)
          pr.next = Math.max(pr.match + 1, Math.min(m.index, m.hint + 1))
          this.sendAppend(m.from)
          return
        }
        const oldPaused = pr.paused
        if (m.index > pr.match) {
          pr.match = m.index
          if (pr.next <= m.index) pr.next = m.index + 1
          pr.paused = false
          pr.inflight = pr.inflight.filter(i => i > m.index)
          if (pr.state === 'probe') this.toReplicate(pr)
          else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) { this.toProbe(pr); this.toReplicate(pr) }
          if (this.maybeCommit()) this.broadcastAppend()
          else if (pr.match < this.lastIndex) this.sendAppend(m.from)
          this.maybeStepDownAfterRemoval()
        } else if (oldPaused && pr.state === 'probe') {
          pr.paused = false
          if (pr.match < this.lastIndex) this.sendAppend(m.from)
        }
        return
      }
      case 'heartbeat-resp':
        pr.recentActive = true
        pr.paused = false
        // appends may have been lost: free a slot, so the next append's reject resets the pipeline
        if (pr.state === 'replicate' && pr.inflight.length >= this.cfg.maxInflight) pr.inflight.shift()
        if (pr.match < this.lastIndex) this.sendAppend(m.from)
    }
  }

  // ---- the leader's replication

  private newProgress (peer: string): Progress {
    return { match: peer === this.id ? this.lastIndex : 0, next: this.lastIndex + 1, state: 'probe', paused: false, pendingSnapshot: 0, recentActive: peer === this.id, inflight: [] }
  }

  private progressFor (peer: string): void {
    const pr = this.progress.get(peer)
    if (pr != null && peer === this.id) { pr.match = this.lastIndex; pr.next = this.lastIndex + 1 }
  }

  private toProbe (pr: Progress): void {
    pr.state = 'probe'
    pr.paused = false
    pr.inflight = []
    pr.next = Math.max(pr.match + 1, pr.pendingSnapshot + 1)
    pr.pendingSnapshot = 0
  }

  private toReplicate (pr: Progress): void {
    pr.state = 'replicate'
    pr.paused = false
    pr.inflight = []
    pr.next = pr.match + 1
  }

  private broadcastAppend (): void {
    for (const peer of this.progress.keys()) if (peer !== this.id) this.sendAppend(peer)
  }

  private broadcastHeartbeat (): void {
    for (const [peer, pr] of this.progress) {
      if (peer === this.id) continue
      this.send({ type: 'heartbeat', to: peer, term: this.term, commit: Math.min(pr.match, this.commit) })
    }
  }

  private sendAppend (to: string): void {
    const pr = this.progress.get(to)
    if (pr == null) return
    if (pr.state === 'snapshot' || (pr.state === 'probe' && pr.paused) || (pr.state === 'replicate' && pr.inflight.length >= this.cfg.maxInflight)) return
    const prevIndex = pr.next - 1
    const prevTerm = this.termAt(prevIndex)
    if (prevTerm === undefined) {
      // compacted away: the follower needs the snapshot (the driver sends the state machine as it is now)
      pr.state = 'snapshot'
      pr.pendingSnapshot = this.snap.index
      this.send({ type: 'snap', to, term: this.term, snapshot: this.snap })
      return
    }
    const entries: E[] = []
    let bytes = 0
    for (let i = pr.next; i <= this.lastIndex && entries.length < this.cfg.maxEntriesPerMessage; i++) {
      const e = this.entry(i) as E
      bytes += this.cfg.sizeOf(e)
      if (entries.length > 0 && bytes > this.cfg.maxBytesPerMessage) break
      entries.push(e)
    }
    this.send({ type: 'app', to, term: this.term, prevIndex, prevTerm, entries, commit: this.commit })
    if (pr.state === 'probe') {
      pr.paused = true
    } else if (entries.length > 0) {
      const last = entries[entries.length - 1].index
      pr.next = last + 1
      pr.inflight.push(last)
    }
  }

  private maybeCommit (): boolean {
    const matches = this.members.map(m => m.peer === this.id ? this.lastIndex : this.progress.get(m.peer)?.match ?? 0).sort((a, b) => b - a)
    if (matches.length === 0) return false
    const index = matches[this.quorum() - 1]
    // only an entry of the leader's own term commits by counting (5.4.2)
    if (index > this.commit && this.termAt(index) === this.term) {
      this.commitTo(index)
      return true
    }
    return false
  }

  /** A leader that removed itself hands over once the change is committed (thesis 4.2.2). */
  private maybeStepDownAfterRemoval (): void {
    if (this.role === 'leader' && !this.isMember(this.id) && this.commit >= this.membersIndex) this.becomeFollower(this.term, null)
  }

  private quorumActive (): boolean {
    let active = 0
    for (const m of this.members) {
      const pr = this.progress.get(m.peer)
      if (m.peer === this.id || pr?.recentActive === true) active++
      if (pr != null && m.peer !== this.id) pr.recentActive = false
    }
    return active >= this.quorum()
  }

  private quorum (): number { return Math.floor(this.members.length / 2) + 1 }

  private promotable (): boolean { return this.isMember(this.id) }

  private checkConfigChange (set: M[]): void {
    if (!this.committedInTerm()) throw new ConfigChangeError('the leader has not yet committed an entry of its term; try again')
    if (this.membersIndex > this.commit) throw new ConfigChangeError('another membership change is under way; try again when it is committed')
    const before = new Set(this.members.map(m => m.peer))
    const after = new Set(set.map(m => m.peer))
    let diff = 0
    for (const p of before) if (!after.has(p)) diff++
    for (const p of after) if (!before.has(p)) diff++
    if (diff > 1) throw new ConfigChangeError('a membership change adds or removes one replica at a time')
    if (after.size === 0) throw new ConfigChangeError('the replica set cannot be empty')
  }

  // ---- the log

  private appendEntries (entries: E[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex + 1) throw new Error(`entry ${e.index} does not follow ${this.lastIndex}`)
      this.log.push(e)
      const set = this.cfg.membersOf(e)
      if (set != null) this.setMembers(set, e.index)
    }
    if (entries.length > 0) this.unstableFrom = Math.min(this.unstableFrom, entries[0].index)
  }

  private truncateFrom (index: number): void {
    if (index > this.lastIndex) return
    this.log = this.log.slice(0, index - this.snap.index - 1)
    if (this.membersIndex >= index) this.reloadMembers()
  }

  private reloadMembers (): void {
    this.members = this.snap.members
    this.membersIndex = this.snap.index
    for (let i = this.lastIndex; i > this.snap.index; i--) {
      const set = this.cfg.membersOf(this.entry(i) as E)
      if (set != null) { this.members = set; this.membersIndex = i; break }
    }
  }

  private setMembers (set: M[], index: number): void {
    this.members = set
    this.membersIndex = index
    if (this.role !== 'leader') return
    for (const m of set) if (!this.progress.has(m.peer)) this.progress.set(m.peer, this.newProgress(m.peer))
    for (const peer of [...this.progress.keys()]) if (!set.some(m => m.peer === peer) && peer !== this.id) this.progress.delete(peer)
  }

  private commitTo (index: number): void {
    if (index <= this.commit) return
    if (index > this.lastIndex) throw new Error(`commit ${index} is past the last entry ${this.lastIndex}`)
    this.commit = index
  }

  private send (m: Outgoing<E, M>): void {
    this.msgs.push({ ...m, from: this.id } as Message<E, M>)
  }

  private drawElection (): number {
    return this.cfg.electionTicks + Math.floor(this.cfg.random() * this.cfg.electionTicks)
  }
}

type Outgoing<E, M extends RaftMember> = Message<E, M> extends infer T ? T extends unknown ? Omit<T, 'from'> : never : never

function sameHard (a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit
}
