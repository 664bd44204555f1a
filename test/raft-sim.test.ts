/**
 * A randomized simulation of the pure Raft core: many seeds, each a few thousand steps of ticks,
 * deliveries in random order, lost and duplicated messages, partitions, crashes and restarts
 * (losing everything not persisted), log compaction with snapshots, and membership changes. It
 * checks Raft's safety properties (Figure 3 of the paper) after every step, and the FAT's own: a
 * leader plans grants of vendor bytes from its applied state, one at a time, as createFat does, and
 * no vendor is ever granted more than its capacity in the committed sequence.
 */
import assert from 'node:assert/strict'
import type { Raft } from '../src/roles/fat/raft/core.ts'
import { applyOp, boot, cloneMachine, config, emptyMachine, handleReady, members, mulberry32, newDisk, type Disk, type Entry, type Machine, type Member, type Msg, type SimNode } from './raft-net.ts'

const CAPACITY = 1000
const VENDORS = ['v1', 'v2', 'v3']

interface Options { seed: number, steps: number, size: number, drop: number, dup: number, preVote: boolean }

function simulate ({ seed, steps, size, drop, dup, preVote }: Options): { commits: number, leaders: number, snapshots: number, changes: number } {
  const rnd = mulberry32(seed)
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]
  const pool = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7']
  const initial = pool.slice(0, size)
  const cfg = (id: string) => config(id, rnd, { preVote, checkQuorum: preVote, heartbeatTicks: 3, maxEntriesPerMessage: 3, maxInflight: 3 })
  const nodes = new Map<string, SimNode>()
  for (const id of initial) {
    const disk = newDisk(members(...initial))
    nodes.set(id, { id, disk, machine: cloneMachine(disk.state), raft: boot(id, disk, cfg(id)), up: true })
  }
  let net: Msg[] = []
  /** Which side of a partition each node is on (all 0: no partition). */
  let side = new Map<string, number>()
  const staged = new Map<string, Machine>()

  // ---- what the checks remember
  const leaderOf = new Map<number, string>()
  /** Every entry applied anywhere, by index: state machine safety means all nodes apply the same. */
  const committed = new Map<number, string>()
  /** The committed grants and frees, applied in order to a reference model of the vendors. */
  const reference = { ...emptyMachine(), applied: 1 }
  const outstanding = new Map<string, { index: number, term: number, op: Entry['op'] }>()
  const handedOut: Array<{ index: number, id: string }> = []
  let grantSeq = 0
  let snapshots = 0
  let changes = 0
  const wasLeader = new Set<string>()

  const where = (what: string): string => `seed ${seed}: ${what}`

  const onApply = (n: SimNode, e: Entry): void => {
    const text = JSON.stringify(e)
    const before = committed.get(e.index)
    if (before != null) assert.equal(text, before, where(`state machine safety: ${n.id} applies a different entry at ${e.index}`))
    else committed.set(e.index, text)
    // the reference model follows the committed sequence as it becomes contiguous
    while (committed.has(reference.applied + 1)) {
      const next = JSON.parse(committed.get(reference.applied + 1) as string) as Entry
      applyOp(reference, next.index, next.op)
      for (const v of VENDORS) assert.ok((reference.used[v] ?? 0) <= CAPACITY, where(`${v} is granted ${reference.used[v]} bytes of ${CAPACITY} at index ${next.index}`))
    }
    const mine = outstanding.get(n.id)
    if (mine != null && mine.index === e.index) {
      if (mine.term === e.term && mine.op.kind === 'grant') handedOut.push({ index: e.index, id: mine.op.id })
      outstanding.delete(n.id)
    }
  }

  const process = (n: SimNode): void => {
    if (!n.up || !n.raft.hasReady()) return
    const msgs = handleReady(n, n.raft.ready(), staged, { onApply })
    for (const m of msgs) {
      if (m.type === 'snap') {
        // the driver sends the state machine as it is now, at its applied index
        const applied = n.machine.applied
        m.snapshot = { index: applied, term: n.raft.termAt(applied) as number, members: n.raft.configAt(applied) }
        const key = `${applied}/${m.snapshot.term}`
        const prior = staged.get(key)
        if (prior != null) assert.deepEqual(prior, n.machine, where(`two states at snapshot ${key}`))
        staged.set(key, cloneMachine(n.machine))
        snapshots++
      }
      net.push(m)
    }
  }

  const checkLeaders = (): void => {
    for (const n of nodes.values()) {
      if (!n.up || n.raft.role !== 'leader') { wasLeader.delete(n.id); continue }
      const prior = leaderOf.get(n.raft.term)
      assert.ok(prior == null || prior === n.id, where(`election safety: ${prior} and ${n.id} both lead term ${n.raft.term}`))
      leaderOf.set(n.raft.term, n.id)
      if (!wasLeader.has(n.id)) {
        wasLeader.add(n.id)
        // leader completeness: every entry applied anywhere is in the new leader's log (or its snapshot)
        for (const [index, text] of committed) {
          if (index <= n.raft.snapshotMeta.index) continue
          const e = n.raft.entry(index)
          assert.ok(e != null && JSON.stringify(e) === text, where(`leader completeness: ${n.id} (term ${n.raft.term}) lacks committed entry ${index}`))
        }
      }
    }
  }

  const checkLogMatching = (): void => {
    const logs = [...nodes.values()].filter(n => n.up).map(n => n.raft)
    for (let i = 0; i < logs.length; i++) {
      for (let j = i + 1; j < logs.length; j++) {
        const a = logs[i]
        const b = logs[j]
        const lo = Math.max(a.firstIndex, b.firstIndex)
        const hi = Math.min(a.lastIndex, b.lastIndex)
        let top = 0
        for (let k = hi; k >= lo; k--) if (a.termAt(k) === b.termAt(k)) { top = k; break }
        for (let k = lo; k <= top; k++) {
          assert.equal(JSON.stringify(a.entry(k)), JSON.stringify(b.entry(k)), where(`log matching: ${a.id} and ${b.id} agree at ${top} and differ at ${k}`))
        }
      }
    }
  }

  /** The FAT's planning: from the applied table, one write at a time, once the leader's noop is applied. */
  const plan = (n: SimNode): void => {
    const r = n.raft
    if (r.role !== 'leader' || n.machine.applied < r.readyIndex() || outstanding.has(n.id)) return
    let op: Entry['op']
    const held = Object.keys(n.machine.grants)
    if (held.length > 0 && rnd() < 0.3) {
      op = { kind: 'free', id: pick(held) }
    } else {
      const bytes = 50 + Math.floor(rnd() * 300)
      const room = VENDORS.filter(v => CAPACITY - (n.machine.used[v] ?? 0) >= bytes)
      if (room.length === 0) return
      op = { kind: 'grant', id: `g${seed}-${grantSeq++}`, vendor: pick(room), bytes }
    }
    const at = r.propose((index, term) => ({ index, term, op }))
    outstanding.set(n.id, { ...at, op })
  }

  const changeMembers = (n: SimNode): void => {
    const r = n.raft
    const now = r.config().map(m => m.peer)
    let next: string[]
    if (now.length > 3 && rnd() < 0.5) {
      const gone = pick(now)
      next = now.filter(p => p !== gone)
    } else {
      const candidates = pool.filter(p => !now.includes(p))
      if (candidates.length === 0) return
      const added = pick(candidates)
      if (!nodes.has(added)) {
        const disk: Disk = { term: 0, vote: null, commit: 0, snapshot: { index: 0, term: 0, members: [] }, entries: [], state: emptyMachine() }
        nodes.set(added, { id: added, disk, machine: cloneMachine(disk.state), raft: boot(added, disk, cfg(added)), up: true })
      }
      next = [...now, added]
    }
    try {
      r.propose((index, term) => ({ index, term, op: { kind: 'members', members: members(...next) } }))
      changes++
    } catch (err: any) {
      if (err.name !== 'Error' || !/membership|entry of its term|under way/.test(err.message)) throw err
    }
  }

  /** The driver learns whether a snapshot it streamed arrived (its last chunk is acknowledged). */
  const snapshotSent = (m: Msg, ok: boolean): void => {
    const from = nodes.get(m.from)
    if (m.type !== 'snap' || from == null || !from.up) return
    from.raft.reportSnapshot(m.to, ok)
    process(from)
  }

  const deliver = (m: Msg): void => {
    const to = nodes.get(m.to)
    if (to == null || !to.up || (side.get(m.from) ?? 0) !== (side.get(m.to) ?? 0)) { snapshotSent(m, false); return }
    to.raft.step(structuredClone(m))
    process(to)
    snapshotSent(m, true)
  }

  for (let step = 0; step < steps; step++) {
    const up = [...nodes.values()].filter(n => n.up)
    const x = rnd()
    if (x < 0.45) {
      // a few messages, each picked at random from those in flight (so they arrive reordered)
      for (let k = 0; k < 6 && net.length > 0; k++) {
        const i = Math.floor(rnd() * net.length)
        const m = net[i]
        if (rnd() >= dup) net.splice(i, 1)
        if (rnd() >= drop) deliver(m)
        else snapshotSent(m, false)
      }
    } else if (x < 0.8) {
      if (up.length > 0) { const n = pick(up); n.raft.tick(); process(n) }
    } else if (x < 0.92) {
      for (const n of up) { plan(n); process(n) }
    } else if (x < 0.94) {
      // a partition: each node on side 0 or 1; or healed
      side = rnd() < 0.4 ? new Map() : new Map([...nodes.keys()].map(id => [id, rnd() < 0.5 ? 0 : 1]))
    } else if (x < 0.955) {
      const n = pick([...nodes.values()])
      if (n.up) {
        n.up = false
        outstanding.delete(n.id)
      } else {
        n.raft = boot(n.id, n.disk, cfg(n.id))
        n.machine = cloneMachine(n.disk.state)
        n.up = true
      }
    } else if (x < 0.975) {
      // compaction: the state machine on disk covers the log up to its applied index
      if (up.length > 0) {
        const n = pick(up)
        if (n.machine.applied - n.raft.snapshotMeta.index > 4) {
          n.raft.compact(n.machine.applied)
          n.disk.snapshot = n.raft.snapshotMeta
          n.disk.entries = n.disk.entries.filter(e => e.index > n.disk.snapshot.index)
        }
      }
    } else if (x < 0.98) {
      const leader = up.find(n => n.raft.role === 'leader')
      if (leader != null) { changeMembers(leader); process(leader) }
    }
    // a network that holds too much drops the oldest (bounded memory, and still loss)
    if (net.length > 400) {
      for (const m of net.slice(0, 100)) snapshotSent(m, false)
      net = net.slice(100)
    }
    checkLeaders()
    if (step % 50 === 0) checkLogMatching()
  }

  // ---- heal everything and check that the replicas converge and still make progress
  side = new Map()
  for (const n of nodes.values()) {
    if (!n.up) { n.raft = boot(n.id, n.disk, cfg(n.id)); n.machine = cloneMachine(n.disk.state); n.up = true }
  }
  let leader: Raft<Entry, Member> | undefined
  let final: { index: number, term: number } | undefined
  for (let round = 0; round < 3000; round++) {
    for (const n of nodes.values()) { n.raft.tick(); process(n) }
    const queue = net
    net = []
    for (const m of queue) deliver(m)
    checkLeaders()
    leader = [...nodes.values()].find(n => n.raft.role === 'leader' && n.raft.committedInTerm())?.raft
    // a final entry proposed by a leader that lost the lead may be replaced: propose it again
    if (leader != null && final != null && leader.termAt(final.index) !== final.term) final = undefined
    if (leader != null && final == null) {
      try { final = leader.propose((index, term) => ({ index, term, op: { kind: 'data', value: 'final' } })) } catch {}
    }
    if (leader != null && final != null) {
      const set = leader.config().map(m => m.peer)
      const done = set.every(p => (nodes.get(p) as SimNode).machine.applied >= (final as { index: number }).index)
      if (done) break
    }
  }
  const describeNodes = (): string => [...nodes.values()].map(n => `${n.id} ${n.raft.role} t${n.raft.term} lead ${n.raft.lead} log ${n.raft.firstIndex}-${n.raft.lastIndex}/${n.raft.lastTerm} commit ${n.raft.commit} applied ${n.machine.applied} set ${n.raft.config().map(m => m.peer).join(',')}`).join('\n')
  assert.ok(leader != null && final != null, where(`no leader after healing:\n${describeNodes()}`))
  const set = leader.config().map(m => m.peer)
  for (const p of set) {
    const n = nodes.get(p) as SimNode
    assert.ok(n.machine.applied >= final.index, where(`${p} did not catch up after healing (${n.machine.applied} < ${final.index}):\n${describeNodes()}`))
  }
  checkLogMatching()
  // every grant a leader handed out is in the committed sequence, as that leader saw it
  for (const g of handedOut) assert.match(committed.get(g.index) ?? '', new RegExp(`"id":"${g.id}"`), where(`handed-out grant ${g.id} is not committed at ${g.index}`))
  return { commits: committed.size, leaders: leaderOf.size, snapshots, changes }
}

describe('raft core: randomized simulation (loss, duplication, reordering, partitions, crashes, compaction, membership)', function () {
  const seeds = Number(process.env.RAFT_SIM_SEEDS ?? 60)
  for (const preVote of [true, false]) {
    it(`${seeds} seeds ${preVote ? 'with' : 'without'} pre-vote and check-quorum: election safety, log matching, leader completeness, state machine safety, no over-grant`, function () {
      let totals = { commits: 0, leaders: 0, snapshots: 0, changes: 0 }
      const started = Date.now()
      const only = process.env.RAFT_SIM_SEED
      for (let seed = only != null ? Number(only) : 1; seed <= (only != null ? Number(only) : seeds); seed++) {
        const r = simulate({ seed: seed + (preVote ? 0 : 10_000), steps: 4000, size: seed % 2 === 0 ? 3 : 5, drop: 0.1, dup: 0.05, preVote })
        totals = { commits: totals.commits + r.commits, leaders: totals.leaders + r.leaders, snapshots: totals.snapshots + r.snapshots, changes: totals.changes + r.changes }
      }
      if (process.env.RAFT_SIM_VERBOSE != null) console.log(totals, Date.now() - started, 'ms')
      // the runs exercised what they claim to
      assert.ok(totals.commits > seeds * 20, `only ${totals.commits} entries committed`)
      assert.ok(totals.leaders > seeds * 2, `only ${totals.leaders} terms had leaders`)
      assert.ok(totals.snapshots > seeds / 4, `only ${totals.snapshots} snapshots sent`)
      assert.ok(totals.changes > seeds / 4, `only ${totals.changes} membership changes`)
    })
  }
})
