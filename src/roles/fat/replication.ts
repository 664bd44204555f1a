import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Multiaddr } from '@multiformats/multiaddr'
import { AccessDeniedError, InvalidArgumentError, LimitError, StorError, UnavailableError } from '../../errors.ts'
import { logger, type Logger } from '../../logger.ts'
import { encode } from '../../protocol/codec.ts'
import { FAT_SYNC_PROTOCOL, MAX_FAT_MESSAGE } from '../../protocol/ids.ts'
import * as S from '../../protocol/fat-sync.ts'
import { call, serve, type Served, type Target } from '../../protocol/rpc.ts'
import { fullAddrs, type StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import { Serial } from '../../serial.ts'
import { ConfigChangeError, NotLeaderError, Raft, type Message, type SnapshotMeta } from './raft/core.ts'
import { LogStorage } from './raft/storage.ts'
import { SnapshotInbox, readSnapshot } from './raft/snapshot.ts'
import { MAX_ENTRY_BYTES } from './commit-size.ts'
import { cutOffReason } from './cut-off.ts'

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
  /** The index the state machine has applied (it is durable: the table is written with it). */
  position: () => number
  /** Applies one committed entry to the state machine; called in index order, once per entry. */
  apply: (entry: S.Entry) => Promise<void>
  /** Reads the state machine from disk again, after a snapshot replaced it. */
  reload: () => Promise<void>
  /** The level key prefixes of the state machine: a snapshot is every record under them. */
  prefixes: readonly string[]
  /** A digest of the state machine, for status. */
  digest: () => Promise<string>
  electionMs?: [number, number]
  heartbeatMs?: number
  /** Compact the log once this many entries are applied past the last snapshot. */
  snapshotEntries?: number
  /** Told of every request served on the replica protocol (the metrics' requests per protocol). */
  onServed?: Served
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
  /**
   * Why this replica knows it is cut off, or undefined: for longer than an election it has heard
   * neither a leader nor a majority of its replica set (not while an election among reachable
   * replicas is under way). A write sent here then fails at once instead of waiting for a leader.
   */
  cutOff: () => string | undefined
  leader: () => S.Member | undefined
  members: () => S.Member[]
  state: () => ReplicaState
  /** The log's first index and the snapshot it starts after (for status and tests). */
  snapshot: () => { index: number, term: number, firstIndex: number, at?: number }
  stop: () => Promise<void>
}

/** Time arrives at the Raft core in ticks of this length. */
const TICK_MS = 100
const ENTRIES_PER_APPEND = 500
const BYTES_PER_APPEND = 4 * 1024 * 1024
/** Appends a leader sends a follower ahead of its acknowledgements. */
const MAX_INFLIGHT = 8
const PROPOSE_TIMEOUT_MS = 8000
/** Compact once this many entries are applied past the last snapshot (and the log holds at least this many bytes or entries). */
const SNAPSHOT_ENTRIES = 10_000
const SNAPSHOT_BYTES = 64 * 1024 * 1024

export function joinProof (secret: string, peer: string): string {
  return createHmac('sha256', secret).update(`stor:join:${peer}`).digest('hex')
}

/** The proof an operator gives to remove `peer` from the replica set. */
export function removeProof (secret: string, peer: string): string {
  return createHmac('sha256', secret).update(`stor:remove:${peer}`).digest('hex')
}

function sameProof (given: string, expected: string): boolean {
  const a = Buffer.from(given, 'hex')
  const b = Buffer.from(expected, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Keeps the FAT replicas' op logs identical: this is the driver around the pure Raft core
 * (./raft/core.ts). It feeds the core ticks and messages, and carries out each Ready in order:
 * install a received snapshot, persist entries and hard state (one synced batch), then send the
 * messages, then apply what is committed. So nothing is promised to another replica before it is
 * on disk here. The transport is /stor/fat-sync: one stream per Raft message, snapshots in chunks.
 */
export async function createReplication (opts: ReplicationOptions): Promise<Replication> {
  const { node, db } = opts
  const log = logger('stor:fat:raft')
  const self = node.peerId.toString()
  const storage = new LogStorage(db)
  const inbox = new SnapshotInbox(db, opts.prefixes)
  if (await inbox.recover(async meta => { await storage.reset(meta) })) {
    await opts.reload()
    log('finished installing a snapshot that a restart interrupted')
  }
  let stored = await storage.load(opts.position())

  // ---- starting: found a network, rejoin our own, or join through others
  const fresh = stored.entries.length === 0 && stored.snapshot.index === 0
  if (fresh && opts.join.length === 0 && !opts.mayFound) {
    throw new InvalidArgumentError('--bootstrap: this FAT replica\'s identity exists but its table is gone; start it with --bootstrap naming a running replica to rejoin, or with a new --data-dir to found a new network')
  }
  if (fresh && opts.join.length === 0) {
    await storage.save({ term: 1, vote: self, commit: 0 }, [{ index: 1, term: 1, at: Date.now(), op: { op: 'members', members: [{ peer: self, addrs: fullAddrs(node) }] } }])
    stored = await storage.load(opts.position())
    log('replica %s founds a new FAT network', self)
  }

  const [electMin, electMax] = opts.electionMs ?? [1500, 3000]
  const entryBytes = new WeakMap<S.Entry, number>()
  const raft = new Raft<S.Entry, S.Member>({
    id: self,
    electionTicks: Math.max(3, Math.round(electMin / TICK_MS)),
    heartbeatTicks: Math.max(1, Math.round((opts.heartbeatMs ?? 200) / TICK_MS)),
    preVote: true,
    checkQuorum: true,
    random: Math.random,
    membersOf: e => e.op.op === 'members' ? e.op.members : undefined,
    noop: (index, term) => ({ index, term, at: Date.now(), op: { op: 'noop' } }),
    sizeOf: e => {
      let n = entryBytes.get(e)
      if (n == null) { n = encode(e).byteLength; entryBytes.set(e, n) }
      return n
    },
    maxEntriesPerMessage: ENTRIES_PER_APPEND,
    maxBytesPerMessage: BYTES_PER_APPEND,
    maxInflight: MAX_INFLIGHT
  }, stored)

  const serial = new Serial()
  let applied = opts.position()
  let stopped = false
  /** A write to disk failed: this replica can no longer keep its promises, so it stops taking part. */
  let broken: Error | undefined
  const waiting = new Map<number, { term: number, resolve: () => void, reject: (e: Error) => void }>()
  /** Peers trusted to lead us before our log names any members: the replicas we join through. */
  const joinLeaders = new Map<string, string[]>()
  const sendingSnapshot = new Set<string>()
  /** When each replica was last heard: a message from it, or its acknowledgement of ours. */
  const heard = new Map<string, number>()
  /** Since when this process has been running without a pause (a start, or a stop like SIGSTOP): silence before that proves nothing. */
  let awakeSince = Date.now()
  let lastTickAt = Date.now()
  /** An election's worth of silence, at least: a healthy follower hears its leader every heartbeat. */
  const silenceMs = Math.max(electMax, 3 * (opts.heartbeatMs ?? 200))

  const members = (): S.Member[] => raft.config()
  const known = (peer: string): S.Member | undefined =>
    raft.config().find(m => m.peer === peer) ?? raft.snapshotMeta.members.find(m => m.peer === peer) ??
    (joinLeaders.has(peer) ? { peer, addrs: joinLeaders.get(peer) ?? [] } : undefined)
  const target = (peer: string): Target => ({ peer, addrs: known(peer)?.addrs ?? [] })
  const unavailable = (): Error => new UnavailableError(broken != null
    ? `this FAT replica stopped replicating after a disk error (${broken.message}); restart it`
    : 'this FAT replica does not order writes now; try again')

  // ---- carrying out a Ready: install, persist, send, apply

  const processReady = async (): Promise<void> => {
    if (broken != null || stopped) return
    try {
      while (raft.hasReady()) {
        const rd = raft.ready()
        if (rd.snapshot != null) await installSnapshot(rd.snapshot)
        await storage.save(rd.hardState, rd.entries)
        for (const m of rd.messages) send(m)
        for (const e of rd.committed) {
          await opts.apply(e)
          applied = e.index
          const w = waiting.get(e.index)
          if (w != null) {
            waiting.delete(e.index)
            if (w.term === e.term) w.resolve()
            else w.reject(new UnavailableError('the change was replaced by another replica\'s; try again'))
          }
        }
        await maybeCompact()
      }
    } catch (err: any) {
      broken = err
      log.error('replica %s stops replicating: %s', self, err.stack ?? err.message)
      for (const [index, w] of waiting) { w.reject(unavailable()); waiting.delete(index) }
    }
  }

  const installSnapshot = async (meta: SnapshotMeta<S.Member>): Promise<void> => {
    if (!inbox.has(meta)) throw new Error(`snapshot ${meta.index}/${meta.term} was accepted but is not staged`)
    const bytes = inbox.stagedBytes
    await inbox.install(meta, async m => { await storage.reset(m) })
    await opts.reload()
    applied = meta.index
    for (const [index, w] of waiting) {
      if (index <= meta.index) { w.reject(new UnavailableError('a snapshot replaced this replica\'s log; try again')); waiting.delete(index) }
    }
    log('installed a snapshot at %d (term %d, %d bytes)', meta.index, meta.term, bytes)
  }

  const maybeCompact = async (): Promise<void> => {
    const every = opts.snapshotEntries ?? SNAPSHOT_ENTRIES
    // a margin of entries stays, so a follower a little behind catches up from the log, not a snapshot
    const keep = Math.min(1000, Math.floor(every / 4))
    const upTo = applied - keep
    if (upTo <= raft.snapshotMeta.index) return
    if (applied - raft.snapshotMeta.index < every + keep && storage.bytes <= SNAPSHOT_BYTES) return
    raft.compact(upTo)
    await storage.compact(raft.snapshotMeta)
    log('compacted the log up to %d', upTo)
  }

  const step = async (m: Message<S.Entry, S.Member>): Promise<void> => {
    heard.set(m.from, Date.now())
    await serial.run(async () => {
      if (broken != null || stopped) return
      raft.step(m)
      await processReady()
    })
  }

  // ---- the transport: one stream per message, answered at once with an acknowledgement

  const send = (m: Message<S.Entry, S.Member>): void => {
    if (m.type === 'snap') { sendSnapshot(m.to, m.term); return }
    const { from: _from, to, ...wire } = m
    call(node, target(to), FAT_SYNC_PROTOCOL, { t: 'raft', msg: wire }, { 'raft-ack': S.RaftAck }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(m.type === 'app' ? 10_000 : 3000) })
      .then(() => { heard.set(to, Date.now()) }, err => {
        log('%s to %s: %s', m.type, to, err.message)
        void serial.run(async () => { raft.reportUnreachable(to); await processReady() })
      })
  }

  /** Streams the table as it is now to a follower the log no longer reaches. */
  const sendSnapshot = (to: string, term: number): void => {
    if (sendingSnapshot.has(to)) return
    sendingSnapshot.add(to)
    // called while a Ready is carried out, between applies: the table is at `applied` now
    const index = applied
    const meta = { index, term: raft.termAt(index) as number, members: raft.configAt(index) }
    const chunks = readSnapshot(db, opts.prefixes, index)
    const id = randomBytes(16).toString('hex')
    let ok = false
    void (async () => {
      let seq = 0
      let records = 0
      let bytes = 0
      let current = await chunks.next()
      while (current.done !== true) {
        const next = await chunks.next()
        const last = next.done === true ? meta : undefined
        await call(node, target(to), FAT_SYNC_PROTOCOL, { t: 'snap-chunk', term, id, seq: seq++, records: current.value, ...(last != null ? { last } : {}) }, { 'raft-ack': S.RaftAck }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(30_000) })
        records += current.value.length
        for (const r of current.value) bytes += r.k.length + r.v.length
        current = next
      }
      ok = true
      log('sent a snapshot at %d to %s: %d records, %d bytes in %d chunks', index, to, records, bytes, seq)
    })().catch(async err => {
      log('snapshot to %s: %s', to, err.message)
      await chunks.return(undefined).catch(() => {})
    }).finally(() => {
      sendingSnapshot.delete(to)
      void serial.run(async () => { raft.reportSnapshot(to, ok); await processReady() })
    })
  }

  const mayTalk = (peer: string): boolean => known(peer) != null

  // ---- joining, and a member's new address

  const onJoin = async (msg: S.Message<typeof S.Join>, from: string): Promise<object> => {
    if (opts.joinSecret != null && opts.joinSecret !== '') {
      if (!sameProof(msg.proof, joinProof(opts.joinSecret, from))) throw new AccessDeniedError('the join proof is wrong: start the replica with this network\'s --join-secret')
    }
    const current = raft.config().find(m => m.peer === from)
    const moved = current != null && msg.addrs.length > 0 && current.addrs.join() !== msg.addrs.join()
    if (raft.role === 'leader' && (current == null || moved)) {
      if (current == null && raft.config().length >= S.MAX_MEMBERS) throw new LimitError(`the replica set is full (${S.MAX_MEMBERS} replicas)`)
      const next = current == null ? [...raft.config(), { peer: from, addrs: msg.addrs }] : raft.config().map(m => m.peer === from ? { peer: from, addrs: msg.addrs } : m)
      await propose({ op: 'members', members: next })
      log(current == null ? 'replica %s joined the replica set' : 'replica %s moved to %s', from, msg.addrs.join(' '))
    }
    return { t: 'join-reply', leader: raft.lead ?? '', members: raft.config() }
  }

  /** One replica leaves the set, by an operator's request; a follower hands it to the leader. */
  const onRemove = async (msg: S.Message<typeof S.Remove>): Promise<S.Message<typeof S.Removed>> => {
    if (opts.joinSecret == null || opts.joinSecret === '') throw new AccessDeniedError('this FAT replica has no --join-secret, so it takes no removal: start the replicas with one')
    if (!sameProof(msg.proof, removeProof(opts.joinSecret, msg.peer))) throw new AccessDeniedError('the removal proof is wrong: give this network\'s --join-secret')
    if (raft.role !== 'leader') {
      const leader = raft.lead != null && raft.lead !== self ? known(raft.lead) : undefined
      if (leader == null) throw new UnavailableError('no FAT replica orders writes right now (an election is under way, or a majority is unreachable); try again')
      return await call(node, target(leader.peer), FAT_SYNC_PROTOCOL, msg, { removed: S.Removed }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(15_000) })
    }
    if (raft.isMember(msg.peer)) {
      if (raft.config().length === 1) throw new InvalidArgumentError(`${msg.peer} is the last replica of the set; a set cannot be empty`)
      await propose({ op: 'members', members: raft.config().filter(m => m.peer !== msg.peer) })
      log('replica %s was removed from the replica set', msg.peer)
    }
    return { t: 'removed', leader: raft.lead ?? '', members: raft.config() }
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
        if (broken != null || raft.role !== 'leader') throw unavailable()
        let at: { index: number, term: number }
        try {
          at = raft.propose((index, term) => {
            const entry = { index, term, at: Date.now(), op }
            if (encode(entry).byteLength > MAX_ENTRY_BYTES) throw new LimitError('this change is too large for one log entry; upload fewer files at once, or use a larger --chunk-size')
            return entry
          })
        } catch (err: any) {
          if (err instanceof NotLeaderError) throw unavailable()
          if (err instanceof ConfigChangeError) throw new UnavailableError(err.message)
          throw err
        }
        const done = new Promise<void>((resolve, reject) => { waiting.set(at.index, { term: at.term, resolve, reject }) })
        done.catch(() => {})
        await processReady()
        // wrapped: an async job that returned the promise itself would hold the queue until commit
        return { done }
      })
      await Promise.race([done, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  await serve(node, FAT_SYNC_PROTOCOL, { checks: S.SYNC_REQUESTS, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 256, timeoutMs: 30_000, log, ratePerSecond: 2000, unlimited: mayTalk, onServed: opts.onServed }, async ({ msg, remotePeer }) => {
    switch (msg.t) {
      case 'raft':
        if (!mayTalk(remotePeer)) throw new AccessDeniedError(`${remotePeer} is not a FAT replica of this network`)
        await step({ ...msg.msg, from: remotePeer, to: self } as Message<S.Entry, S.Member>)
        return { t: 'raft-ack' }
      case 'snap-chunk': {
        if (!mayTalk(remotePeer)) throw new AccessDeniedError(`${remotePeer} is not a FAT replica of this network`)
        // staged outside the Raft queue (chunks can be large), installed through it
        const meta = await inbox.receive(msg.id, msg.seq, msg.records, msg.last)
        if (meta != null) await step({ type: 'snap', from: remotePeer, to: self, term: msg.term, snapshot: meta })
        return { t: 'raft-ack' }
      }
      // a join waits for the new member list to commit, which needs the queue: it must not hold it
      case 'join': return await onJoin(msg, remotePeer)
      case 'remove': return await onRemove(msg)
      case 'probe':
        if (raft.config().every(m => m.peer !== remotePeer)) throw new AccessDeniedError(`${remotePeer} is not a FAT replica of this network`)
        return { t: 'probe-reply', ...state(), digest: msg.digest ? await opts.digest() : '' }
    }
    throw new StorError('unexpected request')
  })

  // a replica stopped by a disk error says so instead (see unavailable)
  const cutOff = (): string | undefined => broken != null ? undefined : cutOffReason({
    self,
    members: raft.config().map(m => m.peer),
    leading: raft.role === 'leader',
    member: raft.isMember(self),
    lead: raft.lead,
    heard,
    now: Date.now(),
    awakeSince,
    lastTickAt,
    silenceMs
  })

  const state = (): ReplicaState => ({ term: raft.term, leader: raft.lead ?? '', applied, commit: raft.commit, lastIndex: raft.lastIndex })

  const ticker = setInterval(() => {
    const now = Date.now()
    if (now - lastTickAt > silenceMs) awakeSince = now
    lastTickAt = now
    void serial.run(async () => {
      if (broken != null || stopped) return
      raft.tick()
      await processReady()
    })
  }, TICK_MS)

  // a replica alone in its set leads at once; a fresh one joins; one whose address changed says so
  await serial.run(async () => {
    if (raft.config().length === 1 && raft.isMember(self)) raft.campaignNow()
    await processReady()
  })
  if (fresh && opts.join.length > 0) {
    for (const p of opts.join) {
      const id = p.getComponents().find(c => c.name === 'p2p')?.value
      if (id != null) joinLeaders.set(id, [p.toString()])
    }
    await joinThrough(opts.join)
  } else if (raft.isMember(self) && raft.config().find(m => m.peer === self)?.addrs.join() !== fullAddrs(node).join()) {
    void announceMove()
  }

  async function joinThrough (peers: Multiaddr[]): Promise<void> {
    const proof = opts.joinSecret != null && opts.joinSecret !== '' ? joinProof(opts.joinSecret, self) : ''
    const deadline = Date.now() + 60_000
    let lastError = ''
    const tried: Target[] = [...peers]
    while (Date.now() < deadline && !stopped) {
      for (const p of tried) {
        try {
          const r = await call(node, p, FAT_SYNC_PROTOCOL, { t: 'join', addrs: fullAddrs(node), proof }, { 'join-reply': S.JoinReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(5000) })
          for (const m of r.members) joinLeaders.set(m.peer, m.addrs)
          if (r.members.some(m => m.peer === self)) return
          const leader = r.members.find(m => m.peer === r.leader)
          if (leader != null && !tried.some(t => 'peer' in t && t.peer === leader.peer)) tried.unshift({ peer: leader.peer, addrs: leader.addrs })
        } catch (err: any) {
          if (err instanceof AccessDeniedError) throw err
          lastError = err.message
        }
      }
      await new Promise(resolve => setTimeout(resolve, 300))
    }
    throw new UnavailableError(`could not join the FAT replica set: ${lastError}`)
  }

  /** This member listens elsewhere than the set records: ask the leader to record the new addresses. */
  async function announceMove (): Promise<void> {
    const proof = opts.joinSecret != null && opts.joinSecret !== '' ? joinProof(opts.joinSecret, self) : ''
    // only while a member: a replica removed meanwhile must not ask to be let back in
    const moved = (): boolean => { const me = raft.config().find(m => m.peer === self); return me != null && me.addrs.join() !== fullAddrs(node).join() }
    while (!stopped && moved()) {
      const to = raft.config().find(m => m.peer === raft.lead) ?? raft.config().find(m => m.peer !== self)
      if (to != null && to.peer !== self) {
        await call(node, target(to.peer), FAT_SYNC_PROTOCOL, { t: 'join', addrs: fullAddrs(node), proof }, { 'join-reply': S.JoinReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(10_000) })
          .catch(err => { log('telling %s our new address: %s', to.peer, err.message) })
      }
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
  }

  /**
   * A read barrier: waits until this replica has applied everything the leader had committed when
   * asked, so a read here sees every write that was answered before it. Where no leader answers,
   * the read is served from what this replica holds.
   */
  const caughtUp = async (): Promise<void> => {
    if (raft.role === 'leader' || raft.lead == null) return
    let leaderCommit = 0
    try {
      leaderCommit = (await call(node, target(raft.lead), FAT_SYNC_PROTOCOL, { t: 'probe', digest: false }, { 'probe-reply': S.ProbeReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(2000) })).commit
    } catch { return }
    const deadline = Date.now() + 3000
    while (applied < leaderCommit && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  }

  const ready = async (): Promise<void> => {
    const deadline = Date.now() + 5000
    while (raft.role !== 'leader' || applied < raft.readyIndex()) {
      if (raft.role !== 'leader' || Date.now() > deadline || broken != null) throw new UnavailableError('this FAT replica is not ready to order writes; try again')
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  return {
    propose,
    ready,
    caughtUp,
    isLeader: () => raft.role === 'leader' && broken == null,
    cutOff,
    leader: () => raft.lead != null ? known(raft.lead) : undefined,
    members,
    state,
    snapshot: () => ({ index: raft.snapshotMeta.index, term: raft.snapshotMeta.term, firstIndex: raft.firstIndex, at: storage.snapshotAt }),
    async stop () {
      stopped = true
      clearInterval(ticker)
      await node.unhandle(FAT_SYNC_PROTOCOL)
      await serial.run(async () => {})
    }
  }
}
