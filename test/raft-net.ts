/**
 * A deterministic in-memory network of pure Raft cores (src/roles/fat/raft/core.ts) for the unit
 * and simulation tests: each node persists its Ready to a storage object before its messages go
 * out, exactly as the real driver does, so a crash loses only what a real crash would.
 */
import { Raft, type Message, type RaftConfig, type Ready, type SnapshotMeta } from '../src/roles/fat/raft/core.ts'

export interface Member { peer: string }
export type Op = { kind: 'noop' } | { kind: 'members', members: Member[] } | { kind: 'data', value: string } |
{ kind: 'grant', id: string, vendor: string, bytes: number } | { kind: 'free', id: string }
export interface Entry { index: number, term: number, op: Op }
export type Msg = Message<Entry, Member>

export function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const members = (...ids: string[]): Member[] => ids.map(peer => ({ peer }))

export function config (id: string, random: () => number, over: Partial<RaftConfig<Entry, Member>> = {}): RaftConfig<Entry, Member> {
  return {
    id,
    electionTicks: 10,
    heartbeatTicks: 1,
    preVote: false,
    checkQuorum: false,
    random,
    membersOf: e => e.op.kind === 'members' ? e.op.members : undefined,
    noop: (index, term) => ({ index, term, op: { kind: 'noop' } }),
    sizeOf: e => JSON.stringify(e).length,
    maxEntriesPerMessage: 4,
    maxBytesPerMessage: 1 << 20,
    maxInflight: 4,
    ...over
  }
}

/** What survives a crash: the persisted log, hard state, snapshot, and the applied state machine. */
export interface Disk {
  term: number
  vote: string | null
  commit: number
  snapshot: SnapshotMeta<Member>
  entries: Entry[]
  /** The state machine, applied and saved atomically with its position (as FatTable.apply does). */
  state: Machine
}

/** The replicated state machine: data values in order, and grants of vendor bytes. */
export interface Machine {
  applied: number
  values: string[]
  used: Record<string, number>
  grants: Record<string, { vendor: string, bytes: number }>
}

export const emptyMachine = (): Machine => ({ applied: 0, values: [], used: {}, grants: {} })
export const cloneMachine = (m: Machine): Machine => structuredClone(m)

export function applyOp (m: Machine, index: number, op: Op): void {
  if (index !== m.applied + 1) throw new Error(`applied ${index} after ${m.applied}`)
  m.applied = index
  if (op.kind === 'data') m.values.push(op.value)
  if (op.kind === 'grant' && m.grants[op.id] == null) {
    m.grants[op.id] = { vendor: op.vendor, bytes: op.bytes }
    m.used[op.vendor] = (m.used[op.vendor] ?? 0) + op.bytes
  }
  if (op.kind === 'free') {
    const g = m.grants[op.id]
    if (g != null) { delete m.grants[op.id]; m.used[g.vendor] -= g.bytes }
  }
}

export interface SimNode {
  id: string
  raft: Raft<Entry, Member>
  disk: Disk
  machine: Machine
  up: boolean
}

export function newDisk (initial: Member[]): Disk {
  // a founded replica set: every node starts from a snapshot at 1 naming the members
  return { term: 1, vote: null, commit: 1, snapshot: { index: 1, term: 1, members: initial }, entries: [], state: { ...emptyMachine(), applied: 1 } }
}

export function boot (id: string, disk: Disk, cfg: RaftConfig<Entry, Member>): Raft<Entry, Member> {
  return new Raft(cfg, { hardState: { term: disk.term, vote: disk.vote, commit: disk.commit }, snapshot: disk.snapshot, entries: disk.entries, applied: disk.state.applied })
}

export interface Hooks {
  /** Called for each committed entry a node applies, before it is applied. */
  onApply?: (node: SimNode, e: Entry) => void
  /** A leader's 'snap' message: the state machine as it is now, at its applied index. */
  snapshotOf?: (node: SimNode) => { meta: SnapshotMeta<Member>, state: Machine }
}

/** Persists, installs and applies one Ready; returns the messages to send. */
export function handleReady (n: SimNode, rd: Ready<Entry, Member>, staged: Map<string, Machine>, hooks: Hooks = {}): Msg[] {
  if (rd.snapshot != null) {
    const state = staged.get(`${rd.snapshot.index}/${rd.snapshot.term}`)
    if (state == null) throw new Error(`${n.id}: snapshot ${rd.snapshot.index} was never received`)
    n.disk.snapshot = rd.snapshot
    n.disk.entries = []
    n.disk.state = cloneMachine(state)
    n.machine = cloneMachine(state)
  }
  if (rd.hardState != null) { n.disk.term = rd.hardState.term; n.disk.vote = rd.hardState.vote; n.disk.commit = rd.hardState.commit }
  if (rd.entries.length > 0) {
    const first = rd.entries[0].index
    n.disk.entries = n.disk.entries.filter(e => e.index < first).concat(rd.entries.map(e => structuredClone(e)))
  }
  for (const e of rd.committed) {
    hooks.onApply?.(n, e)
    applyOp(n.machine, e.index, e.op)
  }
  n.disk.state = cloneMachine(n.machine)
  return rd.messages
}

/** A small synchronous network for the rule-by-rule tests: deliver everything until quiet. */
export class Net {
  readonly nodes = new Map<string, SimNode>()
  /** Messages matching this are dropped. */
  drop: (m: Msg) => boolean = () => false
  readonly staged = new Map<string, Machine>()
  sent: Msg[] = []

  constructor (ids: string[], over: Partial<RaftConfig<Entry, Member>> = {}, seed = 1) {
    const random = mulberry32(seed)
    for (const id of ids) {
      const disk = newDisk(members(...ids))
      this.nodes.set(id, { id, disk, machine: cloneMachine(disk.state), raft: boot(id, disk, config(id, random, over)), up: true })
    }
  }

  /** Adds a new, empty replica: it knows no members, so it never stands, and waits to be told. */
  addEmpty (id: string, seed = 11): SimNode {
    const disk: Disk = { term: 0, vote: null, commit: 0, snapshot: { index: 0, term: 0, members: [] }, entries: [], state: emptyMachine() }
    const n = { id, disk, machine: cloneMachine(disk.state), raft: boot(id, disk, config(id, mulberry32(seed))), up: true }
    this.nodes.set(id, n)
    return n
  }

  /** A crash and restart: everything not on the node's disk is gone. */
  restart (id: string, over: Partial<RaftConfig<Entry, Member>> = {}): void {
    const n = this.nodes.get(id) as SimNode
    n.raft = boot(id, n.disk, config(id, mulberry32(id.length * 31), over))
    n.machine = cloneMachine(n.disk.state)
    n.up = true
  }

  node (id: string): Raft<Entry, Member> { return (this.nodes.get(id) as SimNode).raft }

  /** Processes every node's Ready and returns the messages they send (not yet delivered). */
  collect (): Msg[] {
    const out: Msg[] = []
    for (const n of this.nodes.values()) {
      if (!n.up || !n.raft.hasReady()) continue
      out.push(...handleReady(n, n.raft.ready(), this.staged))
    }
    return out
  }

  /** Delivers messages (and those they cause) until none are left; returns all delivered. */
  settle (max = 10_000): Msg[] {
    const delivered: Msg[] = []
    let queue = this.collect()
    for (let round = 0; queue.length > 0; round++) {
      if (round > max) throw new Error('the network did not settle')
      for (const m of queue) {
        if (this.drop(m)) continue
        const to = this.nodes.get(m.to)
        if (to == null || !to.up) continue
        if (m.type === 'snap') this.stageSnapshot(m)
        delivered.push(m)
        to.raft.step(m)
      }
      queue = this.collect()
    }
    this.sent.push(...delivered)
    return delivered
  }

  /** The leader's snapshot message carries its state machine as it is now (the driver's way). */
  stageSnapshot (m: Extract<Msg, { type: 'snap' }>): void {
    const from = this.nodes.get(m.from) as SimNode
    const applied = from.machine.applied
    m.snapshot = { index: applied, term: from.raft.termAt(applied) as number, members: from.raft.configAt(applied) }
    this.staged.set(`${applied}/${m.snapshot.term}`, cloneMachine(from.machine))
  }

  tick (id: string, times = 1): void {
    for (let i = 0; i < times; i++) this.node(id).tick()
  }

  /** `times` rounds of: every running node ticks once, then the network settles. */
  rounds (times: number): void {
    for (let i = 0; i < times; i++) {
      for (const n of this.nodes.values()) if (n.up) n.raft.tick()
      this.settle()
    }
  }

  /** Elects `id` by letting its election timer run out. */
  elect (id: string): void {
    this.node(id).campaignNow()
    this.settle()
  }

  propose (id: string, value: string): void {
    this.node(id).propose((index, term) => ({ index, term, op: { kind: 'data', value } }))
    this.settle()
  }

  leader (): string | undefined {
    return [...this.nodes.values()].find(n => n.up && n.raft.role === 'leader')?.id
  }
}
