import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Multiaddr } from '@multiformats/multiaddr'
import { AccessDeniedError, InvalidArgumentError, LimitError, StorError, UnavailableError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { FAT_SYNC_PROTOCOL, MAX_FAT_MESSAGE } from '../../protocol/ids.ts'
import * as S from '../../protocol/fat-sync.ts'
import { call, serve, type Target } from '../../protocol/rpc.ts'
import { fullAddrs, type StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import { Serial } from '../../serial.ts'
import { RaftLog } from './raft-log.ts'

export interface ReplicationOptions {
  node: StorNode
  db: DB
  log: Logger
  /** Other FAT replicas to join through when this one has no log yet; none founds a new network. */
  join: Multiaddr[]
  /** Replicas must prove they know it to join (HMAC of their peer id); empty means any FAT may join. */
  joinSecret?: string
  /**
   * Whether an empty log without `join` may found a new network. A replica that had an identity
   * but lost its log must not: vendors still trust its peer id, and its table is empty.
   */
  mayFound: boolean
  /** The index the state machine has applied already. */
  applied: number
  /** Applies one committed entry to the state machine; called in index order, once per entry. */
  apply: (entry: S.Entry) => Promise<void>
  /** A digest of the state machine, for status. */
  digest: () => Promise<string>
  electionMs?: [number, number]
  heartbeatMs?: number
}

export interface ReplicaState { term: number, leader: string, applied: number, commit: number, lastIndex: number }

export interface Replication {
  /** Appends an op, waits until a majority holds it and it is applied here. Leader only. */
  propose: (op: S.Op) => Promise<void>
  /**
   * Resolves when this replica leads and its table holds everything committed before its term,
   * so writes can be planned from it; throws UnavailableError if that does not happen soon.
   */
  ready: () => Promise<void>
  /** Waits until this replica has applied what the leader had committed (a read barrier). */
  caughtUp: () => Promise<void>
  isLeader: () => boolean
  leader: () => S.Member | undefined
  members: () => S.Member[]
  state: () => ReplicaState
  stop: () => Promise<void>
}

const ENTRIES_PER_APPEND = 500
const BYTES_PER_APPEND = 4 * 1024 * 1024
const PROPOSE_TIMEOUT_MS = 8000

export function joinProof (secret: string, peer: string): string {
  return createHmac('sha256', secret).update(`stor:join:${peer}`).digest('hex')
}

/**
 * Keeps the FAT replicas' op logs identical (Raft): one replica, elected by a majority for a term,
 * orders writes; an op counts once a majority holds it, so a replica cut off from the majority
 * can never commit, and so never grants, while the others elect a new leader in a higher term.
 */
export async function createReplication (opts: ReplicationOptions): Promise<Replication> {
  const { node, log } = opts
  const self = node.peerId.toString()
  const raft = new RaftLog(opts.db)
  await raft.load()
  const [electMin, electMax] = opts.electionMs ?? [1500, 3000]
  const beatMs = opts.heartbeatMs ?? 250
  const serial = new Serial()
  let role: 'follower' | 'candidate' | 'leader' = 'follower'
  let leaderId = ''
  let commit = opts.applied
  let applied = opts.applied
  let heardFromLeader = 0
  let stopped = false
  let electionTimer: NodeJS.Timeout | undefined
  let beatTimer: NodeJS.Timeout | undefined
  const nextIndex = new Map<string, number>()
  const matchIndex = new Map<string, number>()
  const inFlight = new Set<string>()
  const waiting = new Map<number, { term: number, resolve: () => void, reject: (e: Error) => void }>()
  /** Peers trusted to lead us before our log names any members: the replicas we join through. */
  const joinLeaders = new Set<string>()
  /** The leader's first entry of its term: it plans writes only once this is applied. */
  let readyIndex = Number.POSITIVE_INFINITY
  /** When a majority last answered the leader, and when each follower last did. */
  let lastQuorum = Date.now()
  const acked = new Map<string, number>()

  const members = (): S.Member[] => raft.members
  const isMember = (peer: string): boolean => raft.members.some(m => m.peer === peer)
  const others = (): S.Member[] => raft.members.filter(m => m.peer !== self)
  const majority = (): number => Math.floor(raft.members.length / 2) + 1
  const target = (m: S.Member): Target => ({ peer: m.peer, addrs: m.addrs })
  const rpc = async <C extends Parameters<typeof call>[4][string]>(m: S.Member, msg: object, expected: Record<string, C>, timeoutMs = 2000): Promise<any> =>
    await call(node, target(m), FAT_SYNC_PROTOCOL, msg, expected, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(timeoutMs) })

  const resetElectionTimer = (): void => {
    clearTimeout(electionTimer)
    if (stopped) return
    electionTimer = setTimeout(() => { void serial.run(startElection) }, electMin + Math.random() * (electMax - electMin))
  }

  const becomeFollower = async (term: number, leader: string): Promise<void> => {
    if (term > raft.term) await raft.setVote(term, null)
    if (role === 'leader') log('replica %s steps down in term %d', self, raft.term)
    role = 'follower'
    leaderId = leader
    clearInterval(beatTimer)
    for (const [index, w] of waiting) { w.reject(new UnavailableError('this FAT replica lost the lead before the change was committed; try again')); waiting.delete(index) }
    resetElectionTimer()
  }

  // ---- applying committed entries, in order, once each

  const applyCommitted = async (): Promise<void> => {
    while (applied < commit) {
      const entry = await raft.get(applied + 1)
      if (entry == null) break
      await opts.apply(entry)
      applied = entry.index
      const w = waiting.get(entry.index)
      if (w != null) {
        waiting.delete(entry.index)
        if (w.term === entry.term) w.resolve()
        else w.reject(new UnavailableError('the change was replaced by another replica\'s; try again'))
      }
    }
  }

  // ---- elections

  /** Runs in the queue only to change state: the ballots go out after, so replicas can answer each other. */
  const startElection = async (): Promise<void> => {
    if (stopped || role === 'leader' || !isMember(self)) { resetElectionTimer(); return }
    role = 'candidate'
    await raft.setVote(raft.term + 1, self)
    const term = raft.term
    log('replica %s stands for election in term %d', self, term)
    resetElectionTimer()
    let votes = 1
    const ballot = { t: 'vote', term, lastIndex: raft.lastIndex, lastTerm: raft.lastTerm }
    if (votes >= majority()) { await becomeLeader(); return }
    for (const m of others()) {
      void rpc(m, ballot, { 'vote-reply': S.VoteReply }).then(async r => {
        await serial.run(async () => {
          if (r.term > raft.term) { await becomeFollower(r.term, ''); return }
          if (!r.granted || role !== 'candidate' || raft.term !== term) return
          if (++votes >= majority()) await becomeLeader()
        })
      }, () => {})
    }
  }

  const becomeLeader = async (): Promise<void> => {
    role = 'leader'
    leaderId = self
    lastQuorum = Date.now()
    clearTimeout(electionTimer)
    for (const m of others()) { nextIndex.set(m.peer, raft.lastIndex + 1); matchIndex.set(m.peer, 0) }
    log('replica %s leads term %d', self, raft.term)
    // an entry of its own term lets the new leader commit what earlier leaders left uncommitted;
    // until it is applied, the table it would plan from may lack what they committed
    readyIndex = await appendLocal({ op: 'noop' })
    clearInterval(beatTimer)
    beatTimer = setInterval(beat, beatMs)
    replicateAll()
  }

  /** The leader's beat: ship the log, and step down when no majority has answered for a while. */
  const beat = (): void => {
    if (role !== 'leader') return
    if (others().length > 0 && Date.now() - lastQuorum > 2 * electMax) {
      void serial.run(async () => { if (role === 'leader') await becomeFollower(raft.term, '') })
      return
    }
    replicateAll()
  }

  // ---- the leader's side of log shipping

  const appendLocal = async (op: S.Op): Promise<number> => {
    const entry: S.Entry = { index: raft.lastIndex + 1, term: raft.term, at: Date.now(), op }
    await raft.append([entry])
    for (const m of others()) if (!nextIndex.has(m.peer)) { nextIndex.set(m.peer, entry.index); matchIndex.set(m.peer, 0) }
    await advanceCommit()
    return entry.index
  }

  const replicateAll = (): void => {
    for (const m of others()) void replicateTo(m)
  }


  const replicateTo = async (m: S.Member): Promise<void> => {
    if (role !== 'leader' || inFlight.has(m.peer)) return
    inFlight.add(m.peer)
    try {
      const next = nextIndex.get(m.peer) ?? raft.lastIndex + 1
      const prevIndex = next - 1
      const prevTerm = await raft.termAt(prevIndex)
      const entries = await raft.slice(next, ENTRIES_PER_APPEND, BYTES_PER_APPEND)
      const term = raft.term
      const r = await rpc(m, { t: 'append', term, prevIndex, prevTerm, entries, commit }, { 'append-reply': S.AppendReply }, 5000)
      await serial.run(async () => {
        if (r.term > raft.term) { await becomeFollower(r.term, ''); return }
        if (role !== 'leader' || raft.term !== term) return
        acked.set(m.peer, Date.now())
        if (r.success) {
          const match = prevIndex + entries.length
          matchIndex.set(m.peer, Math.max(matchIndex.get(m.peer) ?? 0, match))
          nextIndex.set(m.peer, match + 1)
          await advanceCommit()
        } else {
          nextIndex.set(m.peer, Math.max(1, Math.min(next - 1, r.lastIndex + 1)))
        }
      })
      if (r.success && (nextIndex.get(m.peer) ?? 0) <= raft.lastIndex) setImmediate(() => { void replicateTo(m) })
    } catch (err: any) {
      log('append to %s: %s', m.peer, err.message)
    } finally {
      inFlight.delete(m.peer)
    }
  }

  const advanceCommit = async (): Promise<void> => {
    if (role !== 'leader') return
    const now = Date.now()
    const reached = others().filter(m => now - (acked.get(m.peer) ?? 0) < electMax).length + 1
    if (reached >= majority()) lastQuorum = now
    for (let n = raft.lastIndex; n > commit; n--) {
      const holders = 1 + others().filter(m => (matchIndex.get(m.peer) ?? 0) >= n).length
      if (holders >= majority() && await raft.termAt(n) === raft.term) {
        commit = n
        break
      }
    }
    await applyCommitted()
  }

  // ---- the follower's side

  const onAppend = async (msg: S.Message<typeof S.Append>, from: string): Promise<object> => {
    if (!isMember(from) && !joinLeaders.has(from)) throw new AccessDeniedError(`${from} is not a FAT replica of this network`)
    if (msg.term < raft.term) return { t: 'append-reply', term: raft.term, success: false, lastIndex: raft.lastIndex }
    if (msg.term > raft.term || role !== 'follower' || leaderId !== from) await becomeFollower(msg.term, from)
    heardFromLeader = Date.now()
    resetElectionTimer()
    if (msg.prevIndex > raft.lastIndex || await raft.termAt(msg.prevIndex) !== msg.prevTerm) {
      return { t: 'append-reply', term: raft.term, success: false, lastIndex: Math.min(raft.lastIndex, msg.prevIndex - 1) }
    }
    const fresh: S.Entry[] = []
    for (const [i, e] of msg.entries.entries()) {
      if (e.index !== msg.prevIndex + 1 + i) throw new AccessDeniedError('append entries are not consecutive')
      if (fresh.length === 0 && e.index <= raft.lastIndex && await raft.termAt(e.index) === e.term) continue
      if (e.index <= commit) throw new AccessDeniedError(`entry ${e.index} conflicts with a committed entry`)
      fresh.push(e)
    }
    await raft.append(fresh)
    const lastNew = msg.prevIndex + msg.entries.length
    if (msg.commit > commit) commit = Math.min(msg.commit, lastNew)
    await applyCommitted()
    return { t: 'append-reply', term: raft.term, success: true, lastIndex: raft.lastIndex }
  }

  const onVote = async (msg: S.Message<typeof S.Vote>, from: string): Promise<object> => {
    if (!isMember(from)) throw new AccessDeniedError(`${from} is not a FAT replica of this network`)
    // a replica that hears from a live leader ignores candidates, so a returning replica cannot disrupt it
    const leaderAlive = role === 'leader' || (leaderId !== '' && Date.now() - heardFromLeader < electMin)
    if (msg.term < raft.term || leaderAlive) return { t: 'vote-reply', term: raft.term, granted: false }
    if (msg.term > raft.term) await becomeFollower(msg.term, '')
    const upToDate = msg.lastTerm > raft.lastTerm || (msg.lastTerm === raft.lastTerm && msg.lastIndex >= raft.lastIndex)
    const granted = upToDate && (raft.votedFor == null || raft.votedFor === from)
    if (granted) { await raft.setVote(raft.term, from); resetElectionTimer() }
    return { t: 'vote-reply', term: raft.term, granted }
  }

  const onJoin = async (msg: S.Message<typeof S.Join>, from: string): Promise<object> => {
    if (opts.joinSecret != null && opts.joinSecret !== '') {
      const expected = Buffer.from(joinProof(opts.joinSecret, from), 'hex')
      const given = Buffer.from(msg.proof, 'hex')
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AccessDeniedError('the join proof is wrong: start the replica with this network\'s --join-secret')
    }
    if (role === 'leader' && !isMember(from)) {
      if (raft.members.length >= S.MAX_MEMBERS) throw new LimitError(`the replica set is full (${S.MAX_MEMBERS} replicas)`)
      await propose({ op: 'members', members: [...raft.members, { peer: from, addrs: msg.addrs }] })
      log('replica %s joined the replica set', from)
    }
    return { t: 'join-reply', leader: leaderId, members: raft.members }
  }

  // ---- proposals

  const propose = async (op: S.Op): Promise<void> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new UnavailableError('a majority of the FAT replicas did not confirm the change in time; try again')) }, PROPOSE_TIMEOUT_MS)
    })
    try {
      // appending is serialised; waiting for the majority is not, so proposals pipeline
      const { done } = await serial.run(async () => {
        if (role !== 'leader') throw new UnavailableError('this FAT replica does not order writes now')
        if (others().length > 0 && Date.now() - lastQuorum > electMax) throw new UnavailableError('this FAT replica cannot reach a majority of the replicas; it grants nothing until it can')
        const term = raft.term
        const index = await appendLocal(op)
        const done = new Promise<void>((resolve, reject) => {
          if (applied >= index) resolve()
          else waiting.set(index, { term, resolve, reject })
        })
        done.catch(() => {})
        replicateAll()
        return { done }
      })
      await Promise.race([done, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  await serve(node, FAT_SYNC_PROTOCOL, { checks: S.SYNC_REQUESTS, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 64, timeoutMs: 10_000, log, ratePerSecond: 2000 }, async ({ msg, remotePeer }) => {
    switch (msg.t) {
      case 'append': return await serial.run(async () => await onAppend(msg, remotePeer))
      case 'vote': return await serial.run(async () => await onVote(msg, remotePeer))
      // a join waits for the new member list to commit, which needs the queue: it must not hold it
      case 'join': return await onJoin(msg, remotePeer)
      case 'probe':
        if (!isMember(remotePeer)) throw new AccessDeniedError(`${remotePeer} is not a FAT replica of this network`)
        return { t: 'probe-reply', term: raft.term, leader: leaderId, applied, commit, lastIndex: raft.lastIndex, digest: msg.digest ? await opts.digest() : '' }
    }
    throw new StorError('unexpected request')
  })

  // ---- starting: found a network, rejoin our own, or join through others

  if (raft.lastIndex === 0 && opts.join.length === 0 && !opts.mayFound) {
    throw new InvalidArgumentError('--bootstrap: this FAT replica\'s identity exists but its table is gone; start it with --bootstrap naming a running replica to rejoin, or with a new --data-dir to found a new network')
  }
  if (raft.lastIndex === 0 && opts.join.length === 0) {
    await raft.setVote(1, self)
    role = 'leader'
    leaderId = self
    await raft.append([{ index: 1, term: 1, at: Date.now(), op: { op: 'members', members: [{ peer: self, addrs: fullAddrs(node) }] } }])
    commit = 1
    readyIndex = 1
    await applyCommitted()
    beatTimer = setInterval(beat, beatMs)
    log('replica %s founds a new FAT network', self)
  } else if (raft.lastIndex === 0) {
    for (const p of opts.join) {
      const id = p.getComponents().find(c => c.name === 'p2p')?.value
      if (id != null) joinLeaders.add(id)
    }
    await joinThrough(opts.join)
    resetElectionTimer()
  } else {
    resetElectionTimer()
  }

  async function joinThrough (peers: Multiaddr[]): Promise<void> {
    const proof = opts.joinSecret != null && opts.joinSecret !== '' ? joinProof(opts.joinSecret, self) : ''
    const deadline = Date.now() + 60_000
    let lastError = ''
    const tried: Target[] = [...peers]
    while (Date.now() < deadline) {
      for (const p of tried) {
        try {
          const r = await call(node, p, FAT_SYNC_PROTOCOL, { t: 'join', addrs: fullAddrs(node), proof }, { 'join-reply': S.JoinReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(5000) })
          for (const m of r.members) joinLeaders.add(m.peer)
          if (r.members.some(m => m.peer === self)) return
          const leader = r.members.find(m => m.peer === r.leader)
          if (leader != null && !tried.some(t => 'peer' in t && t.peer === leader.peer)) tried.unshift(target(leader))
        } catch (err: any) {
          if (err instanceof AccessDeniedError) throw err
          lastError = err.message
        }
      }
      await new Promise(resolve => setTimeout(resolve, 300))
    }
    throw new UnavailableError(`could not join the FAT replica set: ${lastError}`)
  }

  /**
   * A read barrier: waits until this replica has applied everything the leader had committed when
   * asked, so a read here sees every write that was answered before it. Where no leader answers,
   * the read is served from what this replica holds.
   */
  const caughtUp = async (): Promise<void> => {
    if (role === 'leader') return
    const leader = raft.members.find(m => m.peer === leaderId)
    if (leader == null) return
    let leaderCommit = 0
    try {
      leaderCommit = (await rpc(leader, { t: 'probe', digest: false }, { 'probe-reply': S.ProbeReply }, 2000)).commit
    } catch { return }
    const deadline = Date.now() + 3000
    while (applied < leaderCommit && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  }

  const ready = async (): Promise<void> => {
    const deadline = Date.now() + 5000
    while (role !== 'leader' || applied < readyIndex) {
      if (role !== 'leader' || Date.now() > deadline) throw new UnavailableError('this FAT replica is not ready to order writes; try again')
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  return {
    propose,
    ready,
    caughtUp,
    isLeader: () => role === 'leader',
    leader: () => raft.members.find(m => m.peer === leaderId),
    members,
    state: () => ({ term: raft.term, leader: leaderId, applied, commit, lastIndex: raft.lastIndex }),
    async stop () {
      stopped = true
      clearTimeout(electionTimer)
      clearInterval(beatTimer)
      await node.unhandle(FAT_SYNC_PROTOCOL)
      await serial.run(async () => {})
    }
  }
}
