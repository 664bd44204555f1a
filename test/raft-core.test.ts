/**
 * The pure Raft core, rule by rule, in the order of the paper's sections (Ongaro and Ousterhout,
 * "In Search of an Understandable Consensus Algorithm", and the thesis for pre-vote, check-quorum,
 * membership and snapshots), as etcd-io/raft's raft_paper_test.go does. No I/O and no timers.
 */
import assert from 'node:assert/strict'
import { NotLeaderError, ConfigChangeError, Raft } from '../src/roles/fat/raft/core.ts'
import { Net, boot, config, members, mulberry32, newDisk, type Entry, type Member, type Msg } from './raft-net.ts'

const ids = ['a', 'b', 'c']
const data = (value: string) => (index: number, term: number): Entry => ({ index, term, op: { kind: 'data', value } })
const lone = (id: string, over = {}, peers = ids): Raft<Entry, Member> => boot(id, newDisk(members(...peers)), config(id, mulberry32(7), over))
const typesOf = (ms: Msg[]): string[] => ms.map(m => `${m.type}>${m.to}`).sort()

describe('raft core: 5.1 terms', function () {
  for (const role of ['follower', 'candidate', 'leader'] as const) {
    it(`a ${role} that sees a higher term takes it and becomes a follower`, function () {
      const net = new Net(ids)
      if (role === 'leader') net.elect('a')
      const r = net.node('a')
      if (role === 'candidate') r.campaignNow()
      assert.equal(r.role, role)
      r.step({ type: 'app', from: 'b', to: 'a', term: 9, prevIndex: 0, prevTerm: 0, entries: [], commit: 0 })
      assert.equal(r.role, 'follower')
      assert.equal(r.term, 9)
      assert.equal(r.lead, 'b')
    })
  }

  it('a request with a stale term is refused, and the sender learns the newer term', function () {
    const r = lone('a')
    r.step({ type: 'app', from: 'b', to: 'a', term: 5, prevIndex: 1, prevTerm: 1, entries: [], commit: 1 })
    r.ready()
    r.step({ type: 'app', from: 'c', to: 'a', term: 3, prevIndex: 1, prevTerm: 1, entries: [data('x')(2, 3)], commit: 2 })
    const rd = r.ready()
    assert.equal(r.lastIndex, 1, 'nothing appended from the stale leader')
    assert.equal(r.lead, 'b')
    assert.deepEqual(rd.messages.map(m => [m.type, m.to, m.term]), [])
    // with check-quorum or pre-vote the stale leader is told the newer term, so it steps down
    const q = lone('a', { checkQuorum: true })
    q.step({ type: 'app', from: 'b', to: 'a', term: 5, prevIndex: 1, prevTerm: 1, entries: [], commit: 1 })
    q.ready()
    q.step({ type: 'heartbeat', from: 'c', to: 'a', term: 3, commit: 1 })
    assert.deepEqual(q.ready().messages.map(m => [m.type, m.to, m.term]), [['app-resp', 'c', 5]])
  })
})

describe('raft core: 5.2 leader election', function () {
  it('a follower that hears nothing for its election timeout stands: new term, votes for itself, asks everyone', function () {
    const r = lone('a')
    for (let i = 0; i < 20 && r.role === 'follower'; i++) r.tick()
    assert.equal(r.role, 'candidate')
    assert.equal(r.term, 2)
    assert.equal(r.vote, 'a')
    const rd = r.ready()
    assert.deepEqual(rd.hardState, { term: 2, vote: 'a', commit: 1 }, 'the vote is persisted with the ballots')
    assert.deepEqual(typesOf(rd.messages), ['vote>b', 'vote>c'])
    for (const m of rd.messages) assert.ok(m.type === 'vote' && m.lastIndex === 1 && m.lastTerm === 1)
  })

  it('election timeouts are drawn at random from [timeout, 2 x timeout)', function () {
    const seen = new Set<number>()
    for (let seed = 1; seed <= 50; seed++) {
      const r = boot('a', newDisk(members(...ids)), config('a', mulberry32(seed)))
      let ticks = 0
      while (r.role === 'follower') { r.tick(); ticks++ }
      assert.ok(ticks >= 10 && ticks < 20, `stood after ${ticks} ticks`)
      seen.add(ticks)
    }
    assert.ok(seen.size > 3, 'timeouts differ between replicas')
  })

  it('the leader sends heartbeats every heartbeat interval', function () {
    const net = new Net(ids, { heartbeatTicks: 2 })
    net.elect('a')
    net.tick('a')
    assert.deepEqual(net.collect(), [])
    net.tick('a')
    assert.deepEqual(typesOf(net.collect()), ['heartbeat>b', 'heartbeat>c'])
  })

  const votes: Array<[string, number, Record<string, boolean>, string]> = [
    ['wins with all votes', 3, { b: true, c: true }, 'leader'],
    ['wins with a majority', 3, { b: true }, 'leader'],
    ['stays a candidate without a majority yet', 5, { b: true }, 'candidate'],
    ['loses when a majority refuses', 3, { b: false, c: false }, 'follower'],
    ['wins with three of five', 5, { b: true, c: true, d: false }, 'leader']
  ]
  for (const [what, n, answers, role] of votes) {
    it(`a candidate ${what}`, function () {
      const peers = ['a', 'b', 'c', 'd', 'e'].slice(0, n)
      const r = lone('a', {}, peers)
      r.campaignNow()
      r.ready()
      for (const [from, granted] of Object.entries(answers)) r.step({ type: 'vote-resp', from, to: 'a', term: 2, reject: !granted })
      assert.equal(r.role, role)
    })
  }

  it('a replica votes at most once per term, first come first served, and the vote survives a restart', function () {
    const net = new Net(ids)
    const c = net.nodes.get('c')
    assert.ok(c != null)
    c.raft.step({ type: 'vote', from: 'a', to: 'c', term: 2, lastIndex: 1, lastTerm: 1 })
    c.raft.step({ type: 'vote', from: 'b', to: 'c', term: 2, lastIndex: 1, lastTerm: 1 })
    c.raft.step({ type: 'vote', from: 'a', to: 'c', term: 2, lastIndex: 1, lastTerm: 1 })
    const msgs = net.collect()
    assert.deepEqual(msgs.map(m => m.type === 'vote-resp' ? [m.to, m.reject] : []), [['a', false], ['b', true], ['a', false]])
    assert.equal(c.disk.vote, 'a', 'persisted with the answers')
    const again = boot('c', c.disk, config('c', mulberry32(3)))
    again.step({ type: 'vote', from: 'b', to: 'c', term: 2, lastIndex: 5, lastTerm: 2 })
    const rd = again.ready()
    assert.ok(rd.messages[0].type === 'vote-resp' && rd.messages[0].reject)
  })

  it('a candidate that hears from a leader of its term becomes its follower', function () {
    const r = lone('a')
    r.campaignNow()
    r.step({ type: 'app', from: 'b', to: 'a', term: 2, prevIndex: 1, prevTerm: 1, entries: [], commit: 1 })
    assert.equal(r.role, 'follower')
    assert.equal(r.lead, 'b')
    assert.equal(r.term, 2)
  })

  it('only one leader is elected per term', function () {
    for (let seed = 1; seed <= 20; seed++) {
      const net = new Net(['a', 'b', 'c', 'd', 'e'], {}, seed)
      // everyone's timer runs out at once: split votes are possible, two leaders in one term are not
      for (const id of net.nodes.keys()) net.node(id).campaignNow()
      net.settle()
      const leaders = [...net.nodes.values()].filter(n => n.raft.role === 'leader')
      const byTerm = new Map<number, number>()
      for (const l of leaders) byTerm.set(l.raft.term, (byTerm.get(l.raft.term) ?? 0) + 1)
      for (const count of byTerm.values()) assert.equal(count, 1)
    }
  })
})

describe('raft core: 5.3 log replication', function () {
  it('the leader appends a proposal, replicates it, commits it on a majority and then followers apply it', function () {
    const net = new Net(ids)
    net.elect('a')
    net.propose('a', 'x')
    for (const id of ids) {
      const n = net.nodes.get(id)
      assert.ok(n != null)
      assert.deepEqual(n.machine.values, ['x'], `${id} applied the entry`)
      assert.equal(n.disk.entries.at(-1)?.op.kind, 'data', `${id} persisted it`)
    }
  })

  it('an entry counts as committed only once a majority holds it', function () {
    const net = new Net(['a', 'b', 'c', 'd', 'e'])
    net.elect('a')
    net.drop = m => m.type === 'app' && (m.to === 'c' || m.to === 'd' || m.to === 'e')
    net.propose('a', 'x')
    assert.equal(net.node('a').commit, 2, 'a and b hold it: two of five is no majority')
    net.drop = m => m.type === 'app' && (m.to === 'd' || m.to === 'e')
    net.tick('a')
    net.settle()
    assert.equal(net.node('a').commit, 3, 'a, b and c hold it')
  })

  it('the leader never sends a follower a commit index beyond what it holds', function () {
    const net = new Net(ids)
    net.elect('a')
    net.drop = m => m.to === 'c'
    net.propose('a', 'x')
    net.drop = m => m.to === 'c' && m.type === 'app'
    net.tick('a')
    const beats = net.settle().filter(m => m.type === 'heartbeat' && m.to === 'c')
    assert.ok(beats.length > 0)
    // c holds the leader's noop (index 2), not the entry at 3 that the others committed
    for (const b of beats) assert.ok(b.type === 'heartbeat' && b.commit === 2)
    assert.equal(net.node('a').commit, 3)
    assert.equal(net.node('c').commit, 2)
  })

  it('a follower refuses an append whose previous entry it does not hold (the consistency check)', function () {
    const r = lone('b')
    r.step({ type: 'app', from: 'a', to: 'b', term: 2, prevIndex: 5, prevTerm: 2, entries: [data('x')(6, 2)], commit: 6 })
    const rd = r.ready()
    assert.equal(r.lastIndex, 1)
    const resp = rd.messages[0]
    assert.ok(resp.type === 'app-resp' && resp.reject && resp.hint === 1)
  })

  // Figure 7: followers (a)-(f) against a leader whose log has terms 1 1 1 4 4 5 5 6 6 6 at 1-10
  const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
  const figure7: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]
  }
  const logOf = (terms: number[]): Entry[] => terms.map((term, i) => ({ index: i + 1, term, op: { kind: 'data', value: `${i + 1}@${term}` } }))
  for (const [name, terms] of Object.entries(figure7)) {
    it(`figure 7 (${name}): the leader brings the follower's log to match its own`, function () {
      const peers = ['L', 'F', 'x']
      const disk = (t: number[], term: number) => ({ ...newDisk(members(...peers)), term, commit: 1, snapshot: { index: 0, term: 0, members: members(...peers) }, entries: logOf(t), state: { applied: 1, values: ['1@1'], used: {}, grants: {} } })
      const net = new Net(peers)
      const random = mulberry32(9)
      const set = (id: string, t: number[], term: number): void => {
        const n = net.nodes.get(id)
        assert.ok(n != null)
        n.disk = disk(t, term)
        n.machine = structuredClone(n.disk.state)
        n.raft = boot(id, n.disk, config(id, random))
      }
      set('L', leaderTerms, 7)
      set('F', terms, 7)
      set('x', leaderTerms, 7)
      net.nodes.get('x')!.up = false
      // only L can win: its last term (6) and length beat F's in every case but (d), where F has
      // term 7 entries; there L wins with x's vote and F's log is still replaced
      net.node('L').campaignNow()
      net.nodes.get('x')!.up = true
      net.settle()
      assert.equal(net.node('L').role, 'leader')
      net.propose('L', 'new')
      const want = net.nodes.get('L')!.disk.entries.map(e => `${e.index}/${e.term}`)
      const got = net.nodes.get('F')!.disk.entries.map(e => `${e.index}/${e.term}`)
      assert.deepEqual(got, want)
      assert.deepEqual(net.nodes.get('F')!.machine.values, net.nodes.get('L')!.machine.values)
    })
  }
})

describe('raft core: 5.4 safety', function () {
  const upToDate: Array<[string, number, number, boolean]> = [
    ['a later last term', 3, 1, true],
    ['the same last term and a longer log', 2, 4, true],
    ['the same last term and the same length', 2, 3, true],
    ['the same last term and a shorter log', 2, 2, false],
    ['an earlier last term, however long', 1, 50, false]
  ]
  for (const [what, lastTerm, lastIndex, granted] of upToDate) {
    it(`5.4.1: a vote goes to a candidate with ${what} (${granted ? 'granted' : 'refused'})`, function () {
      const disk = { ...newDisk(members(...ids)), term: 2, entries: [{ index: 2, term: 2, op: { kind: 'noop' } }, { index: 3, term: 2, op: { kind: 'noop' } }] as Entry[] }
      const r = boot('b', disk, config('b', mulberry32(1)))
      r.step({ type: 'vote', from: 'a', to: 'b', term: 4, lastIndex, lastTerm })
      const resp = r.ready().messages[0]
      assert.ok(resp.type === 'vote-resp')
      assert.equal(resp.reject, !granted)
    })
  }

  it('5.4.2 (figure 8): an old term\'s entry is not committed by counting replicas, only behind one of the current term', function () {
    // one entry per append, so s1 can ship its term 2 entry without its term 4 noop behind it
    const net = new Net(['s1', 's2', 's3', 's4', 's5'], { maxEntriesPerMessage: 1 })
    net.elect('s1')
    // (a) s1 leads term 2 and replicates index 3 to s2 only
    net.drop = m => m.type === 'app' && m.to !== 's2'
    net.propose('s1', 'two')
    net.drop = () => false
    net.nodes.get('s1')!.up = false
    // (b) s5 leads term 3 with votes of s3, s4 and appends a different index 3
    net.drop = m => m.to === 's1' || m.to === 's2' || (m.from === 's5' && m.type === 'app')
    net.node('s5').campaignNow()
    net.settle()
    assert.equal(net.node('s5').role, 'leader')
    net.node('s5').propose(data('three'))
    net.settle()
    net.nodes.get('s5')!.up = false
    // (c) s1 comes back, leads term 4 and ships its term 2 entry to s3: it is now on a majority...
    net.restart('s1', { maxEntriesPerMessage: 1 })
    // (acknowledgements of s1's own term 4 entry are lost, so only the old entry can be counted)
    net.drop = m => m.to === 's5' || (m.type === 'app-resp' && m.index >= 4)
    net.node('s1').campaignNow() // term 3: s3 and s4 voted for s5 in it
    net.settle()
    net.node('s1').campaignNow()
    net.settle()
    assert.equal(net.node('s1').role, 'leader')
    assert.equal(net.node('s1').term, 4)
    const held = ['s1', 's2', 's3'].filter(id => net.node(id).termAt(3) === 2)
    assert.equal(held.length, 3, 'the term 2 entry is on a majority')
    // ...and still not committed, because no entry of s1's own term is
    assert.ok(net.node('s1').commit < 3, `commit ${net.node('s1').commit}`)
  })

  it('5.4.3: a new leader holds every committed entry; the state machines agree', function () {
    const net = new Net(['a', 'b', 'c', 'd', 'e'])
    net.elect('a')
    for (let i = 0; i < 5; i++) net.propose('a', `v${i}`)
    net.nodes.get('a')!.up = false
    net.elect('c')
    assert.equal(net.node('c').role, 'leader')
    for (let i = 0; i < 5; i++) assert.equal(net.node('c').entry(i + 3)?.op.kind, 'data')
    net.propose('c', 'after')
    const values = ['b', 'c', 'd', 'e'].map(id => net.nodes.get(id)!.machine.values.join())
    assert.equal(new Set(values).size, 1)
    assert.equal(values[0], 'v0,v1,v2,v3,v4,after')
  })
})

describe('raft core: persistence before sending', function () {
  it('a follower\'s acknowledgement comes in the same Ready as the entries it acknowledges', function () {
    const r = lone('b')
    r.step({ type: 'app', from: 'a', to: 'b', term: 2, prevIndex: 1, prevTerm: 1, entries: [data('x')(2, 2)], commit: 1 })
    const rd = r.ready()
    assert.deepEqual(rd.entries.map(e => e.index), [2])
    assert.deepEqual(rd.hardState, { term: 2, vote: null, commit: 1 })
    assert.ok(rd.messages[0].type === 'app-resp' && rd.messages[0].index === 2)
    assert.equal(r.hasReady(), false)
  })

  it('committed entries are handed out once each, in order', function () {
    const net = new Net(ids)
    net.elect('a')
    const applied: number[] = []
    for (let i = 0; i < 6; i++) {
      net.node('a').propose(data(`v${i}`))
      for (const n of net.nodes.values()) { if (n.raft.hasReady()) { const rd = n.raft.ready(); if (n.id === 'a') applied.push(...rd.committed.map(e => e.index)); n.raft.ready() } }
    }
    net.settle()
    assert.deepEqual(applied, [...new Set(applied)].sort((x, y) => x - y))
  })
})

describe('raft core: pre-vote and check-quorum (thesis 9.6)', function () {
  /** a leads; c is cut off for 60 rounds of ticks, then comes back for `back` rounds. */
  const cutOffAndBack = (over: { preVote: boolean, checkQuorum: boolean }, back: number): { net: Net, term: number, cutTerm: number, cutRole: string } => {
    const net = new Net(ids, over)
    net.elect('a')
    const term = net.node('a').term
    net.drop = m => m.to === 'c' || m.from === 'c'
    net.rounds(60)
    const cut = { term: net.node('c').term, role: net.node('c').role }
    net.drop = () => false
    net.rounds(back)
    return { net, term, cutTerm: cut.term, cutRole: cut.role }
  }

  it('a replica back from a partition does not disturb a healthy leader, and its term stays', function () {
    const { net, term, cutTerm, cutRole } = cutOffAndBack({ preVote: true, checkQuorum: true }, 5)
    assert.equal(cutTerm, term, 'pre-votes never raised c\'s term')
    assert.notEqual(cutRole, 'leader')
    assert.equal(net.node('a').role, 'leader')
    assert.equal(net.node('a').term, term)
    assert.equal(net.node('c').lead, 'a')
  })

  it('without pre-vote, the same replica would depose the leader (the test can tell the difference)', function () {
    const { net, term } = cutOffAndBack({ preVote: false, checkQuorum: false }, 40)
    assert.ok(net.node('a').term > term, 'the leader moved to a new term')
  })

  it('a pre-vote is refused by replicas that heard from the leader within the election timeout', function () {
    const net = new Net(ids, { preVote: true, checkQuorum: true })
    net.elect('a')
    net.node('c').step({ type: 'pre-vote', from: 'b', to: 'c', term: net.node('c').term + 1, lastIndex: 99, lastTerm: 99 })
    assert.deepEqual(net.collect().filter(m => m.to === 'b'), [], 'ignored in the leader\'s lease')
  })

  it('a leader that cannot hear a majority steps down after an election timeout', function () {
    const net = new Net(ids, { preVote: true, checkQuorum: true })
    net.elect('a')
    net.drop = m => m.from !== 'a' || m.to === 'a'
    for (let i = 0; i < 25; i++) { net.tick('a'); net.settle() }
    assert.equal(net.node('a').role, 'follower')
    assert.throws(() => net.node('a').propose(data('late')), NotLeaderError)
  })

  it('a leader that hears a majority stays', function () {
    const net = new Net(['a', 'b', 'c', 'd', 'e'], { preVote: true, checkQuorum: true })
    net.elect('a')
    net.drop = m => m.to === 'e' || m.from === 'e' || m.to === 'd' || m.from === 'd'
    for (let i = 0; i < 50; i++) { net.tick('a'); net.settle() }
    assert.equal(net.node('a').role, 'leader')
  })
})

describe('raft core: membership changes, one replica at a time (thesis 4)', function () {
  const change = (set: Member[]) => (index: number, term: number): Entry => ({ index, term, op: { kind: 'members', members: set } })

  it('a new replica is added through the log, catches up and counts toward the majority', function () {
    const net = new Net(['a', 'b', 'c'])
    const d = net.addEmpty('d')
    for (let i = 0; i < 40; i++) d.raft.tick()
    assert.equal(d.raft.role, 'follower')
    net.elect('a')
    net.propose('a', 'before')
    net.node('a').propose(change(members('a', 'b', 'c', 'd')))
    net.settle()
    // d received the whole history through a snapshot (its log began after index 1)
    assert.deepEqual(d.machine.values, ['before'])
    assert.deepEqual(net.node('a').config().map(m => m.peer), ['a', 'b', 'c', 'd'])
    // with four members, three must hold an entry: a and d alone cannot commit
    net.drop = m => m.to === 'b' || m.to === 'c'
    net.propose('a', 'x')
    assert.deepEqual(d.machine.values, ['before'])
    net.drop = m => m.to === 'c'
    net.tick('a')
    net.settle()
    assert.deepEqual(d.machine.values, ['before', 'x'])
  })

  it('refuses a change of two replicas at once, and a second change before the first commits', function () {
    const net = new Net(ids)
    net.elect('a')
    assert.throws(() => net.node('a').propose(change(members('a', 'b', 'c', 'd', 'e'))), ConfigChangeError)
    net.drop = m => m.type === 'app'
    net.node('a').propose(change(members('a', 'b', 'c', 'd')))
    net.settle()
    assert.throws(() => net.node('a').propose(change(members('a', 'b', 'c'))), /under way/)
  })

  it('a new leader cannot change membership before an entry of its own term commits', function () {
    const net = new Net(ids)
    net.drop = m => m.type === 'app' || m.type === 'heartbeat'
    net.elect('a')
    assert.equal(net.node('a').role, 'leader')
    assert.throws(() => net.node('a').propose(change(members('a', 'b'))), /not yet committed an entry of its term/)
  })

  it('a removed replica stops counting at once; a leader that removed itself steps down once that commits', function () {
    const net = new Net(ids)
    net.elect('a')
    net.node('a').propose(change(members('b', 'c')))
    net.settle()
    assert.equal(net.node('a').role, 'follower')
    net.rounds(40)
    const leader = net.leader()
    assert.ok(leader === 'b' || leader === 'c', `leader ${leader}`)
    net.propose(leader, 'without a')
    assert.deepEqual(net.nodes.get('b')!.machine.values, ['without a'])
    // a never stands again: it is not a member
    assert.notEqual(net.node('a').role, 'candidate')
  })

  it('a removed replica cannot disturb the set: its ballots are ignored within the leader\'s lease', function () {
    const net = new Net(ids, { preVote: true, checkQuorum: true })
    net.elect('a')
    net.node('a').propose(change(members('a', 'b')))
    net.settle()
    const term = net.node('a').term
    // c, which may not know it was removed, stands over and over
    net.node('c').step({ type: 'vote', from: 'z', to: 'c', term: 1, lastIndex: 0, lastTerm: 0 })
    for (let i = 0; i < 5; i++) {
      net.node('b').step({ type: 'vote', from: 'c', to: 'b', term: term + 1 + i, lastIndex: 99, lastTerm: 99 })
      net.node('b').step({ type: 'pre-vote', from: 'c', to: 'b', term: term + 1 + i, lastIndex: 99, lastTerm: 99 })
    }
    assert.deepEqual(net.collect().filter(m => m.from === 'b' && m.to === 'c'), [])
    assert.equal(net.node('b').term, term)
    assert.equal(net.node('a').role, 'leader')
  })

  it('an empty new replica votes, so a set that just added it can still elect', function () {
    const net = new Net(ids)
    const d = net.addEmpty('d')
    d.raft.step({ type: 'vote', from: 'a', to: 'd', term: 3, lastIndex: 5, lastTerm: 2 })
    const resp = d.raft.ready().messages[0]
    assert.ok(resp.type === 'vote-resp' && !resp.reject)
  })
})

describe('raft core: log compaction and snapshots (thesis 5)', function () {
  it('a follower behind the compacted log receives a snapshot, installs it and then follows the log', function () {
    const net = new Net(ids)
    net.elect('a')
    net.nodes.get('c')!.up = false
    for (let i = 0; i < 10; i++) net.propose('a', `v${i}`)
    for (const id of ['a', 'b']) {
      const n = net.nodes.get(id)!
      n.raft.compact(n.machine.applied)
      n.disk.snapshot = n.raft.snapshotMeta
      n.disk.entries = n.disk.entries.filter(e => e.index > n.raft.snapshotMeta.index)
    }
    assert.equal(net.node('a').firstIndex, 13)
    net.nodes.get('c')!.up = true
    net.tick('a')
    const sent = net.settle()
    assert.ok(sent.some(m => m.type === 'snap' && m.to === 'c'))
    net.propose('a', 'after')
    assert.deepEqual(net.nodes.get('c')!.machine.values, [...Array.from({ length: 10 }, (_, i) => `v${i}`), 'after'])
    assert.deepEqual(net.nodes.get('c')!.disk.entries.map(e => e.index), [13])
  })

  it('a snapshot at or below the commit index changes nothing', function () {
    const r = lone('b')
    r.step({ type: 'snap', from: 'a', to: 'b', term: 2, snapshot: { index: 1, term: 1, members: members(...ids) } })
    const rd = r.ready()
    assert.equal(rd.snapshot, undefined)
    assert.ok(rd.messages[0].type === 'app-resp' && rd.messages[0].index === 1)
  })

  it('compaction past the applied index is refused', function () {
    const net = new Net(ids)
    net.elect('a')
    net.node('a').propose(data('x'))
    assert.throws(() => net.node('a').compact(3), /only 2 is applied/)
  })
})
