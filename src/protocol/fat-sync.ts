import { arr, bool, dict, hex, int, obj, oneOf, opt, peer, str, union, type Check, type Infer } from './schema.ts'
import { MAX_FAT_MESSAGE, MAX_REPLICAS } from './ids.ts'
import { ChunkEntry, Device, RecordsOp, FileTable, MAX_BYTES, MAX_PART_CHUNKS, MAX_CHUNK_LIST, MAX_FILES, addrs, allocationId, chunkId, fileId, time, transferFields, zone } from './messages.ts'

/**
 * The FAT replicas' own protocol (/stor/fat-sync/1.0.0): the ordered op log that every replica
 * applies, elections of the replica that orders writes, and catch-up. Only members of the
 * replica set may speak it.
 */

const t = <T extends string>(name: T): Check<T> => oneOf(name)
const term = int(0, 2 ** 48)
const index = int(0, 2 ** 48)
export const MAX_MEMBERS = 15

export const Member = obj({ peer, addrs })
export type Member = Infer<typeof Member>

/**
 * `draining` is set by a drain request: the vendor is offered to nobody and everything it holds moves.
 * `state` is what the leader logged of its health (see docs/repair.md): dead (silent for
 * --repair-after; its chunks are repaired elsewhere), back (a dead vendor heard again, until its
 * surplus copies are erased); absent, it is in service. `since` is when that state was logged.
 * `zone` is the failure domain it named (--zone): replicas of one chunk go to distinct zones.
 */
export const VendorRecord = obj({ peer, addrs, capacity: int(0, MAX_BYTES), devices: arr(Device, 256), joined: time, draining: opt(bool), zone: opt(zone), state: opt(oneOf('dead', 'back')), since: opt(time) })
export type VendorRecord = Infer<typeof VendorRecord>

export const AllocationRecord = obj({
  allocationId,
  owner: peer,
  sizes: arr(int(0, MAX_BYTES), MAX_FILES),
  fileIds: arr(fileId, MAX_FILES),
  /** indexes of the files stored inside packs */
  packed: opt(arr(int(0, MAX_FILES - 1), MAX_FILES)),
  replicas: int(1, MAX_REPLICAS),
  chunkSize: int(1, 2 ** 30),
  expires: time,
  grants: dict(peer, int(0, MAX_BYTES), 64)
})
export type AllocationRecord = Infer<typeof AllocationRecord>

export const PendingOrder = obj({ id: hex(16), vendor: peer, kind: oneOf('settle', 'erase', 'erase-chunks'), scope: hex(16), keep: arr(chunkId, 1_000_000), chunks: opt(arr(chunkId, MAX_CHUNK_LIST)), issued: time })
export type PendingOrder = Infer<typeof PendingOrder>

const orders = arr(PendingOrder, 100_000)

/**
 * A planned copy of one chunk from `from` to `to`, after which `to` takes the place of `replaces`
 * in the file's table; `size` bytes are locked on `to` until it confirms or the order expires.
 */
export const TransferRecord = obj({
  ...transferFields,
  to: peer,
  replaces: peer,
  issued: time,
  expires: time
})
export type TransferRecord = Infer<typeof TransferRecord>

/** Copies one `transfers` or `replaced` entry may carry. */
export const MAX_TRANSFERS_PER_OP = 1000

/** A confirmed copy: `to` takes the place of `replaces` in the file's table, with its receipt signature. */
export const Replaced = obj({ transferId: hex(16), fileId, chunkId, replaces: peer, to: peer, sig: hex(64) })
export type Replaced = Infer<typeof Replaced>

/** Every change to the table is one op; a replica that applies the same ops in order holds the same table. */
export const Op = union('op', {
  members: obj({ op: t('members'), members: arr(Member, MAX_MEMBERS) }),
  vendor: obj({ op: t('vendor'), vendor: VendorRecord }),
  allocate: obj({ op: t('allocate'), allocation: AllocationRecord }),
  /** `staged`: files whose tables are logged without chunks; apply assembles them from their commit-parts */
  commit: obj({ op: t('commit'), allocationId, tables: arr(FileTable, MAX_FILES), staged: opt(arr(fileId, MAX_FILES)), orders }),
  /** chunk lines of a large file staged under its open allocation, for the commit that closes it */
  'commit-part': obj({ op: t('commit-part'), allocationId, fileId, first: int(0, 2 ** 40), chunks: arr(ChunkEntry, MAX_PART_CHUNKS) }),
  expire: obj({ op: t('expire'), allocationId, orders }),
  renew: obj({ op: t('renew'), allocationId, expires: time }),
  release: obj({ op: t('release'), fileId, orders }),
  delivered: obj({ op: t('delivered'), vendor: peer, ids: arr(hex(16), 10_000) }),
  noop: obj({ op: t('noop') }),
  drain: obj({ op: t('drain'), vendor: peer }),
  transfer: obj({ op: t('transfer'), transfer: TransferRecord }),
  /** the target confirmed its copy: it replaces `replaces` in the file's table, with its receipt signature */
  'replace-replica': obj({ op: t('replace-replica'), transferId: hex(16), fileId, chunkId, replaces: peer, to: peer, sig: hex(64), orders }),
  /** a transfer that expired or is no longer wanted */
  'transfer-end': obj({ op: t('transfer-end'), transferId: hex(16), orders }),
  /** the leader's verdict on a vendor's health: dead, back (heard again after dead), or in service again */
  'vendor-state': obj({ op: t('vendor-state'), vendor: peer, state: oneOf('dead', 'back', 'in'), at: time }),
  /** one round of planned copies in one entry (repair plans up to a few hundred at once) */
  transfers: obj({ op: t('transfers'), transfers: arr(TransferRecord, MAX_TRANSFERS_PER_OP) }),
  /** confirmed copies, each like replace-replica; one entry, one rewrite per file, however many arrive at once */
  replaced: obj({ op: t('replaced'), copies: arr(Replaced, MAX_TRANSFERS_PER_OP), orders }),
  /** a user's sealed records written (see the records messages in messages.ts) */
  records: RecordsOp
})
export type Op = Infer<typeof Op>

export const Entry = obj({ index, term, at: time, op: Op })
export type Entry = Infer<typeof Entry>

// ---- requests between replicas

/**
 * One Raft message (src/roles/fat/raft/core.ts), one way: the sender is the connection's peer and
 * the receiver is the replica it reached; the answer, if any, is a message of its own. `index` in
 * an app-resp is the last index that matches the leader's log, or on a reject the probed index,
 * with `hint` where the follower's log ends.
 */
const ballot = { term, lastIndex: index, lastTerm: term }
export const RaftMessage = union('type', {
  vote: obj({ type: t('vote'), ...ballot }),
  'pre-vote': obj({ type: t('pre-vote'), ...ballot }),
  'vote-resp': obj({ type: t('vote-resp'), term, reject: bool }),
  'pre-vote-resp': obj({ type: t('pre-vote-resp'), term, reject: bool }),
  app: obj({ type: t('app'), term, prevIndex: index, prevTerm: term, entries: arr(Entry, 1000), commit: index }),
  'app-resp': obj({ type: t('app-resp'), term, index, reject: bool, hint: index }),
  heartbeat: obj({ type: t('heartbeat'), term, commit: index }),
  'heartbeat-resp': obj({ type: t('heartbeat-resp'), term })
})
export type RaftMessage = Infer<typeof RaftMessage>
export const Raft = obj({ t: t('raft'), msg: RaftMessage })

/** One table record: as large as a log entry may be (a file's table is a record). */
const MAX_RECORD = MAX_FAT_MESSAGE - 1024 * 1024
/** Where a snapshot ends: the index and term it covers, and the replica set at that index. */
export const SnapshotMeta = obj({ index, term, members: arr(Member, MAX_MEMBERS) })
/**
 * One chunk of a snapshot (the leader's table records as they stood at `last.index`), sent in
 * order from `seq` 0; the last chunk carries `last`. Keys are the table's own level keys, values
 * its JSON records.
 */
export const SnapshotChunk = obj({
  t: t('snap-chunk'),
  term,
  id: hex(16),
  seq: int(0, 2 ** 32),
  /** a record larger than a chunk comes in pieces, in order: each but its last has `more` */
  records: arr(obj({ k: str(512), v: str(MAX_RECORD), more: opt(bool) }), 1_000_000),
  last: opt(SnapshotMeta)
})
/** The receiver holds the message (Raft messages) or chunk (snapshots); nothing more is promised. */
export const RaftAck = obj({ t: t('raft-ack') })

/** A new replica asks to join the replica set (sent to any member; the leader adds it). */
export const Join = obj({ t: t('join'), addrs, proof: hex(32, true) })
export const JoinReply = obj({ t: t('join-reply'), leader: str(128), members: arr(Member, MAX_MEMBERS) })

/**
 * An operator removes a replica from the set (it may be dead): `proof` is HMAC-SHA256 of
 * `stor:remove:<peer>` under the network's join secret. Any member takes it to the leader.
 */
export const Remove = obj({ t: t('remove'), peer, proof: hex(32) })
/** The replica set once the removal is committed, and who leads it. */
export const Removed = obj({ t: t('removed'), leader: str(128), members: arr(Member, MAX_MEMBERS) })

/** What `status` shows of each replica; `digest` hashes the whole table, so it is only computed when asked for. */
export const Probe = obj({ t: t('probe'), digest: bool })
export const ProbeReply = obj({ t: t('probe-reply'), term, leader: str(128), applied: index, commit: index, lastIndex: index, digest: str(64, /^(?:[0-9a-f]{64})?$/) })
export type ProbeReply = Infer<typeof ProbeReply>

export const SYNC_REQUESTS = { raft: Raft, 'snap-chunk': SnapshotChunk, join: Join, remove: Remove, probe: Probe }

export type Message<C> = Infer<C>
