import { arr, bool, hex, int, obj, oneOf, opt, peer, str, type Check, type Infer } from './schema.ts'
import { MAX_ADDRS, MAX_CANDIDATES, MAX_CHUNK_SIZE, MAX_PIECES, MAX_REPLICAS, MAX_WIRE_CHUNK } from './ids.ts'

export const MAX_BYTES = 2 ** 50
/** Files one allocation and one commit may carry. */
export const MAX_FILES = 10_000
export const time = int(0, 2 ** 48)
const addr = str(300, /^\/[\x21-\x7e]*$/)
export const addrs = arr(addr, MAX_ADDRS)
const sig = hex(64)
export const fileId = hex(16)
export const allocationId = hex(16)
export const chunkId = hex(32)
/** A failure domain's name (rack, building, site): letters, digits and . _ - */
export const zone = str(64, /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)
const t = <T extends string>(name: T): Check<T> => oneOf(name)

// ---- signed records: each is signed by one party over its canonical form without `sig`

/** FAT -> user, checked by vendors: `vendor` may take up to `bytes` of `owner`'s allocation until `expires`. */
export const Grant = obj({ allocationId, owner: peer, vendor: peer, bytes: int(0, MAX_BYTES), expires: time, fat: peer, sig })
export type Grant = Infer<typeof Grant>

export const Hop = obj({ vendor: peer, addrs, grant: Grant })
export type Hop = Infer<typeof Hop>

/** user -> vendors: what a chunk is and where it goes; signed by the owner, re-applied at each hop. */
export const ChunkHeader = obj({
  owner: peer,
  allocationId,
  fileId,
  chunkId,
  size: int(0, MAX_WIRE_CHUNK),
  pieces: int(1, MAX_PIECES),
  route: arr(Hop, MAX_REPLICAS),
  sig
})
export type ChunkHeader = Infer<typeof ChunkHeader>

/** vendor -> user (and on to the FAT): this vendor holds this chunk safely. */
export const Receipt = obj({ vendor: peer, fileId, chunkId, size: int(0, MAX_WIRE_CHUNK), sig })
export type Receipt = Infer<typeof Receipt>

/** Chunk ids one erase-chunks order or one report may name. */
export const MAX_CHUNK_LIST = 10_000

/**
 * FAT -> vendor. settle: of the chunks stored under allocation `scope`, keep those listed and
 * erase the rest. erase: remove every chunk of file `scope`. erase-chunks: remove the chunks of
 * file `scope` listed in `chunks` (a replica that moved or was replaced elsewhere).
 */
export const Order = obj({
  id: hex(16),
  kind: oneOf('settle', 'erase', 'erase-chunks'),
  scope: hex(16),
  vendor: peer,
  keep: arr(chunkId, 1_000_000),
  chunks: opt(arr(chunkId, MAX_CHUNK_LIST)),
  issued: time,
  fat: peer,
  sig
})
export type Order = Infer<typeof Order>

/** What a planned copy of one chunk is, both in a signed transfer order and in the FAT's log. */
export const transferFields = {
  id: hex(16),
  reason: oneOf('repair', 'migrate', 'drain'),
  owner: peer,
  fileId,
  chunkId,
  size: int(0, MAX_WIRE_CHUNK),
  from: peer
}

/**
 * FAT -> target vendor (and shown by it to the source vendor): copy chunk `chunkId` of file
 * `fileId` from vendor `from` to vendor `to`, after which `to` replaces `replaces` in the file's
 * table. Signed by the FAT; the source serves the chunk only to `to`, only until `expires`.
 */
export const Transfer = obj({
  ...transferFields,
  fromAddrs: addrs,
  to: peer,
  replaces: peer,
  expires: time,
  fat: peer,
  sig
})
export type Transfer = Infer<typeof Transfer>

/** A chunk a vendor found corrupt or missing on its disks. */
export const ChunkRef = obj({ fileId, chunkId })
export type ChunkRef = Infer<typeof ChunkRef>

// ---- tables

export const ChunkEntry = obj({
  i: int(0, 2 ** 40),
  id: chunkId,
  size: int(0, MAX_WIRE_CHUNK),
  replicas: arr(obj({ vendor: peer, sig }), MAX_REPLICAS)
})
export type ChunkEntry = Infer<typeof ChunkEntry>

/**
 * A file's final table: where every chunk and replica lives, and the owner's wrapped file key.
 * Small files uploaded together are packed: their bytes lie in one hidden file of kind `pack`,
 * and each such file's table names it in `packed` (with no chunks of its own; its wrapped key
 * is the pack's). A pack lives until the last of its files is released.
 */
export const FileTable = obj({
  fileId,
  owner: peer,
  name: str(255),
  size: int(0, MAX_BYTES),
  chunkSize: int(1, MAX_CHUNK_SIZE),
  replicas: int(1, MAX_REPLICAS),
  created: time,
  cipher: obj({ alg: oneOf('aes-256-gcm'), wrappedKey: hex(128, true) }),
  chunks: arr(ChunkEntry, 1_000_000),
  kind: opt(oneOf('pack')),
  packed: opt(obj({ pack: fileId, offset: int(0, MAX_BYTES) }))
})
export type FileTable = Infer<typeof FileTable>

export const Device = obj({ path: str(4096), capacity: int(0, MAX_BYTES), free: int(0, MAX_BYTES), failed: bool })
export type Device = Infer<typeof Device>

export const VendorAddrs = obj({ vendor: peer, addrs })
export type VendorAddrs = Infer<typeof VendorAddrs>

/** Availability is a share of heartbeats, sent in thousandths so the wire carries integers only. */
export const PERMILLE = 1000
/**
 * What the FAT knows of a vendor's health and load, for the user's path ranking: bytes it may
 * still grant, the free bytes and stores in progress of its last heartbeat, and the share of the
 * heartbeats expected over the recent window that arrived (in thousandths).
 */
export const VendorStats = obj({ vendor: peer, available: int(0, MAX_BYTES), free: int(0, MAX_BYTES), inflight: int(0, 1_000_000), availability: int(0, PERMILLE), zone: opt(zone) })
export type VendorStats = Infer<typeof VendorStats>

/** A request that reads or changes a user's files carries the owner's signature, a nonce and a time (see auth.ts). */
export const Auth = obj({ owner: peer, nonce: hex(16), time, sig })

// ---- /stor/fat/1.0.0 requests and replies

export const Announce = obj({
  t: t('announce'),
  addrs,
  capacity: int(0, MAX_BYTES),
  free: int(0, MAX_BYTES),
  devices: arr(Device, 256),
  inflight: int(0, 1_000_000),
  done: arr(hex(16), 10_000),
  /** chunks in the local table */
  held: int(0, 2 ** 40),
  /** bytes the vendor may still take before its high-water mark (0: full) */
  room: int(0, MAX_BYTES),
  /** bytes above its high-water mark it asks the FAT to move elsewhere */
  over: int(0, MAX_BYTES),
  /** chunks found corrupt or missing (first ones, if many) */
  lost: arr(ChunkRef, 1000),
  /**
   * of those, chunks lost with a failed device that the vendor has room to take back on its other
   * devices: the FAT copies a healthy replica back to it, and its table does not change
   */
  restore: opt(arr(ChunkRef, 1000)),
  /** the failure domain the vendor was started in (--zone) */
  zone: opt(zone)
})
/** A FAT replica: its peer id and addresses. */
export const Replica = obj({ peer, addrs })
export type Replica = Infer<typeof Replica>

export const Announced = obj({ t: t('announced'), heartbeatMs: int(100, 3_600_000), orders: arr(Order, 10_000), fats: arr(Replica, 15), transfers: arr(Transfer, 1000) })

/** `packed`: the indexes of the files stored inside packs (they take no room of their own). */
export const Allocate = obj({ t: t('allocate'), sizes: arr(int(0, MAX_BYTES), MAX_FILES), replicas: int(1, MAX_REPLICAS), chunkSize: int(1, MAX_CHUNK_SIZE), packed: opt(arr(int(0, MAX_FILES - 1), MAX_FILES)), auth: Auth })
export const Allocated = obj({ t: t('allocated'), allocationId, fileIds: arr(fileId, MAX_FILES), expires: time, candidates: arr(Hop, MAX_CANDIDATES), stats: arr(VendorStats, MAX_CANDIDATES) })

/** Extends an open allocation's lease while its upload runs; answered like `allocate`, with fresh grants. */
export const Renew = obj({ t: t('renew'), allocationId, auth: Auth })
/**
 * Closes an allocation with the files' final tables. A file listed in `staged` comes with no
 * chunks: its chunk lines were sent before by `commit-part` requests, and the FAT assembles them
 * (a large file's table does not fit one message).
 */
export const Commit = obj({ t: t('commit'), allocationId, tables: arr(FileTable, MAX_FILES), staged: opt(arr(fileId, MAX_FILES)), auth: Auth })
/** Chunk lines one commit-part carries at most (its message must also stay within MAX_FAT_MESSAGE). */
export const MAX_PART_CHUNKS = 10_000
/**
 * Stages the chunk lines `first`, `first + 1`, ... of file `fileId` of an open allocation, for the
 * `commit` that will list the file in `staged`. Sent again with the same `first`, it replaces that part.
 */
export const CommitPart = obj({ t: t('commit-part'), allocationId, fileId, first: int(0, 2 ** 40), chunks: arr(ChunkEntry, MAX_PART_CHUNKS), auth: Auth })
/** A file's table, its chunk lines from `from` (0 when left out) as many as fit one reply. */
export const GetTable = obj({ t: t('get'), fileId, from: opt(int(0, 2 ** 40)), auth: Auth })
/**
 * A file's table; for a packed file, its pack's table too. A large table comes in pages: `next`,
 * when present, is the index of the first chunk line not in this reply (ask again with `from`).
 */
export const TableReply = obj({ t: t('table'), table: FileTable, pack: opt(FileTable), next: opt(int(1, 2 ** 40)), vendors: arr(VendorAddrs, 1024), stats: arr(VendorStats, 1024) })
/**
 * Many tables in one request. The reply holds the tables of the first files asked for, in order,
 * as many as fit one message (ask again for the rest), the packs they lie in, and their vendors.
 */
export const GetTables = obj({ t: t('get-many'), fileIds: arr(fileId, MAX_FILES), auth: Auth })
/** `next`: the last table holds only its chunk lines before this index; the rest come through `get` with `from`. */
export const Tables = obj({ t: t('tables'), tables: arr(FileTable, MAX_FILES), packs: arr(FileTable, MAX_FILES), next: opt(int(1, 2 ** 40)), vendors: arr(VendorAddrs, 1024), stats: arr(VendorStats, 1024) })

/**
 * A file's health: `copies` is the fewest healthy copies any of its chunks has (healthy: on a
 * vendor that is not dead and does not report it lost; R of R is healthy, 0 is lost), `degraded`
 * and `lost` count its chunks below R and at 0; `stored` is the bytes its chunks take on vendors,
 * replicas included (a packed file's share of its pack).
 */
export const Health = obj({ copies: int(0, MAX_REPLICAS), degraded: int(0, 1_000_000), lost: int(0, 1_000_000), stored: int(0, MAX_BYTES) })
export type Health = Infer<typeof Health>
export const FileSummary = obj({ fileId, name: str(255), size: int(0, MAX_BYTES), chunks: int(0, 1_000_000), replicas: int(1, MAX_REPLICAS), created: time, health: opt(Health) })
export type FileSummary = Infer<typeof FileSummary>
export const List = obj({ t: t('list'), auth: Auth })
export const Files = obj({ t: t('files'), files: arr(FileSummary, 100_000) })

/** The health of the owner's files named (none: all of them), like `list` with every file's health. */
export const CheckFiles = obj({ t: t('check'), fileIds: arr(fileId, MAX_FILES), auth: Auth })
export const Checked = obj({ t: t('checked'), files: arr(FileSummary, 100_000), missing: arr(fileId, MAX_FILES) })

export const Release = obj({ t: t('release'), fileId, auth: Auth })
export const Released = obj({ t: t('released'), fileId, freed: int(0, MAX_BYTES) })

export const VendorStatus = obj({
  vendor: peer,
  addrs,
  capacity: int(0, MAX_BYTES),
  used: int(0, MAX_BYTES),
  locked: int(0, MAX_BYTES),
  available: int(0, MAX_BYTES),
  devices: arr(Device, 256),
  lastSeen: time,
  alive: bool,
  draining: bool,
  /** the vendor's last heartbeat: chunks held, bytes over its high-water mark, chunks it lost */
  held: int(0, 2 ** 40),
  over: int(0, MAX_BYTES),
  lost: int(0, 1000),
  /** transfers under way with this vendor as source or target */
  transfers: int(0, 1_000_000),
  free: int(0, MAX_BYTES),
  inflight: int(0, 1_000_000),
  availability: int(0, PERMILLE),
  /** alive, suspect (silent a few beats: offered nothing), dead, draining or back (see docs/repair.md) */
  state: opt(oneOf('alive', 'suspect', 'dead', 'draining', 'back')),
  zone: opt(zone)
})
export type VendorStatus = Infer<typeof VendorStatus>
export const Copied = obj({ t: t('copied'), transfer: Transfer, receipt: Receipt })
/** Asks the FAT to move everything off `vendor`; signed by the vendor's own key (the sender may be anyone). */
export const Drain = obj({ t: t('drain'), vendor: peer, auth: Auth })
export const Draining = obj({ t: t('draining'), vendor: peer, bytes: int(0, MAX_BYTES) })

export const Status = obj({ t: t('status') })
export const ReplicaStatus = obj({ peer, addrs, reachable: bool, leader: bool, term: int(0, 2 ** 48), applied: int(0, 2 ** 48), digest: hex(32, true) })
export type ReplicaStatus = Infer<typeof ReplicaStatus>
export const Members = obj({ t: t('members') })
export const MembersReply = obj({ t: t('members-reply'), leader: str(128), members: arr(Replica, 15) })
/**
 * Chunks by health (healthy, under-replicated, lost), and the repair: chunks waiting for a copy,
 * copies under way, copies and bytes repaired since the network began, and the vendors the guard
 * keeps from being declared dead (too few would stay in service).
 */
export const RepairStatus = obj({
  chunks: int(0, 2 ** 40),
  healthy: int(0, 2 ** 40),
  under: int(0, 2 ** 40),
  lost: int(0, 2 ** 40),
  queued: int(0, 2 ** 40),
  moving: int(0, 2 ** 40),
  copies: int(0, 2 ** 48),
  bytes: int(0, MAX_BYTES),
  held: arr(peer, 10_000)
})
export type RepairStatus = Infer<typeof RepairStatus>
export const StatusReply = obj({ t: t('status-reply'), fat: peer, position: int(0, 2 ** 48), digest: hex(32), replicas: arr(ReplicaStatus, 15), vendors: arr(VendorStatus, 10_000), files: int(0, 2 ** 40), allocations: int(0, 2 ** 40), repair: opt(RepairStatus) })

// ---- vendor protocols

export const Store = obj({ t: t('store'), header: ChunkHeader, hop: int(0, MAX_REPLICAS - 1) })
export const Stored = obj({ t: t('stored'), receipts: arr(Receipt, MAX_REPLICAS), failed: arr(obj({ vendor: peer, reason: str(500) }), MAX_REPLICAS) })
export const Fetch = obj({ t: t('fetch'), fileId, chunkId, auth: Auth })
export const ChunkReply = obj({ t: t('chunk'), size: int(0, MAX_WIRE_CHUNK) })
export const OrderMsg = obj({ t: t('order'), order: Order })
export const TransferMsg = obj({ t: t('transfer'), transfer: Transfer })
/** target -> source vendor on the fetch protocol: the chunk a FAT transfer order names. */
export const Copy = obj({ t: t('copy'), transfer: Transfer })
/** The latency probe: the vendor answers each echo with the same sequence number, on one open stream. */
export const Echo = obj({ t: t('echo'), seq: int(0, 1_000_000) })
export const MAX_ECHOES = 32

// ---- shared replies

export const Ok = obj({ t: t('ok') })
export const ErrorReply = obj({ t: t('error'), code: str(40, /^ERR_[A-Z_]+$/), message: str(1000) })
export type ErrorReply = Infer<typeof ErrorReply>

export type Message<C> = Infer<C>

// ---- a user's records (requests on /stor/fat/1.0.0)
/**
 * A user's records, kept by the FAT (requests on /stor/fat/1.0.0): small values the user seals
 * before they leave its machine, filed under a scope and an id that are keyed hashes of the
 * user's own names. The FAT keeps, orders and mirrors them like files' tables, and learns only
 * their number and sizes. The S3 gateway keeps its buckets, object index, multipart uploads and
 * access keys in them, so every gateway of the same identity sees the same state.
 */

/** A scope (16 bytes) groups records listed together; an id (32 bytes) names one record in it. */
export const recordScope = hex(16)
export const recordId = hex(32)
/** A sealed value: base64 of at most MAX_RECORD_VALUE bytes. */
export const MAX_RECORD_VALUE = 64 * 1024
export const recordValue = str(Math.ceil(MAX_RECORD_VALUE / 3) * 4, /^[A-Za-z0-9+/]*={0,2}$/)
/** Writes one request (and one op) carries: applied together or not at all. */
export const MAX_RECORD_WRITES = 1000
/** Records one owner may keep. */
export const MAX_RECORDS_PER_OWNER = 1_000_000
/** Records one list reply carries at most (it says when there are more). */
export const MAX_RECORDS_LISTED = 1000

/** Put `value`, or delete when it is left out. */
export const RecordWrite = obj({ scope: recordScope, id: recordId, value: opt(recordValue) })
export type RecordWrite = Infer<typeof RecordWrite>
export const RecordEntry = obj({ id: recordId, value: recordValue })
export type RecordEntry = Infer<typeof RecordEntry>

/**
 * Writes records atomically. `expect` makes it conditional: each named record must hold exactly
 * that value (sha-256 of the stored string), or be absent when `absent` is true; else nothing is
 * written and the reply says `applied: false`.
 */
export const RecordExpect = obj({ scope: recordScope, id: recordId, absent: opt(bool), sha256: opt(hex(32)) })
export type RecordExpect = Infer<typeof RecordExpect>
export const WriteRecords = obj({ t: t('write-records'), writes: arr(RecordWrite, MAX_RECORD_WRITES), expect: opt(arr(RecordExpect, 16)), auth: Auth })
export const RecordsWritten = obj({ t: t('records-written'), applied: bool })

/** Reads the named records of one scope; absent ones are left out of the reply. */
export const GetRecords = obj({ t: t('get-records'), scope: recordScope, ids: arr(recordId, MAX_RECORDS_LISTED), auth: Auth })
/** Lists a scope's records in id order, after `after`; `more` says a further page exists. */
export const ListRecords = obj({ t: t('list-records'), scope: recordScope, after: opt(recordId), limit: opt(int(1, MAX_RECORDS_LISTED)), auth: Auth })
export const RecordList = obj({ t: t('record-list'), records: arr(RecordEntry, MAX_RECORDS_LISTED), more: bool })

/** The op in the replicated log: one request's writes, for `owner`. */
export const RecordsOp = obj({ op: t('records'), owner: peer, writes: arr(RecordWrite, MAX_RECORD_WRITES) })
export type RecordsOp = Infer<typeof RecordsOp>
