/**
 * Wire-protocol tests: every message of src/protocol/messages.ts and of the FAT replicas' protocol
 * src/protocol/fat-sync.ts (every Op variant travels inside a Raft append), the checkers of schema.ts,
 * the codec (decode, decodeReply), signatures (sign.ts) and length-prefixed frames (stream.ts).
 *
 * The rule checked throughout: bytes from the network either decode to a valid message or are
 * refused with MalformedMessageError; never any other error, never a hang.
 *
 * Tests whose comment starts with "Regression:" pin down src bugs found while writing this file (all fixed in src since).
 * A test that exposes a new src bug gets "[SRC BUG file:line]" in its title and a comment above it
 * saying what is wrong and how to fix it.
 *
 * PROTOCOL_RUNS=1000 npx mocha test/protocol.test.ts runs every property harder.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import * as E from '../src/errors.ts'
import { decode, decodeReply, encode } from '../src/protocol/codec.ts'
import { SEND_BLOCK, KiB, MAX_CANDIDATES, MAX_FAT_MESSAGE, MAX_CHUNK_SIZE, MAX_PIECES, MAX_REPLICAS, MAX_VENDOR_MESSAGE, MAX_WIRE_CHUNK, MiB } from '../src/protocol/ids.ts'
import * as M from '../src/protocol/messages.ts'
import * as S from '../src/protocol/fat-sync.ts'
import { dict, int, obj, oneOf, str, union, type Check } from '../src/protocol/schema.ts'
import { canonical, sign, verify, type Domain } from '../src/protocol/sign.ts'
import { ReplayGuard, signRequest } from '../src/protocol/auth.ts'
import { frames, StreamEndedError } from '../src/protocol/stream.ts'

const RUNS = Number(process.env.PROTOCOL_RUNS ?? 200)
const GiB = 1024 * MiB

type Checks = Record<string, Check<any>>
type Json = any
type Path = Array<string | number>

// ---------------------------------------------------------------- fixtures

const [fatKey, userKey, vendorKey, vendor2Key, fat2Key, fat3Key] = await Promise.all([0, 1, 2, 3, 4, 5].map(async () => await generateKeyPair('Ed25519')))
const FAT = peerIdFromPrivateKey(fatKey).toString()
const USER = peerIdFromPrivateKey(userKey).toString()
const VENDOR = peerIdFromPrivateKey(vendorKey).toString()
const VENDOR2 = peerIdFromPrivateKey(vendor2Key).toString()
/** The other FAT replicas. */
const FAT2 = peerIdFromPrivateKey(fat2Key).toString()
const FAT3 = peerIdFromPrivateKey(fat3Key).toString()
const PEERS = [FAT, USER, VENDOR, VENDOR2, FAT2, FAT3]

const T0 = 1_750_000_000_000
const hexOf = (seed: string, bytes: number): string => createHash('sha256').update(seed).digest('hex').repeat(4).slice(0, bytes * 2)
const addrOf = (peer: string, port: number): string => `/ip4/127.0.0.1/tcp/${port}/p2p/${peer}`
const FILE_ID = hexOf('file', 16)
const FILE_ID2 = hexOf('file 2', 16)
const ALLOCATION_ID = hexOf('allocation', 16)
const CHUNK_ID = hexOf('chunk 0', 32)
const CHUNK_ID2 = hexOf('chunk 1', 32)
const SIZE0 = 4 * MiB + 28
const SIZE1 = 1 * MiB + 28

const grantBody = { allocationId: ALLOCATION_ID, owner: USER, vendor: VENDOR, bytes: 8 * MiB, expires: T0 + 3_600_000, fat: FAT }
const grant = await sign<M.Grant>(fatKey, 'grant', grantBody)
const grant2 = await sign<M.Grant>(fatKey, 'grant', { ...grantBody, vendor: VENDOR2 })
const hop: M.Hop = { vendor: VENDOR, addrs: [addrOf(VENDOR, 4001)], grant }
const hop2: M.Hop = { vendor: VENDOR2, addrs: [addrOf(VENDOR2, 4002), '/dns4/vendor2.example.org/tcp/4002'], grant: grant2 }
const header = await sign<M.ChunkHeader>(userKey, 'header', { owner: USER, allocationId: ALLOCATION_ID, fileId: FILE_ID, chunkId: CHUNK_ID, size: SIZE0, pieces: 2, route: [hop, hop2] })
const receipt = await sign<M.Receipt>(vendorKey, 'receipt', { vendor: VENDOR, fileId: FILE_ID, chunkId: CHUNK_ID, size: SIZE0 })
const receipt2 = await sign<M.Receipt>(vendor2Key, 'receipt', { vendor: VENDOR2, fileId: FILE_ID, chunkId: CHUNK_ID, size: SIZE0 })
const receipt3 = await sign<M.Receipt>(vendorKey, 'receipt', { vendor: VENDOR, fileId: FILE_ID, chunkId: CHUNK_ID2, size: SIZE1 })
const order = await sign<M.Order>(fatKey, 'order', { id: hexOf('order', 16), kind: 'settle', scope: ALLOCATION_ID, vendor: VENDOR, keep: [CHUNK_ID, CHUNK_ID2], issued: T0, fat: FAT })
const device: M.Device = { path: '/var/lib/stor/disk0', capacity: 100 * GiB, free: 60 * GiB, failed: false }
const fileTable: M.FileTable = {
  fileId: FILE_ID,
  owner: USER,
  name: 'holiday photos.tar',
  size: 5 * MiB,
  chunkSize: 4 * MiB,
  replicas: 2,
  created: T0,
  cipher: { alg: 'aes-256-gcm', wrappedKey: hexOf('wrapped key', 60) },
  chunks: [
    { i: 0, id: CHUNK_ID, size: SIZE0, replicas: [{ vendor: VENDOR, sig: receipt.sig }, { vendor: VENDOR2, sig: receipt2.sig }] },
    { i: 1, id: CHUNK_ID2, size: SIZE1, replicas: [{ vendor: VENDOR, sig: receipt3.sig }] }
  ]
}
/** Two small files packed into one hidden file, and one of them. */
const PACK_ID = hexOf('pack', 16)
const packTable: M.FileTable = { ...fileTable, fileId: PACK_ID, name: 'pack of 2 files', size: 3 * KiB, chunks: [{ i: 0, id: CHUNK_ID, size: 3 * KiB + 28, replicas: [{ vendor: VENDOR, sig: receipt.sig }] }], kind: 'pack' }
const packedTable: M.FileTable = { ...fileTable, fileId: FILE_ID2, name: 'notes.txt', size: 2 * KiB, chunks: [], packed: { pack: PACK_ID, offset: 1 * KiB } }
const vendorStatus: M.VendorStatus = {
  vendor: VENDOR,
  addrs: [addrOf(VENDOR, 4001)],
  capacity: 100 * GiB,
  used: 10 * GiB,
  locked: 1 * GiB,
  available: 49 * GiB,
  devices: [device, { ...device, path: '/mnt/usb', failed: true }],
  lastSeen: T0,
  alive: true,
  draining: false,
  held: 1200,
  over: 0,
  lost: 1,
  transfers: 2,
  free: 60 * GiB,
  inflight: 3,
  availability: 967,
  state: 'alive',
  zone: 'rack-1'
}
const vendorStats: M.VendorStats = { vendor: VENDOR, available: 49 * GiB, free: 60 * GiB, inflight: 3, availability: 1000, zone: 'rack-1' }
const vendorStats2: M.VendorStats = { vendor: VENDOR2, available: 0, free: 0, inflight: 0, availability: 0 }
const transfer = await sign<M.Transfer>(fatKey, 'transfer', { id: hexOf('transfer', 16), reason: 'repair', owner: USER, fileId: FILE_ID, chunkId: CHUNK_ID, size: SIZE0, from: VENDOR, fromAddrs: [addrOf(VENDOR, 4001)], to: VENDOR2, replaces: VENDOR, expires: T0 + 60_000, fat: FAT })
const transferRecord: S.TransferRecord = { id: transfer.id, reason: 'repair', owner: USER, fileId: FILE_ID, chunkId: CHUNK_ID, size: SIZE0, from: VENDOR, to: VENDOR2, replaces: VENDOR, issued: T0, expires: T0 + 60_000 }

const replica = (peer: string, port: number): M.Replica => ({ peer, addrs: [addrOf(peer, port), `/dns4/fat${port}.example.org/tcp/${port}`] })
/** The FAT replica set; FAT leads. */
const REPLICAS: M.Replica[] = [replica(FAT, 4000), replica(FAT2, 4010), replica(FAT3, 4020)]
const replicaStatus: M.ReplicaStatus[] = [
  { ...REPLICAS[0], reachable: true, leader: true, term: 7, applied: 42, digest: hexOf('log digest', 32) },
  // a replica status could not probe: no digest
  { ...REPLICAS[1], reachable: false, leader: false, term: 0, applied: 0, digest: '' }
]

// ---- fat-sync.ts: one op of every kind, as the leader logs them (lists kept non-empty, so every list is tested)
const settleOrder: S.PendingOrder = { id: hexOf('settle order', 16), vendor: VENDOR, kind: 'settle', scope: ALLOCATION_ID, keep: [CHUNK_ID, CHUNK_ID2], issued: T0 }
const eraseOrder: S.PendingOrder = { id: hexOf('erase order', 16), vendor: VENDOR2, kind: 'erase', scope: FILE_ID, keep: [CHUNK_ID], issued: T0 + 1 }
const vendorRecord: S.VendorRecord = { peer: VENDOR, addrs: [addrOf(VENDOR, 4001)], capacity: 100 * GiB, devices: [device], joined: T0, zone: 'rack-1', state: 'back', since: T0 }
const allocationRecord: S.AllocationRecord = {
  allocationId: ALLOCATION_ID,
  owner: USER,
  sizes: [5 * MiB, 1 * KiB],
  fileIds: [FILE_ID, FILE_ID2],
  replicas: 2,
  chunkSize: 4 * MiB,
  expires: T0 + 3_600_000,
  grants: { [VENDOR]: 8 * MiB, [VENDOR2]: 8 * MiB }
}
/** One Op of every variant, keyed by its `op` tag. */
const OPS: Record<string, S.Op> = {
  members: { op: 'members', members: REPLICAS },
  vendor: { op: 'vendor', vendor: vendorRecord },
  allocate: { op: 'allocate', allocation: allocationRecord },
  commit: { op: 'commit', allocationId: ALLOCATION_ID, tables: [fileTable, { ...fileTable, fileId: FILE_ID2, chunks: [] }], staged: [FILE_ID2], orders: [settleOrder] },
  'commit-part': { op: 'commit-part', allocationId: ALLOCATION_ID, fileId: FILE_ID2, first: 2, chunks: fileTable.chunks.map((c, k) => ({ ...c, i: 2 + k })) },
  renew: { op: 'renew', allocationId: ALLOCATION_ID, expires: T0 + 7_200_000 },
  expire: { op: 'expire', allocationId: hexOf('expired allocation', 16), orders: [{ ...settleOrder, id: hexOf('expire order', 16), scope: hexOf('expired allocation', 16) }] },
  release: { op: 'release', fileId: FILE_ID, orders: [eraseOrder] },
  delivered: { op: 'delivered', vendor: VENDOR, ids: [settleOrder.id, eraseOrder.id] },
  noop: { op: 'noop' },
  drain: { op: 'drain', vendor: VENDOR },
  transfer: { op: 'transfer', transfer: transferRecord },
  'replace-replica': { op: 'replace-replica', transferId: transfer.id, fileId: FILE_ID, chunkId: CHUNK_ID, replaces: VENDOR, to: VENDOR2, sig: receipt2.sig, orders: [{ id: hexOf('erase chunks order', 16), vendor: VENDOR, kind: 'erase-chunks', scope: FILE_ID, keep: [CHUNK_ID2], chunks: [CHUNK_ID], issued: T0 + 2 }] },
  'transfer-end': { op: 'transfer-end', transferId: transfer.id, orders: [{ id: hexOf('erase copy order', 16), vendor: VENDOR2, kind: 'erase-chunks', scope: FILE_ID, keep: [CHUNK_ID2], chunks: [CHUNK_ID], issued: T0 + 3 }] },
  'vendor-state': { op: 'vendor-state', vendor: VENDOR, state: 'dead', at: T0 + 4 },
  transfers: { op: 'transfers', transfers: [transferRecord, { ...transferRecord, id: hexOf('second transfer', 16), chunkId: CHUNK_ID2 }] },
  replaced: { op: 'replaced', copies: [{ transferId: transfer.id, fileId: FILE_ID, chunkId: CHUNK_ID, replaces: VENDOR, to: VENDOR2, sig: receipt2.sig }], orders: [{ id: hexOf('erase surplus order', 16), vendor: VENDOR, kind: 'erase-chunks', scope: FILE_ID, keep: [], chunks: [CHUNK_ID], issued: T0 + 5 }] },
  records: { op: 'records', owner: USER, writes: [{ scope: hexOf('record scope', 16), id: hexOf('record id', 32), value: 'c2VhbGVk' }, { scope: hexOf('record scope', 16), id: hexOf('record id 2', 32) }] }
}
const OP_TAGS = Object.keys(OPS)
/** Ops as they occur too: empty lists, an allocation granting nothing. */
const MORE_OPS: S.Op[] = [
  { op: 'members', members: [] },
  { op: 'vendor', vendor: { ...vendorRecord, addrs: [], devices: [] } },
  { op: 'allocate', allocation: { ...allocationRecord, sizes: [], fileIds: [], grants: {} } },
  { op: 'allocate', allocation: { ...allocationRecord, sizes: [10, 20, 30], fileIds: [FILE_ID, FILE_ID2, hexOf('pack', 16)], packed: [0, 1] } },
  { op: 'commit', allocationId: ALLOCATION_ID, tables: [], orders: [] },
  { op: 'commit', allocationId: ALLOCATION_ID, tables: [fileTable], staged: [], orders: [] },
  { op: 'expire', allocationId: ALLOCATION_ID, orders: [{ ...settleOrder, keep: [] }] },
  { op: 'release', fileId: FILE_ID, orders: [{ ...eraseOrder, keep: [] }] },
  { op: 'delivered', vendor: VENDOR2, ids: [] },
  { op: 'vendor', vendor: { ...vendorRecord, draining: true } },
  { op: 'transfer-end', transferId: transfer.id, orders: [] },
  { op: 'vendor-state', vendor: VENDOR, state: 'back', at: T0 },
  { op: 'vendor-state', vendor: VENDOR, state: 'in', at: T0 },
  { op: 'vendor', vendor: { ...vendorRecord, zone: 'rack-2', state: 'dead', since: T0 } },
  { op: 'transfers', transfers: [] },
  { op: 'replaced', copies: [], orders: [] },
  { op: 'records', owner: USER, writes: [] }
]
const entry = (index: number, term: number, op: S.Op): S.Entry => ({ index, term, at: T0 + index, op })
/** Entries 121.. of the log, one of every Op variant in this order. */
const ENTRIES: S.Entry[] = OP_TAGS.map((tag, i) => entry(121 + i, i < 2 ? 6 : 7, OPS[tag]))
const appendOf = (entries: S.Entry[]): M.Message<typeof S.Raft> => ({ t: 'raft', msg: { type: 'app', term: 7, prevIndex: entries.length > 0 ? entries[0].index - 1 : 128, prevTerm: 6, entries, commit: 120 } })
/** Path of the op of variant `tag` in the Raft (append) example. */
const opIn = (tag: string): Array<string | number> => ['msg', 'entries', OP_TAGS.indexOf(tag), 'op']
/** One Raft message of every other type, each valid inside a Raft request. */
const RAFT_MESSAGES: S.RaftMessage[] = [
  { type: 'vote', term: 8, lastIndex: 128, lastTerm: 7 },
  { type: 'pre-vote', term: 8, lastIndex: 128, lastTerm: 7 },
  { type: 'vote-resp', term: 8, reject: false },
  { type: 'pre-vote-resp', term: 8, reject: true },
  { type: 'app-resp', term: 7, index: 100, reject: true, hint: 90 },
  { type: 'heartbeat', term: 7, commit: 120 },
  { type: 'heartbeat-resp', term: 7 }
]

/** Requests on a user's files carry the owner's signature, nonce and time (auth.ts). */
const signed = async <T extends object>(msg: T): Promise<T & { auth: M.Message<typeof M.Auth> }> => await signRequest(userKey, USER, msg)

interface Example { check: Check<any>, msg: Json }
const ex = <C extends Check<any>>(check: C, msg: M.Message<C>): Example => ({ check, msg })

/** One valid instance of every message with a `t` field, keyed by its export name in messages.ts. */
const EXAMPLES: Record<string, Example> = {
  Announce: ex(M.Announce, { t: 'announce', addrs: [addrOf(VENDOR, 4001)], capacity: 100 * GiB, free: 60 * GiB, devices: [device], inflight: 3, done: [hexOf('done', 16)], held: 1200, room: 30 * GiB, over: 0, lost: [{ fileId: FILE_ID, chunkId: CHUNK_ID }], restore: [{ fileId: FILE_ID, chunkId: CHUNK_ID }] , zone: 'rack-1' }),
  Announced: ex(M.Announced, { t: 'announced', heartbeatMs: 2000, orders: [order], fats: REPLICAS, transfers: [transfer] }),
  Copied: ex(M.Copied, { t: 'copied', transfer, receipt: receipt2 }),
  Drain: ex(M.Drain, await signRequest(vendorKey, VENDOR, { t: 'drain' as const, vendor: VENDOR })),
  Draining: ex(M.Draining, { t: 'draining', vendor: VENDOR, bytes: 10 * GiB }),
  TransferMsg: ex(M.TransferMsg, { t: 'transfer', transfer }),
  Copy: ex(M.Copy, { t: 'copy', transfer }),
  Allocate: ex(M.Allocate, await signed({ t: 'allocate' as const, sizes: [5 * MiB, 1 * KiB, 2 * KiB, 3 * KiB], replicas: 2, chunkSize: 4 * MiB, packed: [1, 2] })),
  Allocated: ex(M.Allocated, { t: 'allocated', allocationId: ALLOCATION_ID, fileIds: [FILE_ID, FILE_ID2], expires: T0 + 3_600_000, candidates: [hop, hop2], stats: [vendorStats, vendorStats2] }),
  Renew: ex(M.Renew, await signed({ t: 'renew' as const, allocationId: ALLOCATION_ID })),
  Commit: ex(M.Commit, await signed({ t: 'commit' as const, allocationId: ALLOCATION_ID, tables: [fileTable, packedTable, packTable, { ...fileTable, fileId: hexOf('staged file', 16), chunks: [] }], staged: [hexOf('staged file', 16)] })),
  CommitPart: ex(M.CommitPart, await signed({ t: 'commit-part' as const, allocationId: ALLOCATION_ID, fileId: FILE_ID, first: 10_000, chunks: fileTable.chunks.map((c, k) => ({ ...c, i: 10_000 + k })) })),
  GetTable: ex(M.GetTable, await signed({ t: 'get' as const, fileId: FILE_ID, from: 2 })),
  TableReply: ex(M.TableReply, { t: 'table', table: packedTable, pack: packTable, next: 2, vendors: [{ vendor: VENDOR, addrs: hop.addrs }, { vendor: VENDOR2, addrs: hop2.addrs }], stats: [vendorStats, vendorStats2] }),
  GetTables: ex(M.GetTables, await signed({ t: 'get-many' as const, fileIds: [FILE_ID, FILE_ID2] })),
  Tables: ex(M.Tables, { t: 'tables', tables: [fileTable, packedTable], packs: [packTable], next: 1, vendors: [{ vendor: VENDOR, addrs: hop.addrs }, { vendor: VENDOR2, addrs: hop2.addrs }], stats: [vendorStats, vendorStats2] }),
  List: ex(M.List, await signed({ t: 'list' as const })),
  Files: ex(M.Files, { t: 'files', files: [{ fileId: FILE_ID, name: 'holiday photos.tar', size: 5 * MiB, chunks: 2, replicas: 2, created: T0, health: { copies: 1, degraded: 1, lost: 0, stored: 10 * MiB } }] }),
  CheckFiles: ex(M.CheckFiles, await signed({ t: 'check' as const, fileIds: [FILE_ID, FILE_ID2] })),
  Checked: ex(M.Checked, { t: 'checked', files: [{ fileId: FILE_ID, name: 'holiday photos.tar', size: 5 * MiB, chunks: 2, replicas: 2, created: T0, health: { copies: 2, degraded: 0, lost: 0, stored: 10 * MiB } }], missing: [FILE_ID2] }),
  Release: ex(M.Release, await signed({ t: 'release' as const, fileId: FILE_ID })),
  Released: ex(M.Released, { t: 'released', fileId: FILE_ID, freed: 10 * MiB }),
  Status: ex(M.Status, { t: 'status' }),
  StatusReply: ex(M.StatusReply, { t: 'status-reply', fat: FAT, position: 42, digest: hexOf('log digest', 32), replicas: replicaStatus, vendors: [vendorStatus], files: 3, allocations: 1, repair: { chunks: 100, healthy: 90, under: 9, lost: 1, queued: 7, moving: 2, copies: 40, bytes: 160 * MiB, held: [VENDOR2] } }),
  Members: ex(M.Members, { t: 'members' }),
  MembersReply: ex(M.MembersReply, { t: 'members-reply', leader: FAT, members: REPLICAS }),
  Store: ex(M.Store, { t: 'store', header, hop: 0 }),
  Stored: ex(M.Stored, { t: 'stored', receipts: [receipt], failed: [{ vendor: VENDOR2, reason: 'cannot reach vendor2: connection refused' }] }),
  Fetch: ex(M.Fetch, await signed({ t: 'fetch' as const, fileId: FILE_ID, chunkId: CHUNK_ID })),
  ChunkReply: ex(M.ChunkReply, { t: 'chunk', size: SIZE0 }),
  OrderMsg: ex(M.OrderMsg, { t: 'order', order }),
  Echo: ex(M.Echo, { t: 'echo', seq: 3 }),
  Ok: ex(M.Ok, { t: 'ok' }),
  WriteRecords: ex(M.WriteRecords, await signed({ t: 'write-records' as const, writes: [{ scope: hexOf('record scope', 16), id: hexOf('record id', 32), value: 'c2VhbGVk' }, { scope: hexOf('record scope', 16), id: hexOf('record id 2', 32) }], expect: [{ scope: hexOf('record scope', 16), id: hexOf('record id', 32), absent: true }, { scope: hexOf('record scope', 16), id: hexOf('record id 2', 32), sha256: hexOf('version', 32) }] })),
  RecordsWritten: ex(M.RecordsWritten, { t: 'records-written', applied: true }),
  GetRecords: ex(M.GetRecords, await signed({ t: 'get-records' as const, scope: hexOf('record scope', 16), ids: [hexOf('record id', 32)] })),
  ListRecords: ex(M.ListRecords, await signed({ t: 'list-records' as const, scope: hexOf('record scope', 16), after: hexOf('record id', 32), limit: 100 })),
  RecordList: ex(M.RecordList, { t: 'record-list', records: [{ id: hexOf('record id', 32), value: 'c2VhbGVk' }], more: true }),
  ErrorReply: ex(M.ErrorReply, { t: 'error', code: 'ERR_NOT_FOUND', message: 'this vendor holds no such chunk' }),
  // fat-sync.ts
  Raft: ex(S.Raft, appendOf(ENTRIES)),
  SnapshotChunk: ex(S.SnapshotChunk, { t: 'snap-chunk', term: 7, id: hexOf('snapshot id', 16), seq: 3, records: [{ k: 'file/' + FILE_ID2, v: '{"fileId":', more: true }, { k: 'file/' + FILE_ID2, v: '"x"}' }, { k: 'file/' + FILE_ID, v: '{"fileId":"x"}' }, { k: 'meta/seq', v: '120' }], last: { index: 120, term: 7, members: REPLICAS } }),
  RaftAck: ex(S.RaftAck, { t: 'raft-ack' }),
  Remove: ex(S.Remove, { t: 'remove', peer: REPLICAS[2].peer, proof: hexOf('remove proof', 32) }),
  Removed: ex(S.Removed, { t: 'removed', leader: FAT, members: REPLICAS.slice(0, 2) }),
  Join: ex(S.Join, { t: 'join', addrs: REPLICAS[2].addrs, proof: hexOf('join proof', 32) }),
  JoinReply: ex(S.JoinReply, { t: 'join-reply', leader: FAT, members: REPLICAS }),
  Probe: ex(S.Probe, { t: 'probe', digest: true }),
  ProbeReply: ex(S.ProbeReply, { t: 'probe-reply', term: 7, leader: FAT, applied: 120, commit: 120, lastIndex: 128, digest: hexOf('log digest', 32) })
}

// ---------------------------------------------------------------- the checks tables the handlers use

interface Table { label: string, checks: Checks, maxBytes: number, reply: boolean }

// src/roles/fat/index.ts `REQUESTS` (not exported; a test below keeps this copy in step with the source)
const FAT_REQUESTS: Checks = { announce: M.Announce, allocate: M.Allocate, renew: M.Renew, commit: M.Commit, 'commit-part': M.CommitPart, get: M.GetTable, 'get-many': M.GetTables, list: M.List, release: M.Release, status: M.Status, members: M.Members, copied: M.Copied, drain: M.Drain, check: M.CheckFiles, 'write-records': M.WriteRecords, 'get-records': M.GetRecords, 'list-records': M.ListRecords }
// src/roles/fat/index.ts `WRITES` (not exported either): the replies a replica expects when it hands a write to the leader
const FAT_WRITES: Record<string, Checks> = { allocate: { allocated: M.Allocated }, renew: { allocated: M.Allocated }, commit: { ok: M.Ok }, 'commit-part': { ok: M.Ok }, release: { released: M.Released }, copied: { ok: M.Ok }, drain: { draining: M.Draining }, 'write-records': { 'records-written': M.RecordsWritten } }

/**
 * Fields messages may leave out (`opt` in the schema): an erase-chunks order's `chunks`, a vendor
 * record's `draining`, a table's `kind` and `packed`, an allocation's `packed`, a reply's `pack`.
 */
function optionalField (path: Array<string | number>): boolean {
  const key = path[path.length - 1]
  const parent = path[path.length - 2]
  if (key === 'packed' || key === 'zone' || key === 'since' || key === 'health' || key === 'repair') return true
  if (key === 'last') return path.length === 1
  // a vendor's logged state (in its record) and its state in status; the vendor-state op's is required
  if (key === 'state') return path.includes('vendor') || path.includes('vendors')
  if (key === 'restore') return path.length === 1
  // a record write without a value deletes; a condition names a version or absence; a list may start anywhere
  if (['expect', 'absent', 'sha256', 'after', 'limit'].includes(String(key))) return true
  // a commit's staged files, a get's first line, a page's next, a snapshot record's pieces
  if (key === 'staged' || key === 'next') return true
  if (key === 'from') return path.length === 1
  if (key === 'more') return path.length > 1
  if (key === 'value') return path.includes('writes')
  if (key === 'pack') return parent !== 'packed'
  if (key === 'kind') return !path.some(k => k === 'order' || k === 'orders')
  return key === 'draining' ? path.includes('vendor') : key === 'chunks' && path.some(k => k === 'order' || k === 'orders')
}

/** Every table a `serve` handler decodes requests with, and every table a caller decodes replies with (decodeReply adds `error`). */
const TABLES: Table[] = [
  { label: 'FAT requests (fat/index.ts REQUESTS)', checks: FAT_REQUESTS, maxBytes: MAX_FAT_MESSAGE, reply: false },
  { label: 'vendor store requests (vendor/index.ts)', checks: { store: M.Store }, maxBytes: MAX_VENDOR_MESSAGE, reply: false },
  { label: 'vendor fetch requests (vendor/index.ts)', checks: { fetch: M.Fetch, copy: M.Copy }, maxBytes: MAX_VENDOR_MESSAGE, reply: false },
  { label: 'vendor order requests (vendor/index.ts)', checks: { order: M.OrderMsg, transfer: M.TransferMsg }, maxBytes: MAX_FAT_MESSAGE, reply: false },
  { label: 'drain <- FAT draining', checks: { draining: M.Draining }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'vendor echo requests (protocol/echo.ts)', checks: { echo: M.Echo }, maxBytes: MAX_VENDOR_MESSAGE, reply: false },
  { label: 'user <- vendor echo', checks: { echo: M.Echo }, maxBytes: MAX_VENDOR_MESSAGE, reply: true },
  { label: 'user <- FAT allocated', checks: { allocated: M.Allocated }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT table', checks: { table: M.TableReply }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT tables', checks: { tables: M.Tables }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT released', checks: { released: M.Released }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT files', checks: { files: M.Files }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT checked', checks: { checked: M.Checked }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT records-written', checks: { 'records-written': M.RecordsWritten }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT record-list', checks: { 'record-list': M.RecordList }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT status-reply', checks: { 'status-reply': M.StatusReply }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'user <- FAT ok (commit)', checks: { ok: M.Ok }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'vendor <- FAT announced', checks: { announced: M.Announced }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'FAT <- vendor ok (order)', checks: { ok: M.Ok }, maxBytes: MAX_VENDOR_MESSAGE, reply: true },
  { label: 'sender <- vendor ok (store go-ahead)', checks: { ok: M.Ok }, maxBytes: MAX_VENDOR_MESSAGE, reply: true },
  { label: 'sender <- vendor stored', checks: { stored: M.Stored }, maxBytes: MAX_VENDOR_MESSAGE, reply: true },
  { label: 'user <- vendor chunk', checks: { chunk: M.ChunkReply }, maxBytes: MAX_VENDOR_MESSAGE, reply: true },
  { label: 'user <- FAT members-reply', checks: { 'members-reply': M.MembersReply }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'FAT sync requests (fat-sync.ts SYNC_REQUESTS)', checks: S.SYNC_REQUESTS, maxBytes: MAX_FAT_MESSAGE, reply: false },
  { label: 'replica <- replica raft-ack', checks: { 'raft-ack': S.RaftAck }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'operator <- replica removed', checks: { removed: S.Removed }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'new replica <- replica join-reply', checks: { 'join-reply': S.JoinReply }, maxBytes: MAX_FAT_MESSAGE, reply: true },
  { label: 'FAT status <- replica probe-reply', checks: { 'probe-reply': S.ProbeReply }, maxBytes: MAX_VENDOR_MESSAGE, reply: true }
]

/** Where one message is decoded: on its own, and in every handler table that admits it. */
function contextsFor (name: string): Table[] {
  const { check, msg } = EXAMPLES[name]
  const own: Table = { label: `{ ${msg.t as string} } alone`, checks: { [msg.t]: check }, maxBytes: 16 * MiB, reply: false }
  return [own, ...TABLES.filter(tb => Object.hasOwn(tb.checks, msg.t) || (msg.t === 'error' && tb.reply))]
}

// ---------------------------------------------------------------- helpers

const enc = new TextEncoder()
const utf8 = (s: string): Uint8Array => enc.encode(s)
const clone = <T>(v: T): T => structuredClone(v)

function describeError (err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message.slice(0, 200)}${err.stack != null ? `\n${err.stack.split('\n').slice(1, 4).join('\n')}` : ''}`
  return `non-Error ${String(err)}`
}

function assertMalformed (err: unknown, what = ''): void {
  if (!(err instanceof E.MalformedMessageError)) assert.fail(`expected MalformedMessageError${what !== '' ? ` for ${what}` : ''}, got ${describeError(err)}`)
  assert.equal(err.name, 'MalformedMessageError')
  assert.equal(err.code, 'ERR_MALFORMED')
}

function attempt (fn: () => unknown): { threw: false, value: any } | { threw: true, err: unknown } {
  try {
    return { threw: false, value: fn() }
  } catch (err) {
    return { threw: true, err }
  }
}

type Outcome = 'valid' | 'malformed' | 'remote error'

/**
 * Decodes `bytes` as the handler of `ctx` would (decode for requests, decodeReply for replies) and
 * checks the rule: a valid message, a MalformedMessageError, or (replies only) the remote's error
 * rethrown by its code. Anything else fails the test.
 */
function run (ctx: Table, bytes: Uint8Array, maxBytes = ctx.maxBytes): Outcome {
  const plain = attempt(() => decode(bytes, ctx.reply ? { ...ctx.checks, error: M.ErrorReply } : ctx.checks, maxBytes))
  if (plain.threw) assertMalformed(plain.err, ctx.label)
  if (ctx.reply) {
    const r = attempt(() => decodeReply(bytes, ctx.checks, maxBytes))
    if (plain.threw) {
      assert.ok(r.threw, 'decodeReply accepted what decode refused')
      assertMalformed(r.err, ctx.label)
      return 'malformed'
    }
    if (plain.value.t === 'error') {
      assert.ok(r.threw, 'decodeReply returned an error reply instead of throwing it')
      assert.ok(r.err instanceof E.StorError, `expected a StorError, got ${describeError(r.err)}`)
      assert.equal(r.err.code, plain.value.code)
      assert.equal(r.err.message, plain.value.message)
      return 'remote error'
    }
    assert.ok(!r.threw, `decodeReply refused what decode accepted: ${r.threw ? describeError(r.err) : ''}`)
    assert.deepEqual(r.value, plain.value)
  }
  if (plain.threw) return 'malformed'
  // whatever decodes is a clean, valid message: it re-encodes to something that decodes the same
  const msg = plain.value
  assert.equal(typeof msg.t, 'string')
  assert.deepEqual(decode(encode(msg), { ...ctx.checks, error: M.ErrorReply }, Infinity), msg)
  return 'valid'
}

function expectMalformed (ctx: Table, bytes: Uint8Array, what: string, maxBytes = ctx.maxBytes, messageRe?: RegExp): void {
  const plain = attempt(() => decode(bytes, ctx.reply ? { ...ctx.checks, error: M.ErrorReply } : ctx.checks, maxBytes))
  assert.ok(plain.threw, `${what} was accepted by ${ctx.label}`)
  assertMalformed(plain.err, `${what} in ${ctx.label}`)
  if (messageRe != null) assert.match((plain.err as Error).message, messageRe, what)
  assert.equal(run(ctx, bytes, maxBytes), 'malformed', what)
}

/**
 * A message over the size limit must be refused before it is parsed. codec.ts refuses it with
 * LimitError (ERR_LIMIT) since the last change to it, MalformedMessageError before: either is a
 * refusal the handler answers with its own code, so either passes here.
 */
function expectOversize (ctx: Table, bytes: Uint8Array, maxBytes: number, what: string): void {
  let r: ReturnType<typeof attempt> | undefined
  let rr: ReturnType<typeof attempt> | undefined
  const calls = countParsing(() => {
    r = attempt(() => decode(bytes, ctx.checks, maxBytes))
    if (ctx.reply) rr = attempt(() => decodeReply(bytes, ctx.checks, maxBytes))
  })
  assert.equal(calls, 0, `${what}: parsed before checking the size`)
  for (const x of rr != null ? [r, rr] : [r]) {
    assert.ok(x?.threw === true, `${what}: accepted`)
    const err = x.err
    if (!(err instanceof E.LimitError || err instanceof E.MalformedMessageError)) assert.fail(`${what}: expected LimitError or MalformedMessageError, got ${describeError(err)}`)
    assert.match(err.message, /over the limit/, what)
  }
}

const fmt = (p: Path): string => p.length === 0 ? '(root)' : p.map(k => typeof k === 'number' ? `[${k}]` : `.${k}`).join('')

function getAt (v: Json, p: Path): Json {
  return p.reduce((o, k) => o[k], v)
}

function setAt (v: Json, p: Path, value: unknown): Json {
  const out = clone(v)
  getAt(out, p.slice(0, -1))[p[p.length - 1]] = value
  return out
}

function deleteAt (v: Json, p: Path): Json {
  const out = clone(v)
  delete getAt(out, p.slice(0, -1))[p[p.length - 1]]
  return out
}

/** Every node below the root, with its path. */
function nodes (v: Json, at: Path = []): Array<{ path: Path, value: Json }> {
  const out: Array<{ path: Path, value: Json }> = []
  const children: Array<[string | number, Json]> = Array.isArray(v) ? v.map((x, i) => [i, x]) : (v != null && typeof v === 'object') ? Object.entries(v) : []
  for (const [k, x] of children) {
    out.push({ path: [...at, k], value: x })
    out.push(...nodes(x, [...at, k]))
  }
  return out
}

const isObject = (v: unknown): boolean => v != null && typeof v === 'object' && !Array.isArray(v)
const objectPaths = (v: Json): Path[] => [[], ...nodes(v).filter(n => isObject(n.value)).map(n => n.path)]
/** Fields that are maps (schema.ts dict): their entries are not fields, removing one leaves a valid map. */
const DICTS = new Set(['grants'])
const inDict = (p: Path): boolean => p.length >= 2 && DICTS.has(String(p[p.length - 2]))
const fieldPaths = (v: Json): Path[] => nodes(v).filter(n => typeof n.path[n.path.length - 1] === 'string' && !inDict(n.path)).map(n => n.path)
const pathsOf = (v: Json, type: string): Path[] => nodes(v).filter(n => jsonType(n.value) === type).map(n => n.path)

/** The JSON type a value has once serialized: `missing` when JSON.stringify drops it. */
function jsonType (v: unknown): string {
  const s = JSON.stringify(v)
  if (s === undefined) return 'missing'
  const j = JSON.parse(s)
  return j === null ? 'null' : Array.isArray(j) ? 'array' : typeof j
}

/**
 * Longest list each list field takes (messages.ts, fat-sync.ts). Some names differ by where they
 * are: `vendors` between the two replies that carry it, `orders` between Announced and the ops of
 * the log, `replicas` between StatusReply's replica set and a chunk's replicas.
 */
function listLimit (name: string, path: Path): number {
  const key = String(path[path.length - 1])
  if (key === 'vendors') return name === 'TableReply' || name === 'Tables' ? 1024 : 10_000
  if (key === 'stats') return name === 'TableReply' || name === 'Tables' ? 1024 : MAX_CANDIDATES
  if (key === 'orders') return path.includes('entries') ? 100_000 : 10_000
  if (key === 'replicas' && name === 'StatusReply' && path.length === 1) return 15
  if (key === 'chunks' && path.some(k => k === 'order' || k === 'orders')) return M.MAX_CHUNK_LIST
  if (key === 'ids' && name === 'GetRecords') return M.MAX_RECORDS_LISTED
  if (key === 'records' && name === 'RecordList') return M.MAX_RECORDS_LISTED
  if (key === 'chunks' && (name === 'CommitPart' || (path.includes('op') && path.length === 5 && path[2] === OP_TAGS.indexOf('commit-part')))) return M.MAX_PART_CHUNKS
  const limits: Record<string, number> = {
    addrs: 16, devices: 256, done: 10_000, candidates: MAX_CANDIDATES, route: MAX_REPLICAS, receipts: MAX_REPLICAS,
    failed: MAX_REPLICAS, replicas: MAX_REPLICAS, keep: 1_000_000, chunks: 1_000_000, files: 100_000,
    sizes: M.MAX_FILES, fileIds: M.MAX_FILES, staged: M.MAX_FILES, tables: M.MAX_FILES, packs: M.MAX_FILES, packed: M.MAX_FILES, fats: 15, members: 15, entries: 1000, records: 1_000_000, ids: 10_000, transfers: 1000, lost: 1000, restore: 1000, fromAddrs: 16, writes: M.MAX_RECORD_WRITES, expect: 16,
    missing: M.MAX_FILES, held: 10_000, copies: S.MAX_TRANSFERS_PER_OP
  }
  const limit = limits[key]
  assert.ok(limit != null, `no list limit known for ${name}${fmt(path)}: add it to listLimit`)
  return limit
}

// byte-level mutations of an encoding
type Mutation =
  | { op: 'flip', at: number, x: number }
  | { op: 'set', at: number, byte: number }
  | { op: 'insert', at: number, byte: number }
  | { op: 'delete', at: number, len: number }
  | { op: 'truncate', at: number }
  | { op: 'duplicate', at: number, len: number }
  | { op: 'swap', at: number, to: number }

const jsonByte = fc.constantFrom(...'{}[]",:0123456789-+.eE \\tfnru\u00ff'.split('').map(c => c.charCodeAt(0) & 0xff))
const anyByte = fc.oneof(fc.integer({ min: 0, max: 255 }), jsonByte)
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), x: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: anyByte }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), byte: anyByte }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ op: fc.constant('swap' as const), at: fc.nat(), to: fc.nat() })
)

function mutate (bytes: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = Array.from(bytes)
  for (const m of muts) {
    const at = b.length === 0 ? 0 : m.at % b.length
    switch (m.op) {
      case 'flip': if (b.length > 0) b[at] ^= m.x; break
      case 'set': if (b.length > 0) b[at] = m.byte; break
      case 'insert': b.splice(m.at % (b.length + 1), 0, m.byte); break
      case 'delete': b.splice(at, m.len); break
      case 'truncate': b = b.slice(0, m.at % (b.length + 1)); break
      case 'duplicate': b.splice(at, 0, ...b.slice(at, at + m.len)); break
      case 'swap': if (b.length > 0) { const to = m.to % b.length; [b[at], b[to]] = [b[to], b[at]] } break
    }
  }
  return Uint8Array.from(b)
}

/** Bytes of `msg` padded with trailing JSON whitespace to exactly `length` bytes. */
function padded (msg: Json, length: number): Uint8Array {
  const body = encode(msg)
  assert.ok(body.byteLength <= length)
  const out = new Uint8Array(length).fill(0x20)
  out.set(body)
  return out
}

/** Counts calls of JSON.parse and TextDecoder#decode while `fn` runs. */
function countParsing (fn: () => void): number {
  const parse = JSON.parse
  const textDecode = TextDecoder.prototype.decode // eslint-disable-line @typescript-eslint/unbound-method
  let calls = 0
  JSON.parse = function (...args: Parameters<typeof JSON.parse>) { calls++; return parse.apply(JSON, args) }
  TextDecoder.prototype.decode = function (this: TextDecoder, ...args: Parameters<TextDecoder['decode']>) { calls++; return textDecode.apply(this, args) }
  try {
    fn()
  } finally {
    JSON.parse = parse
    TextDecoder.prototype.decode = textDecode
  }
  return calls
}

const badInteger = fc.oneof(
  fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }),
  fc.double({ min: -1e15, max: 1e15, noNaN: true }).filter(x => !Number.isInteger(x)),
  fc.integer({ min: 2 ** 50 + 1, max: Number.MAX_SAFE_INTEGER }),
  fc.constantFrom(2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e21, 1e300, Number.MAX_VALUE, -1, 0.5, 1.5, -0.5, Number.EPSILON)
)

// ---------------------------------------------------------------- tests

describe('protocol', function () {
  describe('fixtures', function () {
    it('has a valid example of every exported message with a `t` field', function () {
      const tMessages = new Map<string, { t: string, check: unknown }>()
      for (const mod of [M, S] as Array<Record<string, unknown>>) {
        for (const [name, value] of Object.entries(mod)) {
          if (typeof value !== 'function') continue
          // obj() checks fields in order and every message declares `t` first: its error names the type
          const r = attempt(() => (value as Check<unknown>)({}, '$'))
          assert.ok(r.threw, `${name} accepts {}`)
          const m = /^\$\.t: expected one of (.+)$/.exec((r.err as Error).message)
          if (m != null) {
            assert.ok(!tMessages.has(name), `${name} is exported by both messages.ts and fat-sync.ts`)
            tMessages.set(name, { t: m[1], check: value })
          }
        }
      }
      assert.deepEqual([...tMessages.keys()].sort(), Object.keys(EXAMPLES).sort())
      for (const [name, { t, check }] of tMessages) {
        assert.equal(EXAMPLES[name].msg.t, t, name)
        assert.equal(EXAMPLES[name].check, check, name)
      }
      // one `t` per message, across both protocols (SYNC_REQUESTS and REQUESTS key on it)
      const ts = [...tMessages.values()].map(x => x.t)
      assert.equal(new Set(ts).size, ts.length)
    })

    it('the Raft example carries one entry of every Op variant, and every other Raft message type is valid', function () {
      const r = attempt(() => S.Op({ op: '\u0000' }, '$'))
      assert.ok(r.threw)
      const m = /^\$\.op: expected one of (.+)$/.exec((r.err as Error).message)
      assert.ok(m != null, (r.err as Error).message)
      const variants = m[1].split(', ')
      assert.deepEqual([...variants].sort(), [...OP_TAGS].sort())
      assert.deepEqual(EXAMPLES.Raft.msg.msg.entries.map((e: S.Entry) => e.op.op), OP_TAGS)
      for (const m of RAFT_MESSAGES) assert.deepEqual(S.Raft({ t: 'raft', msg: clone(m) }, '$'), { t: 'raft', msg: m }, m.type)
      assert.throws(() => S.Raft({ t: 'raft', msg: { type: 'snap', term: 1 } }, '$'), /expected one of/)
      for (const op of [...Object.values(OPS), ...MORE_OPS]) assert.deepEqual(S.Op(clone(op), 'op'), op, op.op)
    })

    it('every example passes its check unchanged', function () {
      for (const [name, { check, msg }] of Object.entries(EXAMPLES)) {
        assert.deepEqual(check(clone(msg), name), msg, name)
      }
    })

    it('the handler tables here are the ones in src/roles and src/protocol', function () {
      const exported = (mod: string, n: string): unknown => (mod === 'S' ? S as Record<string, unknown> : M as Record<string, unknown>)[n]
      const sameTable = (a: Checks, b: Checks): boolean => Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, c]) => Object.hasOwn(b, k) && b[k] === c)
      const fatSrc = readFileSync(new URL('../src/roles/fat/index.ts', import.meta.url), 'utf8')
      const m = /const REQUESTS = \{([^}]*)\}/.exec(fatSrc)
      assert.ok(m != null, 'REQUESTS not found in src/roles/fat/index.ts')
      const parsed: Record<string, string> = Object.fromEntries(m[1].split(',').map(e => e.trim().split(/:\s*M\./)).map(([k, n]) => [k.replace(/'/g, ''), n]))
      assert.deepEqual(Object.keys(parsed).sort(), Object.keys(FAT_REQUESTS).sort())
      for (const [k, n] of Object.entries(parsed)) assert.equal(FAT_REQUESTS[k], (M as Record<string, unknown>)[n], k)
      assert.match(fatSrc, /serve\(node, FAT_PROTOCOL, \{ checks: REQUESTS, maxMessage: MAX_FAT_MESSAGE,/)
      // WRITES: the reply tables of forwarded writes, decoded with maxReply MAX_FAT_MESSAGE
      const w = /const WRITES\b[^=]*= \{\n([\s\S]*?)\n\}/.exec(fatSrc)
      assert.ok(w != null, 'WRITES not found in src/roles/fat/index.ts')
      const writes: Record<string, Checks> = {}
      for (const line of w[1].split('\n')) {
        const e = /^\s*'?([a-z-]+)'?: \{ ((?:'?[a-z-]+'?: M\.[A-Za-z]+(?:, )?)+) \},?$/.exec(line)
        assert.ok(e != null, `cannot read WRITES line ${JSON.stringify(line)}`)
        writes[e[1]] = Object.fromEntries<Check<any>>(e[2].split(', ').map(x => x.split(': M.')).map(([k, n]) => [k.replace(/'/g, ''), exported('M', n) as Check<any>]))
      }
      assert.deepEqual(Object.keys(writes).sort(), Object.keys(FAT_WRITES).sort())
      for (const [k, tb] of Object.entries(FAT_WRITES)) {
        assert.ok(sameTable(writes[k], tb), `WRITES.${k}`)
        assert.ok(Object.hasOwn(FAT_REQUESTS, k), `WRITES.${k} is no FAT request`)
        assert.ok(TABLES.some(x => x.reply && x.maxBytes === MAX_FAT_MESSAGE && sameTable(x.checks, tb)), `WRITES.${k} is not covered by TABLES`)
      }
      assert.match(fatSrc, /FAT_PROTOCOL, msg, WRITES\[msg\.t\], \{ maxReply: MAX_FAT_MESSAGE,/)
      // SYNC_REQUESTS: what the replicas serve on /stor/fat-sync
      const replSrc = readFileSync(new URL('../src/roles/fat/replication.ts', import.meta.url), 'utf8')
      assert.match(replSrc, /serve\(node, FAT_SYNC_PROTOCOL, \{ checks: S\.SYNC_REQUESTS, maxMessage: MAX_FAT_MESSAGE,/)
      assert.deepEqual(S.SYNC_REQUESTS, { raft: S.Raft, 'snap-chunk': S.SnapshotChunk, join: S.Join, remove: S.Remove, probe: S.Probe })
      assert.ok(TABLES.some(x => x.checks === S.SYNC_REQUESTS && x.maxBytes === MAX_FAT_MESSAGE && !x.reply))
      // every inline `{ key: M.Check }` or `{ key: S.Check }` table in the handlers and callers is one of TABLES
      const files = ['../src/roles/fat/index.ts', '../src/roles/fat/replication.ts', '../src/roles/vendor/index.ts', '../src/roles/user/index.ts', '../src/protocol/chunk-transfer.ts']
      let found = 0
      for (const f of files) {
        const src = readFileSync(new URL(f, import.meta.url), 'utf8')
        for (const lit of src.matchAll(/\{ ((?:'?[a-z-]+'?: [MS]\.[A-Za-z]+(?:, )?)+) \}/g)) {
          if (lit[0] === m[0].slice('const REQUESTS = '.length)) continue
          const entries = lit[1].split(', ').map(e => /^'?([a-z-]+)'?: ([MS])\.([A-Za-z]+)$/.exec(e) as RegExpExecArray)
          const checks = Object.fromEntries(entries.map(([, k, mod, n]) => [k, exported(mod, n)]))
          assert.ok(Object.values(checks).every(c => typeof c === 'function'), `${f}: ${lit[0]} names no export`)
          assert.ok(TABLES.some(tb => sameTable(checks as Checks, tb.checks)), `${f}: table ${lit[0]} is not covered by TABLES in this file`)
          found++
        }
      }
      assert.ok(found >= 15, `found only ${found} tables in the sources`)
    })
  })

  for (const name of Object.keys(EXAMPLES)) {
    describe(`${name}`, function () {
      const { check, msg } = EXAMPLES[name]
      const t: string = msg.t
      const bytes = encode(msg)
      const ctxs = contextsFor(name)
      const ctxArb = fc.constantFrom(...ctxs)

      it('round-trips through encode and decode, alone and in its handler tables', function () {
        assert.ok(ctxs.length >= 2, `${name} is used by no handler table`)
        assert.deepEqual(check(JSON.parse(JSON.stringify(msg)), t), msg)
        for (const ctx of ctxs) {
          const expected = ctx.reply && t === 'error' ? 'remote error' : 'valid'
          assert.equal(run(ctx, bytes), expected, ctx.label)
          if (expected === 'valid') {
            const decoded = ctx.reply ? decodeReply(bytes, ctx.checks, ctx.maxBytes) : decode(bytes, ctx.checks, ctx.maxBytes)
            assert.deepEqual(decoded, msg, ctx.label)
            assert.deepEqual(encode(decoded), bytes)
          }
        }
      })

      it('is refused by every handler table that does not expect it', function () {
        for (const tb of TABLES) {
          if (Object.hasOwn(tb.checks, t) || (tb.reply && t === 'error')) continue
          expectMalformed(tb, bytes, `a ${t} message`, tb.maxBytes, /unexpected message type/)
        }
      })

      it('(a) random bytes are a valid message or MalformedMessageError, nothing else', function () {
        const prefix = utf8(`{"t":"${t}",`)
        const junk = fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.uint8Array({ maxLength: 300 }).map(b => Uint8Array.from([...prefix, ...b])),
          fc.string({ unit: 'binary', maxLength: 200 }).map(s => utf8(`{"t":"${t}",${s}`))
        )
        fc.assert(fc.property(ctxArb, junk, (ctx, b) => { run(ctx, b) }), { numRuns: RUNS })
      })

      it('(a) random JSON values and objects are a valid message or MalformedMessageError', function () {
        const value = fc.oneof(
          fc.jsonValue(),
          fc.dictionary(fc.string(), fc.jsonValue()).map(d => ({ ...d, t })),
          fc.record({ t: fc.constant(t), x: fc.jsonValue() }, { requiredKeys: ['t'] })
        )
        fc.assert(fc.property(ctxArb, value, (ctx, v) => { run(ctx, utf8(JSON.stringify(v) ?? 'undefined')) }), { numRuns: RUNS })
      })

      it('(b) byte mutations of the valid encoding decode to a valid message or MalformedMessageError', function () {
        fc.assert(fc.property(ctxArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (ctx, muts) => { run(ctx, mutate(bytes, muts)) }), { numRuns: RUNS * 2 })
      })

      it('(c) removing any field is refused (but an optional one)', function () {
        for (const path of fieldPaths(msg).filter(p => !optionalField(p))) {
          for (const ctx of ctxs) expectMalformed(ctx, encode(deleteAt(msg, path)), `${name} without ${fmt(path)}`)
        }
      })

      it('(c) an unknown field at any level is refused', function () {
        const paths = objectPaths(msg)
        const key = fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('T', 'sig2', 'extra', 'Fileid', '', ' t', 'constructor', 'toString', '__proto__', 'hasOwnProperty'))
        fc.assert(fc.property(ctxArb, fc.constantFrom(...paths), key, fc.jsonValue(), (ctx, path, k, v) => {
          const target = getAt(msg, path)
          fc.pre(!Object.hasOwn(target, k))
          const m = clone(msg)
          // defineProperty, so that `__proto__` becomes an own field as it does in JSON.parse
          Object.defineProperty(getAt(m, path), k, { value: v, enumerable: true, writable: true, configurable: true })
          expectMalformed(ctx, encode(m), `${name}${fmt(path)} with unknown field ${JSON.stringify(k)}`)
        }), { numRuns: RUNS })
      })

      it('(c) a value of another JSON type anywhere is refused', function () {
        const paths = nodes(msg).map(n => n.path)
        fc.assert(fc.property(ctxArb, fc.constantFrom(...paths), fc.anything(), (ctx, path, v) => {
          fc.pre(jsonType(v) !== jsonType(getAt(msg, path)))
          // an entry of a map (e.g. a grant) set to a value JSON drops is that entry removed: still valid
          fc.pre(!(jsonType(v) === 'missing' && DICTS.has(String(path[path.length - 2]))))
          // so is an optional field (`opt`) set to a value JSON drops: left out, as it may be
          fc.pre(!(jsonType(v) === 'missing' && optionalField(path)))
          expectMalformed(ctx, encode(setAt(msg, path, v)), `${name}${fmt(path)} = ${String(JSON.stringify(v)).slice(0, 80)}`)
        }), { numRuns: RUNS })
      })

      // a snapshot record is one table record, as large as a file's table: its limit is tested below
      const strings = pathsOf(msg, 'string').filter(p => !(name === 'SnapshotChunk' && p[p.length - 1] === 'v'))
      it('(c) an over-long string in any string field is refused', function () {
        for (const path of strings) {
          const s: string = getAt(msg, path)
          // a record's sealed value may be long: past its own limit
          const over = path[path.length - 1] === 'value' && path.some(k => k === 'writes' || k === 'records') ? Math.ceil(M.MAX_RECORD_VALUE / 3) * 4 + 8 : 5000
          const long = (s === '' ? 'a' : s).repeat(Math.ceil(over / Math.max(1, s.length)))
          for (const ctx of ctxs) expectMalformed(ctx, encode(setAt(msg, path, long)), `${name}${fmt(path)} of ${long.length} chars`)
        }
      })

      const numbers = pathsOf(msg, 'number')
      if (numbers.length > 0) {
        it('(c) a negative, fractional or huge integer in any number field is refused', function () {
          fc.assert(fc.property(ctxArb, fc.constantFrom(...numbers), badInteger, (ctx, path, n) => {
            expectMalformed(ctx, encode(setAt(msg, path, n)), `${name}${fmt(path)} = ${n}`)
          }), { numRuns: RUNS })
        })
      }

      const lists = pathsOf(msg, 'array')
      if (lists.length > 0) {
        it('(c) an over-long list in any list field is refused, a list at the limit is not', function () {
          this.timeout(20_000)
          const own = ctxs[0]
          for (const path of lists) {
            const limit = listLimit(name, path)
            const item = getAt(msg, path)[0]
            // lists of real items when that stays small; otherwise (or for an empty list) items that cost nothing (arr() counts first)
            const real = item !== undefined && limit * JSON.stringify(item).length <= 4 * MiB
            const over = new Array(limit + 1).fill(real ? item : 0)
            expectMalformed(own, encode(setAt(msg, path, over)), `${name}${fmt(path)} of ${limit + 1} items`, Infinity, new RegExp(`more than ${limit} items`))
            if (real) {
              assert.equal(run(own, encode(setAt(msg, path, over.slice(1))), Infinity), 'valid', `${name}${fmt(path)} of ${limit} items`)
            }
          }
        })
      }

      it('(d) a message over maxBytes is refused before parsing (LimitError), one at maxBytes is not', function () {
        fc.assert(fc.property(fc.integer({ min: 0, max: bytes.byteLength * 2 }), maxBytes => {
          if (bytes.byteLength > maxBytes) {
            expectOversize(ctxs[0], bytes, maxBytes, `${bytes.byteLength} bytes over ${maxBytes}`)
          } else {
            assert.deepEqual(decode(bytes, { [t]: check }, maxBytes), msg)
          }
        }), { numRuns: RUNS })
        for (const ctx of ctxs.slice(1)) {
          expectOversize(ctx, padded(msg, ctx.maxBytes + 1), ctx.maxBytes, `${ctx.label}: ${ctx.maxBytes + 1} bytes`)
        }
      })
    })
  }

  describe('decode', function () {
    it('accepts a message of exactly the handler limit and refuses one byte more', function () {
      this.timeout(20_000)
      for (const tb of TABLES.filter(tb => !tb.reply)) {
        const name = Object.keys(EXAMPLES).find(n => Object.hasOwn(tb.checks, EXAMPLES[n].msg.t)) as string
        const { msg } = EXAMPLES[name]
        assert.deepEqual(decode(padded(msg, tb.maxBytes), tb.checks, tb.maxBytes), msg, tb.label)
        expectOversize(tb, padded(msg, tb.maxBytes + 1), tb.maxBytes, `${tb.label} over its limit`)
      }
    })

    it('refuses `t` values that name Object.prototype members or are not strings', function () {
      const kinds: unknown[] = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '', 'ANNOUNCE', 'announce ', null, 1, true, [], {}, ['announce'], { t: 'announce' }]
      for (const tb of TABLES) {
        for (const kind of kinds) expectMalformed(tb, utf8(JSON.stringify({ t: kind })), `t = ${JSON.stringify(kind)}`, tb.maxBytes, /unexpected message type/)
      }
    })

    it('refuses JSON that is not an object, and input that is not UTF-8 JSON', function () {
      const inputs = ['', ' ', 'null', '0', '"ok"', '[]', '[{"t":"ok"}]', 'true', '{', '{"t":"ok"', '{"t":"ok"}}', '{"t":"ok"} {}', "{'t':'ok'}", '{"t":"ok",}', 'NaN']
      const raw = [utf8(''), Uint8Array.of(0xff), Uint8Array.from([...utf8('{"t":"ok'), 0xc0, 0x80, ...utf8('"}')]), Uint8Array.from([...utf8('{"t":"o'), 0xed, 0xa0, 0x80, ...utf8('k"}')]), Uint8Array.from([0xfe, 0xff, ...utf8('{"t":"ok"}')])]
      const ok = TABLES.find(tb => tb.label.startsWith('user <- FAT ok')) as Table
      for (const b of [...inputs.map(utf8), ...raw]) expectMalformed(ok, b, JSON.stringify(new TextDecoder().decode(b)))
    })

    it('accepts the values at the edges of every string limit and refuses one more', function () {
      const cases: Array<[string, Path, number, (n: number) => string, number?]> = [
        ['Files', ['files', 0, 'name'], 255, n => 'é'.repeat(n)],
        ['Commit', ['tables', 0, 'name'], 255, n => 'a'.repeat(n)],
        ['ErrorReply', ['message'], 1000, n => 'x'.repeat(n)],
        ['ErrorReply', ['code'], 40, n => 'ERR_' + 'X'.repeat(n - 4)],
        ['Announce', ['devices', 0, 'path'], 4096, n => '/'.repeat(n)],
        ['Announce', ['addrs', 0], 300, n => '/' + 'a'.repeat(n - 1)],
        ['Stored', ['failed', 0, 'reason'], 500, n => 'r'.repeat(n)],
        ['Commit', ['tables', 0, 'cipher', 'wrappedKey'], 256, n => 'ab'.repeat(n / 2), 2],
        ['Announced', ['fats', 0, 'addrs', 0], 300, n => '/' + 'a'.repeat(n - 1)],
        ['MembersReply', ['leader'], 128, n => 'x'.repeat(n)],
        ['JoinReply', ['leader'], 128, n => 'x'.repeat(n)],
        ['ProbeReply', ['leader'], 128, n => 'x'.repeat(n)],
        ['Removed', ['leader'], 128, n => 'x'.repeat(n)],
        ['Join', ['proof'], 64, n => 'ab'.repeat(n / 2), 2],
        ['SnapshotChunk', ['records', 0, 'k'], 512, n => 'file/'.padEnd(n, 'a')],
        ['SnapshotChunk', ['records', 0, 'v'], MAX_FAT_MESSAGE - MiB, n => 'a'.repeat(n)],
        ['StatusReply', ['replicas', 0, 'digest'], 64, n => 'cd'.repeat(n / 2), 2],
        ['Raft', [...opIn('vendor'), 'vendor', 'devices', 0, 'path'], 4096, n => '/'.repeat(n)],
        ['Raft', [...opIn('members'), 'members', 0, 'addrs', 0], 300, n => '/' + 'a'.repeat(n - 1)],
        ['Raft', [...opIn('commit'), 'tables', 0, 'name'], 255, n => 'a'.repeat(n)]
      ]
      for (const [name, path, max, make, step = 1] of cases) {
        const { check, msg } = EXAMPLES[name]
        const own: Table = { label: name, checks: { [msg.t]: check }, maxBytes: Infinity, reply: false }
        assert.equal(run(own, encode(setAt(msg, path, make(max)))), 'valid', `${name}${fmt(path)} of ${max}`)
        expectMalformed(own, encode(setAt(msg, path, make(max + step))), `${name}${fmt(path)} of ${max + step}`, Infinity, new RegExp(`longer than ${max}`))
      }
    })

    it('refuses strings of the wrong form: hex, peer ids, addresses, codes, enumerations', function () {
      const cases: Array<[string, Path, unknown[]]> = [
        ['GetTable', ['fileId'], [FILE_ID.toUpperCase(), FILE_ID.slice(1), FILE_ID + '0', FILE_ID.slice(2) + 'zz', '', ` ${FILE_ID.slice(1)}`]],
        ['Fetch', ['chunkId'], [CHUNK_ID.slice(2), FILE_ID]],
        ['OrderMsg', ['order', 'sig'], [order.sig.slice(2), order.sig + '00', order.sig.toUpperCase(), 'g' + order.sig.slice(1)]],
        ['OrderMsg', ['order', 'kind'], ['Settle', 'delete', '']],
        ['OrderMsg', ['order', 'vendor'], ['', 'QmNotAPeer', VENDOR.slice(0, -1), VENDOR + '1', VENDOR.replace(/^12D3/, '12D4'), 'not a peer id', `${VENDOR}0`]],
        ['StatusReply', ['fat'], ['12D3KooW', '1'.repeat(129)]],
        ['Commit', ['tables', 0, 'cipher', 'alg'], ['aes-128-gcm', 'AES-256-GCM']],
        ['Commit', ['tables', 0, 'cipher', 'wrappedKey'], ['abc', 'AB', 'zz']],
        ['StatusReply', ['digest'], [hexOf('d', 31), hexOf('d', 33), '']],
        ['Announce', ['addrs', 0], ['ip4/127.0.0.1', '/ip4/127.0.0.1 /tcp/1', '/ip4/\u00e9', '/\n', '']],
        ['ErrorReply', ['code'], ['err_not_found', 'ERR_', 'ERR_1', 'NOT_FOUND', 'ERR_X\n']],
        ['Announced', ['fats', 0, 'peer'], ['', 'QmNotAPeer', FAT.slice(0, -1), FAT + '1', 'x']],
        ['MembersReply', ['members', 0, 'peer'], ['', FAT.slice(0, -1), `${FAT2}0`]],
        ['JoinReply', ['members', 0, 'peer'], ['', FAT.slice(0, -1)]],
        ['StatusReply', ['replicas', 0, 'peer'], ['', FAT.slice(0, -1)]],
        ['StatusReply', ['replicas', 0, 'digest'], ['a', 'AB', 'zz', hexOf('d', 31).toUpperCase()]],
        ['Join', ['proof'], ['abc', 'AB', 'zz', ' ', hexOf('p', 32).toUpperCase()]],
        ['ProbeReply', ['digest'], [hexOf('d', 31), hexOf('d', 32).toUpperCase()]],
        ['Raft', [...opIn('members'), 'op'], ['Members', 'member', '', 'noop ']],
        ['Raft', [...opIn('members'), 'members', 0, 'peer'], ['', 'QmNotAPeer', FAT.slice(0, -1)]],
        ['Raft', [...opIn('vendor'), 'vendor', 'peer'], [USER + '1', '']],
        ['Raft', [...opIn('vendor'), 'vendor', 'addrs', 0], ['ip4/127.0.0.1', '']],
        ['Raft', [...opIn('allocate'), 'allocation', 'owner'], ['', USER.slice(0, -1)]],
        ['Raft', [...opIn('allocate'), 'allocation', 'fileIds', 0], [FILE_ID.toUpperCase(), CHUNK_ID]],
        ['Raft', [...opIn('commit'), 'orders', 0, 'kind'], ['Settle', 'delete', '']],
        ['Raft', [...opIn('commit'), 'orders', 0, 'keep', 0], [FILE_ID, CHUNK_ID.toUpperCase()]],
        ['Raft', [...opIn('expire'), 'allocationId'], [CHUNK_ID, '']],
        ['Raft', [...opIn('release'), 'orders', 0, 'scope'], [CHUNK_ID, FILE_ID.slice(2)]],
        ['Raft', [...opIn('delivered'), 'vendor'], ['', VENDOR.slice(0, -1)]],
        ['Raft', [...opIn('delivered'), 'ids', 0], [FILE_ID.toUpperCase(), CHUNK_ID, '']]
      ]
      for (const [name, path, values] of cases) {
        const { check, msg } = EXAMPLES[name]
        const own: Table = { label: name, checks: { [msg.t]: check }, maxBytes: Infinity, reply: false }
        for (const v of values) expectMalformed(own, encode(setAt(msg, path, v)), `${name}${fmt(path)} = ${JSON.stringify(v)}`)
      }
    })

    it('accepts the ends of every integer range and refuses one beyond', function () {
      const cases: Array<[string, Path, number, number]> = [
        ['Allocate', ['replicas'], 1, MAX_REPLICAS],
        ['Allocate', ['chunkSize'], 1, MAX_CHUNK_SIZE],
        ['Commit', ['tables', 0, 'chunkSize'], 1, MAX_CHUNK_SIZE],
        ['Commit', ['tables', 0, 'chunks', 0, 'size'], 0, MAX_WIRE_CHUNK],
        ['List', ['auth', 'time'], 0, 2 ** 48],
        ['Allocate', ['sizes', 0], 0, 2 ** 50],
        ['StatusReply', ['position'], 0, 2 ** 48],
        ['Announced', ['heartbeatMs'], 100, 3_600_000],
        ['Announce', ['inflight'], 0, 1_000_000],
        ['Store', ['hop'], 0, MAX_REPLICAS - 1],
        ['Store', ['header', 'pieces'], 1, MAX_PIECES],
        ['Store', ['header', 'size'], 0, MAX_WIRE_CHUNK],
        ['Commit', ['tables', 0, 'created'], 0, 2 ** 48],
        ['Commit', ['tables', 0, 'chunks', 0, 'i'], 0, 2 ** 40],
        ['StatusReply', ['files'], 0, 2 ** 40],
        ['ChunkReply', ['size'], 0, MAX_WIRE_CHUNK],
        ['StatusReply', ['replicas', 0, 'term'], 0, 2 ** 48],
        ['StatusReply', ['replicas', 0, 'applied'], 0, 2 ** 48],
        ['SnapshotChunk', ['last', 'index'], 0, 2 ** 48],
        ['SnapshotChunk', ['seq'], 0, 2 ** 32],
        ['Raft', ['msg', 'term'], 0, 2 ** 48],
        ['Raft', ['msg', 'prevIndex'], 0, 2 ** 48],
        ['Raft', ['msg', 'prevTerm'], 0, 2 ** 48],
        ['Raft', ['msg', 'commit'], 0, 2 ** 48],
        ['Raft', ['msg', 'entries', 0, 'index'], 0, 2 ** 48],
        ['Raft', ['msg', 'entries', 0, 'term'], 0, 2 ** 48],
        ['Raft', ['msg', 'entries', 0, 'at'], 0, 2 ** 48],
        ['Raft', [...opIn('vendor'), 'vendor', 'capacity'], 0, 2 ** 50],
        ['Raft', [...opIn('vendor'), 'vendor', 'joined'], 0, 2 ** 48],
        ['Raft', [...opIn('vendor'), 'vendor', 'devices', 0, 'free'], 0, 2 ** 50],
        ['Raft', [...opIn('allocate'), 'allocation', 'sizes', 0], 0, 2 ** 50],
        ['Raft', [...opIn('allocate'), 'allocation', 'replicas'], 1, MAX_REPLICAS],
        ['Raft', [...opIn('allocate'), 'allocation', 'chunkSize'], 1, 2 ** 30],
        ['Raft', [...opIn('allocate'), 'allocation', 'expires'], 0, 2 ** 48],
        ['Raft', [...opIn('allocate'), 'allocation', 'grants', VENDOR], 0, 2 ** 50],
        ['Raft', [...opIn('commit'), 'tables', 0, 'size'], 0, 2 ** 50],
        ['Raft', [...opIn('commit'), 'orders', 0, 'issued'], 0, 2 ** 48],
        ['Raft', [...opIn('release'), 'orders', 0, 'issued'], 0, 2 ** 48],
        ['ProbeReply', ['term'], 0, 2 ** 48],
        ['ProbeReply', ['applied'], 0, 2 ** 48],
        ['ProbeReply', ['commit'], 0, 2 ** 48],
        ['ProbeReply', ['lastIndex'], 0, 2 ** 48]
      ]
      for (const [name, path, min, max] of cases) {
        const { check, msg } = EXAMPLES[name]
        const own: Table = { label: name, checks: { [msg.t]: check }, maxBytes: Infinity, reply: false }
        for (const ok of [min, max]) assert.equal(run(own, encode(setAt(msg, path, ok))), 'valid', `${name}${fmt(path)} = ${ok}`)
        for (const bad of [min - 1, max + 1]) expectMalformed(own, encode(setAt(msg, path, bad)), `${name}${fmt(path)} = ${bad}`, Infinity, /out of range/)
      }
    })

    it('never hangs on big or deeply nested input in a known field', function () {
      this.timeout(20_000)
      const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n)
      const ok = TABLES[0]
      const started = Date.now()
      expectMalformed(ok, utf8(`{"t":"list","x":${deep(200_000)}}`), 'a deeply nested unknown field', MAX_FAT_MESSAGE)
      expectMalformed(ok, utf8(`{"t":"allocate","sizes":${deep(200_000)},"replicas":1,"chunkSize":1}`), 'a deeply nested known field', MAX_FAT_MESSAGE)
      expectMalformed(ok, utf8(`{"t":"announce","addrs":[],"capacity":0,"free":0,"devices":[],"inflight":0,"done":[${'"00",'.repeat(10_000)}"00"]}`), '10001 done entries', MAX_FAT_MESSAGE)
      expectMalformed(ok, utf8(`{"t":"list",${Array.from({ length: 20_000 }, (_, i) => `"k${i}":0`).join(',')}}`), '20000 unknown fields', MAX_FAT_MESSAGE)
      assert.ok(Date.now() - started < 10_000, 'took over 10 s')
    })

    // Regression: decode() used to JSON.stringify whatever `t` held for its error message; a deeply
    // nested array there (20 kB, under every limit, and JSON.parse copes) overflowed the stack and
    // decode threw RangeError, which serve() answered as ERR_INTERNAL (codec.ts:23, fixed in 6fd1ccb).
    it('a deeply nested `t` is MalformedMessageError, not RangeError', function () {
      const nested = utf8(`{"t":${'['.repeat(10_000)}${']'.repeat(10_000)}}`)
      assert.ok(nested.byteLength < MAX_VENDOR_MESSAGE)
      for (const tb of TABLES) {
        const r = attempt(() => tb.reply ? decodeReply(nested, tb.checks, tb.maxBytes) : decode(nested, tb.checks, tb.maxBytes))
        assert.ok(r.threw, `${tb.label} accepted it`)
        assertMalformed(r.err, tb.label)
      }
    })

    // Regression: obj() used to test `key in shape`, true for every name inherited from
    // Object.prototype, so such unknown fields were accepted (fixed in schema.ts with Object.hasOwn).
    it('unknown fields named like Object.prototype members are refused', function () {
      const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__']
      const where: Array<[string, Path]> = [['Ok', []], ['List', []], ['Allocated', ['candidates', 0, 'grant']], ['Commit', ['tables', 0, 'cipher']]]
      const accepted: string[] = []
      for (const [name, path] of where) {
        const { check, msg } = EXAMPLES[name]
        const own: Table = { label: name, checks: { [msg.t]: check }, maxBytes: Infinity, reply: false }
        for (const k of names) {
          // JSON text, so that `__proto__` is an own field as it is when it arrives from the network
          const inner = JSON.stringify(getAt(msg, path)).replace(/^\{/, `{${JSON.stringify(k)}:{"x":1},`)
          const text = path.length === 0 ? inner : JSON.stringify(setAt(msg, path, '\u0000HOLE')).replace('"\\u0000HOLE"', inner)
          if (run(own, utf8(text)) !== 'malformed') accepted.push(`${name}${fmt(path)}.${k}`)
        }
      }
      assert.deepEqual(accepted, [], `unknown fields accepted: ${accepted.join(', ')}`)
    })
  })

  describe('fat-sync.ts: every Op variant inside a Raft append', function () {
    const sync = TABLES.find(tb => tb.checks === S.SYNC_REQUESTS) as Table
    const own: Table = { label: '{ raft } alone', checks: { raft: S.Raft }, maxBytes: MAX_FAT_MESSAGE, reply: false }
    const ctxs = [own, sync]
    const ctxArb = fc.constantFrom(...ctxs)
    /** An Append carrying one entry whose op is `op`, valid or not. */
    const inAppend = (op: unknown): Json => appendOf([{ index: 121, term: 7, at: T0, op } as S.Entry])
    const OP: Path = ['msg', 'entries', 0, 'op']
    const under = (p: Path, root: Path): boolean => root.every((k, i) => p[i] === k)
    const opRefused = (v: unknown, what: string, messageRe?: RegExp): void => {
      const r = attempt(() => S.Op(v, 'op'))
      assert.ok(r.threw, `Op accepted ${what}`)
      assertMalformed(r.err, `Op ${what}`)
      if (messageRe != null) assert.match((r.err as Error).message, messageRe, what)
      for (const ctx of ctxs) expectMalformed(ctx, encode(inAppend(v)), `an Append with ${what}`, ctx.maxBytes, messageRe)
    }

    it('every variant round-trips alone through Op and Entry, and inside an Append in the sync handler table', function () {
      for (const op of [...Object.values(OPS), ...MORE_OPS]) {
        const wire = JSON.parse(JSON.stringify(op))
        assert.deepEqual(S.Op(wire, 'op'), op, op.op)
        assert.deepEqual(S.Entry(JSON.parse(JSON.stringify(entry(5, 2, op))), 'entry'), entry(5, 2, op), op.op)
        const bytes = encode(inAppend(op))
        for (const ctx of ctxs) {
          assert.equal(run(ctx, bytes), 'valid', `${op.op} in ${ctx.label}`)
          assert.deepEqual(decode(bytes, ctx.checks, ctx.maxBytes).msg.entries[0].op, op)
        }
      }
      // all of them in one heartbeat, and a heartbeat with no entries
      const all = appendOf([...Object.values(OPS), ...MORE_OPS].map((op, i) => entry(200 + i, 7, op)))
      assert.deepEqual(decode(encode(all), S.SYNC_REQUESTS, MAX_FAT_MESSAGE), all)
      assert.deepEqual(decode(encode(appendOf([])), S.SYNC_REQUESTS, MAX_FAT_MESSAGE), appendOf([]))
    })

    it('an Op with an unknown `op` tag, or a tag that is not a string, is refused with MalformedMessageError', function () {
      const tagRe = /\.op: expected one of members, vendor, allocate, commit, commit-part, expire, renew, release, delivered, noop, drain, transfer, replace-replica, transfer-end, vendor-state, transfers, replaced, records$/
      const unknown = ['', 'MEMBERS', 'Noop', 'noop ', ' noop', 'no-op', 'noop\u0000', 'append', 'vote', 'announce', 'op', 'undefined', 'null',
        '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__']
      const notString: unknown[] = [null, 0, 1, -1, 0.5, true, false, [], ['noop'], [['members']], {}, { op: 'noop' }]
      for (const tag of [...unknown, ...notString]) {
        opRefused({ op: tag }, `op ${JSON.stringify(tag)}`, tagRe)
        // a body that is otherwise a valid variant does not help
        opRefused({ ...OPS.members, op: tag }, `a members op tagged ${JSON.stringify(tag)}`, tagRe)
      }
      opRefused({}, 'no op tag', tagRe)
      opRefused(deleteAt(OPS.members, ['op']), 'a members op without its tag', tagRe)
      // the tag as an own `__proto__` field, as JSON.parse makes it, and a tag in a nested object
      for (const text of ['{"__proto__":{"op":"noop"}}', '{"x":{"op":"noop"}}', '{"__proto__":"noop"}']) {
        const op = JSON.parse(text)
        opRefused(op, text, tagRe)
        expectMalformed(own, utf8(JSON.stringify(inAppend(0)).replace('"op":0', `"op":${text}`)), `an Append with op ${text}`)
      }
      // an op that is no object at all
      for (const v of [null, 0, 'noop', 'members', true, [], [{ op: 'noop' }]]) opRefused(v, `op = ${JSON.stringify(v)}`)
      // and any other string or value
      fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.anything().filter(v => typeof v !== 'string')), ctxArb, (tag, ctx) => {
        fc.pre(!(typeof tag === 'string' && OP_TAGS.includes(tag)))
        assert.throws(() => S.Op({ op: tag }, 'op'), (err: unknown) => { assertMalformed(err, 'Op'); return true })
        expectMalformed(ctx, encode(inAppend({ ...OPS.noop, op: tag })), `op tag ${String(JSON.stringify(tag)).slice(0, 60)}`)
      }), { numRuns: RUNS })
    })

    it('an Op carrying another variant\'s tag is refused', function () {
      for (const a of OP_TAGS) {
        for (const b of OP_TAGS.filter(x => x !== a)) opRefused({ ...OPS[a], op: b }, `a ${a} op tagged ${b}`)
      }
    })

    it('in every variant, a removed field, an unknown field or a value of another JSON type is refused', function () {
      const others: unknown[] = [null, true, 0, 'x', [], {}]
      for (const tag of OP_TAGS) {
        const msg = inAppend(OPS[tag])
        for (const path of fieldPaths(msg).filter(p => under(p, OP) && !optionalField(p))) {
          expectMalformed(own, encode(deleteAt(msg, path)), `${tag} without ${fmt(path)}`)
        }
        for (const path of objectPaths(msg).filter(p => under(p, OP))) {
          for (const k of ['extra', 'Op', 'sig', '__proto__', 'constructor']) {
            const m = clone(msg)
            Object.defineProperty(getAt(m, path), k, { value: 1, enumerable: true, writable: true, configurable: true })
            expectMalformed(own, encode(m), `${tag}: ${fmt(path)} with unknown field ${k}`)
          }
        }
        for (const { path, value } of nodes(msg).filter(n => under(n.path, OP))) {
          for (const v of others) {
            if (jsonType(v) === jsonType(value)) continue
            expectMalformed(own, encode(setAt(msg, path, v)), `${tag}: ${fmt(path)} = ${JSON.stringify(v)}`)
          }
        }
      }
    })

    it('in every variant, a negative, fractional or huge integer in any number field is refused', function () {
      for (const tag of OP_TAGS) {
        const msg = inAppend(OPS[tag])
        for (const path of pathsOf(msg, 'number').filter(p => under(p, OP))) {
          for (const n of [-1, -0.5, 0.5, 1.5, 2 ** 50 + 1, 2 ** 53, 2 ** 64, 1e21]) {
            expectMalformed(own, encode(setAt(msg, path, n)), `${tag}: ${fmt(path)} = ${n}`)
          }
        }
      }
    })

    it('byte mutations of an Append with one entry of any variant are a valid message or MalformedMessageError', function () {
      const encoded = Object.fromEntries(OP_TAGS.map(tag => [tag, encode(inAppend(OPS[tag]))]))
      fc.assert(fc.property(fc.constantFrom(...OP_TAGS), ctxArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (tag, ctx, muts) => {
        run(ctx, mutate(encoded[tag], muts))
      }), { numRuns: RUNS })
    })

    it('random objects tagged with a variant are a valid Op or MalformedMessageError', function () {
      const fields = [...new Set(Object.values(OPS).flatMap(op => Object.keys(op)))]
      const field = fc.oneof(fc.constantFrom(...fields, 'x', '__proto__'), fc.string({ maxLength: 8 }))
      const value = fc.oneof(fc.jsonValue(), fc.constantFrom(...Object.values(OPS).flatMap(op => Object.values(op))))
      fc.assert(fc.property(fc.constantFrom(...OP_TAGS), fc.dictionary(field, value, { maxKeys: 5 }), ctxArb, (tag, d, ctx) => {
        const op = JSON.parse(JSON.stringify({ ...d, op: tag }))
        const r = attempt(() => S.Op(op, 'op'))
        if (r.threw) assertMalformed(r.err, 'Op')
        assert.equal(run(ctx, encode(inAppend(op))), r.threw ? 'malformed' : 'valid')
      }), { numRuns: RUNS })
    })

    it('an allocation\'s grants: at most 64, keyed by peer ids, of byte counts', async function () {
      const GRANTS: Path = [...OP, 'allocation', 'grants']
      const msg = inAppend(OPS.allocate)
      const peers = await Promise.all(Array.from({ length: 64 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
      const full = Object.fromEntries(peers.map((p, i) => [p, i * MiB]))
      for (const ctx of ctxs) assert.equal(run(ctx, encode(setAt(msg, GRANTS, full))), 'valid', '64 grants')
      expectMalformed(own, encode(setAt(msg, GRANTS, { ...full, [VENDOR]: 1 })), '65 grants', own.maxBytes, /grants: more than 64 entries/)
      // entries are counted before their keys are checked
      const many = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 0]))
      expectMalformed(own, encode(setAt(msg, GRANTS, many)), '10000 grants', own.maxBytes, /grants: more than 64 entries/)
      for (const k of ['', 'x', VENDOR + '1', VENDOR.slice(0, -1), VENDOR.toLowerCase(), '__proto__', 'constructor', 'toString', 'QmNotAPeer']) {
        const text = JSON.stringify(setAt(msg, GRANTS, '\u0000HOLE')).replace('"\\u0000HOLE"', `{${JSON.stringify(VENDOR)}:1,${JSON.stringify(k)}:1}`)
        for (const ctx of ctxs) expectMalformed(ctx, utf8(text), `a grant keyed ${JSON.stringify(k)}`, ctx.maxBytes, /grants key: /)
      }
      for (const v of [-1, 0.5, 2 ** 50 + 1, '1', null, true, [], {}]) {
        expectMalformed(own, encode(setAt(msg, [...GRANTS, VENDOR2], v)), `a grant of ${JSON.stringify(v)}`)
      }
      for (const v of [[], [[VENDOR, 1]], null, 'x', 1, true]) {
        expectMalformed(own, encode(setAt(msg, GRANTS, v)), `grants = ${JSON.stringify(v)}`)
      }
    })

    it('a replica that knows no leader or no digest says so with an empty string where the schema allows it', function () {
      const cases: Array<[string, Path, boolean]> = [
        ['MembersReply', ['leader'], true],
        ['JoinReply', ['leader'], true],
        ['ProbeReply', ['leader'], true],
        ['Join', ['proof'], true],
        ['StatusReply', ['replicas', 0, 'digest'], true],
        ['ProbeReply', ['digest'], true],
        ['StatusReply', ['digest'], false]
      ]
      for (const [name, path, ok] of cases) {
        const { check, msg } = EXAMPLES[name]
        const tb: Table = { label: name, checks: { [msg.t]: check }, maxBytes: Infinity, reply: false }
        if (ok) assert.equal(run(tb, encode(setAt(msg, path, ''))), 'valid', `${name}${fmt(path)} = ''`)
        else expectMalformed(tb, encode(setAt(msg, path, '')), `${name}${fmt(path)} = ''`)
      }
    })
  })

  describe('schema.ts: dict and union', function () {
    const refused = (check: Check<unknown>, v: unknown, what: string, messageRe?: RegExp): void => {
      const r = attempt(() => check(v, 'm'))
      assert.ok(r.threw, `accepted ${what}`)
      assertMalformed(r.err, what)
      if (messageRe != null) assert.match((r.err as Error).message, messageRe, what)
    }

    it('union: the shape named by the tag, and nothing without a known string tag', function () {
      const u = union('kind', { a: obj({ kind: oneOf('a'), n: int(0, 9) }), b: obj({ kind: oneOf('b'), s: str(3) }) })
      assert.deepEqual(u({ kind: 'a', n: 1 }, 'm'), { kind: 'a', n: 1 })
      assert.deepEqual(u({ s: 'xy', kind: 'b' }, 'm'), { kind: 'b', s: 'xy' })
      const tagRe = /^m\.kind: expected one of a, b$/
      for (const v of [null, undefined, 0, 'a', true, [], ['a'], {}, { kind: 'c' }, { kind: 'A' }, { kind: 1 }, { kind: null }, { kind: ['a'] }, { kind: { kind: 'a' } },
        { kind: '__proto__' }, { kind: 'constructor' }, { kind: 'toString' }, { kind: 'hasOwnProperty' }, JSON.parse('{"__proto__":{"kind":"a"},"n":1}')]) {
        refused(u, v, `union of ${JSON.stringify(v)}`, tagRe)
      }
      // the chosen shape is checked in full: the tag does not let another variant's fields in
      for (const v of [{ kind: 'a', s: 'xy' }, { kind: 'b', n: 1 }, { kind: 'a', n: 1, s: 'x' }, { kind: 'a', n: 10 }, { kind: 'b', s: 'wxyz' }]) {
        refused(u, v, `union of ${JSON.stringify(v)}`, /^m\.[ns]: /)
      }
      fc.assert(fc.property(fc.oneof(fc.anything(), fc.record({ kind: fc.constantFrom('a', 'b'), n: fc.anything(), s: fc.anything() }, { requiredKeys: ['kind'] })), v => {
        const r = attempt(() => u(v, 'm'))
        if (r.threw) assertMalformed(r.err, 'union')
      }), { numRuns: RUNS })
    })

    it('dict: every key and value checked, entries counted first, a fresh plain object out', function () {
      let keyChecks = 0
      const key: Check<string> = (v, p) => { keyChecks++; return str(5, /^[a-z]+$/)(v, p) }
      const d = dict(key, int(0, 9), 3)
      for (const v of [{}, { a: 1 }, { a: 1, bc: 2, def: 9 }]) {
        const out = d(v, 'm')
        assert.deepEqual(out, v)
        assert.notEqual(out, v)
        assert.equal(Object.getPrototypeOf(out), Object.prototype)
      }
      keyChecks = 0
      refused(d, { a: 1, b: 2, c: 3, d: 4 }, '4 entries', /^m: more than 3 entries$/)
      assert.equal(keyChecks, 0, 'keys checked before the entries were counted')
      for (const v of [null, undefined, [], [1], 'a', 1, true]) refused(d, v, `dict of ${JSON.stringify(v)}`, /^m: expected an object$/)
      for (const k of ['A', '', 'abcdef', '1', 'a b']) refused(d, { [k]: 1 }, `key ${JSON.stringify(k)}`, /^m key: /)
      for (const v of [10, -1, 0.5, '1', null, [], {}]) refused(d, { a: v }, `value ${JSON.stringify(v)}`, /^m\.a: /)
      fc.assert(fc.property(fc.oneof(fc.jsonValue(), fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.nat(12), fc.jsonValue()), { maxKeys: 4 })), v => {
        const text = JSON.stringify(v)
        fc.pre(!text.includes('"__proto__"')) // the test below
        const wire = JSON.parse(text)
        const r = attempt(() => d(wire, 'm'))
        if (r.threw) assertMalformed(r.err, 'dict')
        else assert.deepEqual(r.value, wire)
      }), { numRuns: RUNS })
    })

    // [SRC BUG schema.ts:86, latent] dict() copies entries with `out[k] = ...`. For the key
    // `__proto__` (an own field when JSON.parse makes it) that assignment does not make a field: a
    // primitive value is dropped, so the map decodes to fewer entries than it has; an object value
    // becomes the result's prototype, so its fields show through as if they were entries. Not
    // reachable today: the only dict (AllocationRecord.grants) keys on peer ids, which `__proto__`
    // is not (the grants test above pins that). Fix: create the field, e.g.
    // `Object.defineProperty(out, k, { value: value(..), enumerable: true, writable: true, configurable: true })`,
    // or build `out` with Object.fromEntries (which defines fields); or refuse the key `__proto__` with MalformedMessageError.
    it('[SRC BUG schema.ts:86] dict() neither drops a `__proto__` key nor takes its value as the prototype', function () {
      const d = dict(str(20), int(0, 9), 3)
      const v = JSON.parse('{"__proto__":1,"a":2}')
      const r = attempt(() => d(v, 'm'))
      if (r.threw) assertMalformed(r.err, '__proto__ key')
      else assert.deepEqual(Object.keys(r.value), ['__proto__', 'a'], 'the `__proto__` entry was dropped')
      const dObj = dict(str(20), obj({ x: int(0, 9) }), 3)
      const r2 = attempt(() => dObj(JSON.parse('{"__proto__":{"x":1}}'), 'm'))
      if (r2.threw) assertMalformed(r2.err, '__proto__ key')
      else {
        assert.equal(Object.getPrototypeOf(r2.value), Object.prototype, 'the `__proto__` entry became the prototype')
        assert.deepEqual(Object.keys(r2.value), ['__proto__'])
      }
    })
  })

  describe('decodeReply', function () {
    const known: Array<[string, new (message: string) => E.StorError]> = [
      ['ERR_INVALID_ARGUMENT', E.InvalidArgumentError],
      ['ERR_MALFORMED', E.MalformedMessageError],
      ['ERR_ACCESS_DENIED', E.AccessDeniedError],
      ['ERR_NOT_FOUND', E.NotFoundError],
      ['ERR_NO_SPACE', E.NoSpaceError],
      ['ERR_UNREACHABLE', E.UnreachableError],
      ['ERR_INTEGRITY', E.IntegrityError],
      ['ERR_LIMIT', E.LimitError],
      ['ERR_LOCKED', E.LockedError]
    ]
    const replyTables = TABLES.filter(tb => tb.reply)
    const errorReply = (code: string, message: string): Uint8Array => encode({ t: 'error', code, message })

    it('rethrows an error reply as the error class named by its code', function () {
      for (const [code, cls] of known) {
        for (const tb of replyTables) {
          assert.throws(() => decodeReply(errorReply(code, `remote says ${code}`), tb.checks, tb.maxBytes), (err: unknown) => {
            assert.ok(err instanceof cls, `${code}: got ${describeError(err)}`)
            assert.ok(err instanceof E.StorError)
            assert.equal(err.name, cls.name)
            assert.equal(err.code, code)
            assert.equal(err.message, `remote says ${code}`)
            return true
          }, tb.label)
        }
      }
      const err = attempt(() => decodeReply(errorReply('ERR_ACCESS_DENIED', 'no'), { ok: M.Ok }, MAX_VENDOR_MESSAGE))
      assert.ok(err.threw)
      assert.equal((err.err as Error).name, 'AccessDeniedError')
    })

    it('knows the code of every error class errors.ts exports', function () {
      const classes = Object.values(E).filter((v): v is new (message: string) => E.StorError => typeof v === 'function' && v.prototype instanceof E.StorError)
      assert.ok(classes.length >= known.length)
      for (const cls of classes) {
        const code = new cls('x').code
        const r = attempt(() => decodeReply(errorReply(code, 'x'), { ok: M.Ok }, 1000))
        assert.ok(r.threw && r.err instanceof cls, `${cls.name} (${code}) comes back as ${r.threw ? describeError(r.err) : 'a value'}`)
        assert.equal((r.err as Error).name, cls.name)
      }
    })

    it('rethrows an unknown code as a plain StorError carrying that code', function () {
      const knownCodes = new Set(known.map(([c]) => c))
      const code = fc.oneof(fc.stringMatching(/^ERR_[A-Z_]{1,36}$/), fc.constantFrom('ERR_INTERNAL', 'ERR_STOR', 'ERR_SOMETHING_NEW', 'ERR__'))
      fc.assert(fc.property(code.filter(c => !knownCodes.has(c)), fc.string({ maxLength: 1000 }), fc.constantFrom(...replyTables), (c, message, tb) => {
        const r = attempt(() => decodeReply(errorReply(c, message), tb.checks, tb.maxBytes))
        assert.ok(r.threw && r.err instanceof E.StorError, `got ${r.threw ? describeError(r.err) : 'a value'}`)
        assert.equal(Object.getPrototypeOf(r.err), E.StorError.prototype)
        assert.equal(r.err.code, c)
        assert.equal(r.err.message, message)
      }), { numRuns: RUNS })
    })

    it('returns an error reply when the caller expects one', function () {
      const msg = EXAMPLES.ErrorReply.msg
      assert.deepEqual(decodeReply(encode(msg), { error: M.ErrorReply }, 1000), msg)
    })

    it('returns the expected reply and refuses a reply of another type', function () {
      assert.deepEqual(decodeReply(encode(EXAMPLES.Stored.msg), { stored: M.Stored }, MAX_VENDOR_MESSAGE), EXAMPLES.Stored.msg)
      const r = attempt(() => decodeReply(encode(EXAMPLES.Files.msg), { ok: M.Ok }, MAX_VENDOR_MESSAGE))
      assert.ok(r.threw)
      assertMalformed(r.err)
    })

    it('refuses a malformed error reply as malformed, not as the error it names', function () {
      const bad = [
        { t: 'error', code: 'ERR_ACCESS_DENIED' },
        { t: 'error', code: 'ERR_ACCESS_DENIED', message: 'x', extra: 1 },
        { t: 'error', code: 'err_access_denied', message: 'x' },
        { t: 'error', code: 'ERR_ACCESS_DENIED', message: 'x'.repeat(1001) },
        { t: 'error', code: 'ERR_' + 'A'.repeat(37), message: 'x' },
        { t: 'error', code: 403, message: 'x' },
        { t: 'error', code: 'ERR_ACCESS_DENIED', message: null }
      ]
      for (const msg of bad) {
        for (const tb of replyTables) expectMalformed(tb, encode(msg), JSON.stringify(msg).slice(0, 80))
      }
    })
  })

  describe('sign and verify', function () {
    const denied = (what: string) => (err: unknown): boolean => {
      assert.ok(err instanceof E.AccessDeniedError, `${what}: expected AccessDeniedError, got ${describeError(err)}`)
      assert.equal(err.name, 'AccessDeniedError')
      assert.equal(err.code, 'ERR_ACCESS_DENIED')
      return true
    }
    const refuses = async (signer: string, domain: Domain, record: { sig: string }, what: string): Promise<void> => {
      await assert.rejects(verify(signer, domain, record), denied(what), what)
    }

    it('a signed Grant is a valid Grant and verifies, also after a trip over the wire', async function () {
      assert.deepEqual(M.Grant(clone(grant), 'grant'), grant)
      assert.match(grant.sig, /^[0-9a-f]{128}$/)
      await verify(FAT, 'grant', grant)
      const wire = decode(encode(EXAMPLES.Allocated.msg), { allocated: M.Allocated }, MAX_FAT_MESSAGE)
      await verify(FAT, 'grant', wire.candidates[0].grant)
      await verify(FAT, 'grant', wire.candidates[1].grant)
    })

    it('the signature does not depend on the order of the fields', async function () {
      await fc.assert(fc.asyncProperty(fc.shuffledSubarray(Object.keys(grant), { minLength: Object.keys(grant).length }), async keys => {
        const shuffled = Object.fromEntries(keys.map(k => [k, (grant as Record<string, unknown>)[k]])) as M.Grant
        await verify(FAT, 'grant', shuffled)
      }), { numRuns: 50 })
    })

    it('changing any field to another valid value breaks it', async function () {
      const changes: Array<[keyof M.Grant, unknown[]]> = [
        ['allocationId', [hexOf('other allocation', 16), ALLOCATION_ID.replace(/.$/, c => c === '0' ? '1' : '0')]],
        ['owner', [VENDOR, VENDOR2, FAT]],
        ['vendor', [VENDOR2, USER, FAT]],
        ['bytes', [grant.bytes + 1, grant.bytes - 1, 0, 2 ** 50]],
        ['expires', [grant.expires + 1, 2 ** 48, 0]],
        ['fat', [USER, VENDOR]]
      ]
      for (const [key, values] of changes) {
        for (const v of values) {
          const changed = { ...grant, [key]: v }
          assert.deepEqual(M.Grant(clone(changed), 'grant'), changed, 'the change must keep the grant well-formed')
          await refuses(FAT, 'grant', changed, `${key} = ${String(v)}`)
        }
      }
    })

    it('changing, removing or adding any field in any way breaks it', async function () {
      const keys = Object.keys(grant).filter(k => k !== 'sig')
      await fc.assert(fc.asyncProperty(fc.constantFrom(...keys), fc.anything(), async (key, v) => {
        fc.pre(canonical(v) !== canonical((grant as Record<string, unknown>)[key]))
        await refuses(FAT, 'grant', { ...grant, [key]: v }, `${key} = ${String(canonical(v))}`)
      }), { numRuns: RUNS })
      for (const key of keys) {
        const { [key]: _gone, ...rest } = grant as Record<string, unknown>
        await refuses(FAT, 'grant', rest as M.Grant, `without ${key}`)
      }
      await fc.assert(fc.asyncProperty(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue(), async (key, v) => {
        fc.pre(!Object.hasOwn(grant, key))
        await refuses(FAT, 'grant', { ...grant, [key]: v }, `with ${key}`)
      }), { numRuns: 100 })
    })

    it('a grant signature is not valid under another domain', async function () {
      for (const d of ['order', 'header', 'receipt'] as Domain[]) await refuses(FAT, d, grant, `domain ${d}`)
    })

    it('a record signed under one domain verifies under that domain only', async function () {
      const domains: Domain[] = ['grant', 'header', 'receipt', 'order']
      const records: Array<[Domain, string, { sig: string }]> = [['grant', FAT, grant], ['header', USER, header], ['receipt', VENDOR, receipt], ['order', FAT, order]]
      for (const [domain, signer, record] of records) {
        await verify(signer, domain, record)
        for (const other of domains.filter(d => d !== domain)) await refuses(signer, other, record, `${domain} as ${other}`)
        // and the same body signed for another domain does not pass as this one
        for (const other of domains.filter(d => d !== domain)) {
          const key = signer === FAT ? fatKey : signer === USER ? userKey : vendorKey
          const resigned = await sign<{ sig: string }>(key, other, record)
          await verify(signer, other, resigned)
          await refuses(signer, domain, resigned, `${other} signature as ${domain}`)
        }
      }
    })

    it('is not valid under another signer, or a signer that is no Ed25519 peer id', async function () {
      for (const p of PEERS.filter(p => p !== FAT)) await refuses(p, 'grant', grant, `signer ${p}`)
      const notKeys = ['', 'garbage', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', FAT.slice(0, -1), `${FAT}x`, '1', 'z' + FAT]
      for (const p of notKeys) await refuses(p, 'grant', grant, `signer ${JSON.stringify(p)}`)
    })

    it('a garbage sig string of the right length is refused with AccessDeniedError', async function () {
      const garbage = fc.oneof(
        fc.string({ minLength: 128, maxLength: 128 }),
        fc.string({ unit: 'binary', minLength: 128, maxLength: 128 }),
        fc.stringMatching(/^[0-9a-f]{128}$/),
        fc.stringMatching(/^[0-9A-F]{128}$/),
        fc.tuple(fc.integer({ min: 0, max: 127 }), fc.constantFrom(...'0123456789abcdefg')).map(([i, c]) => grant.sig.slice(0, i) + c + grant.sig.slice(i + 1))
      )
      await fc.assert(fc.asyncProperty(garbage, async sig => {
        fc.pre(sig !== grant.sig)
        await refuses(FAT, 'grant', { ...grant, sig }, `sig ${sig.slice(0, 20)}...`)
      }), { numRuns: RUNS })
      for (const sig of ['', '0', 'ab', grant.sig.slice(2), grant.sig + '00', grant.sig.slice(1), '0'.repeat(128), 'f'.repeat(128)]) {
        await refuses(FAT, 'grant', { ...grant, sig }, `sig of ${sig.length} chars`)
      }
      await refuses(FAT, 'grant', { ...grant, sig: 12 as unknown as string }, 'a number as sig')
      // the same signature in upper-case hex is the same bytes: verify() takes it (the wire's hex(64) does not)
      await verify(FAT, 'grant', { ...grant, sig: grant.sig.toUpperCase() })
    })

    it('a signed request passes the replay guard once; changed, replayed, stale or signed by another it does not', async function () {
      const msg = EXAMPLES.Release.msg as M.Message<typeof M.Release>
      const now = msg.auth.time
      await new ReplayGuard().check(msg, USER, now)
      await new ReplayGuard().check(decode(encode(msg), FAT_REQUESTS, MAX_FAT_MESSAGE), USER, now)
      const guard = new ReplayGuard()
      await guard.check(msg, USER, now)
      await assert.rejects(guard.check(clone(msg), USER, now + 1000), denied('a replay'))
      const bad: Array<[string, M.Message<typeof M.Release>, string, number]> = [
        ['another file', { ...msg, fileId: hexOf('other file', 16) }, USER, now],
        ['another nonce', { ...msg, auth: { ...msg.auth, nonce: hexOf('other nonce', 16) } }, USER, now],
        ['another time', { ...msg, auth: { ...msg.auth, time: now + 1 } }, USER, now],
        ['a grant signature', { ...msg, auth: { ...msg.auth, sig: grant.sig } }, USER, now],
        ['another sender', msg, VENDOR, now],
        ['another owner', { ...msg, auth: { ...msg.auth, owner: VENDOR } }, VENDOR, now],
        ['a stale time', msg, USER, now + 10 * 60_000]
      ]
      for (const [what, m, sender, at] of bad) await assert.rejects(new ReplayGuard().check(m, sender, at), denied(what), what)
      const forged = await signRequest(vendorKey, USER, { t: 'release' as const, fileId: FILE_ID })
      await assert.rejects(new ReplayGuard().check(forged, USER, forged.auth.time), denied('signed by another key'))
      await fc.assert(fc.asyncProperty(fc.oneof(fc.stringMatching(/^[0-9a-f]{128}$/), fc.string({ minLength: 128, maxLength: 128 })), async sig => {
        await assert.rejects(new ReplayGuard().check({ ...msg, auth: { ...msg.auth, sig } }, USER, now), denied(`sig ${sig.slice(0, 16)}`))
      }), { numRuns: 50 })
    })

    it('canonical() is key-order independent JSON', function () {
      const shuffle = (v: Json, seed: number): Json => {
        if (Array.isArray(v)) return v.map(x => shuffle(x, seed))
        if (v == null || typeof v !== 'object') return v
        const keys = Object.keys(v)
        const order = keys.map((k, i) => [k, (i * 7919 + seed) % (keys.length + 1)] as const).sort((a, b) => a[1] - b[1]).map(([k]) => k)
        return Object.fromEntries(order.map(k => [k, shuffle(v[k], seed)]))
      }
      fc.assert(fc.property(fc.jsonValue(), fc.nat(), (v, seed) => {
        const c = canonical(v)
        assert.deepEqual(JSON.parse(c), JSON.parse(JSON.stringify(v)))
        assert.equal(canonical(shuffle(v, seed)), c)
      }), { numRuns: RUNS })
    })
  })

  describe('frames (stream.ts)', function () {
    const open: Stream[] = []
    const pair = async (): Promise<[Stream, Stream]> => {
      const [a, b] = await streamPair()
      open.push(a, b)
      return [a, b]
    }
    afterEach(function () {
      for (const s of open.splice(0)) s.abort(new Error('test over'))
    })

    it('carries frames of any size up to the limit unchanged', async function () {
      const [a, b] = await pair()
      const w = frames(a, 64 * KiB)
      const r = frames(b, 64 * KiB)
      for (const size of [0, 1, 1000, 64 * KiB]) {
        const frame = Uint8Array.from({ length: size }, (_, i) => (i * 31 + size) & 0xff)
        await w.write(frame)
        assert.deepEqual(await r.read(), frame)
      }
    })

    it('carries raw data of any size, and data sent ahead of the reader is kept in order', async function () {
      const [a, b] = await pair()
      const data = Uint8Array.from({ length: 2 * SEND_BLOCK + 12_345 }, (_, i) => (i * 7) & 0xff)
      const [, got] = await Promise.all([frames(a, 1000).writeData(data), frames(b, 1000).readData(data.byteLength)])
      assert.deepEqual(got, data)
      assert.deepEqual(await frames(b, 1000).readData(0), new Uint8Array(0))
      // a control frame and its data sent at once, before the other side reads anything
      const [c, d] = await pair()
      const w = frames(c, 1000)
      await w.write(utf8('{"t":"chunk"}'))
      await w.writeData(data.subarray(0, 70_000))
      await w.write(utf8('{"t":"end"}'))
      await new Promise(resolve => setTimeout(resolve, 50))
      const r = frames(d, 1000)
      assert.deepEqual(await r.read(), utf8('{"t":"chunk"}'))
      assert.deepEqual(await r.readData(70_000), data.subarray(0, 70_000))
      assert.deepEqual(await r.read(), utf8('{"t":"end"}'))
    })

    it('readData shows each run of bytes to onData as it lands, in order, once', async function () {
      const [a, b] = await pair()
      const data = Uint8Array.from({ length: 3 * SEND_BLOCK + 999 }, (_, i) => (i * 13) & 0xff)
      const w = frames(a, 1000)
      // some bytes arrive before the read starts, the rest while it waits
      await w.writeData(data.subarray(0, 5000))
      await new Promise(resolve => setTimeout(resolve, 50))
      const seen: Uint8Array[] = []
      const [got] = await Promise.all([frames(b, 1000).readData(data.byteLength, { onData: bytes => { seen.push(Uint8Array.from(bytes)) } }), w.writeData(data.subarray(5000))])
      assert.deepEqual(got, data)
      assert.deepEqual(Buffer.concat(seen), Buffer.from(data))
    })

    it('readData and read fail, without waiting, when the peer ends the stream early', async function () {
      for (const [sent, size] of [[0, 10], [10, 11], [SEND_BLOCK + 1, SEND_BLOCK + 100]]) {
        const [a, b] = await pair()
        await frames(a, 1000).writeData(new Uint8Array(sent))
        await a.close()
        await assert.rejects(frames(b, 1000).readData(size, { signal: AbortSignal.timeout(5000) }), (err: unknown) => {
          assert.ok(err instanceof StreamEndedError, `${sent} bytes sent for ${size}: got ${describeError(err)}`)
          return true
        })
      }
      const [a, b] = await pair()
      a.send(Uint8Array.from([5, 1, 2]))
      await a.close()
      await assert.rejects(frames(b, 1000).read({ signal: AbortSignal.timeout(5000) }), StreamEndedError)
    })

    /** What serve() makes of a read error: a StorError keeps its code, anything else is ERR_INTERNAL. */
    const assertRefusal = (what: string) => (err: unknown): boolean => {
      if (!(err instanceof E.LimitError || err instanceof E.MalformedMessageError)) assert.fail(`${what}: expected LimitError or MalformedMessageError, got ${describeError(err)}`)
      return true
    }

    it('a frame over the limit is refused as LimitError, not an internal error', async function () {
      for (const [maxFrame, size] of [[MAX_VENDOR_MESSAGE, MAX_VENDOR_MESSAGE + 1], [SEND_BLOCK * 2, SEND_BLOCK * 2 + 1]]) {
        const [a, b] = await pair()
        const w = frames(a, 4 * MiB).write(new Uint8Array(size)).catch(() => {})
        await assert.rejects(frames(b, maxFrame).read(), assertRefusal(`a frame of ${size} for a limit of ${maxFrame}`))
        await w
      }
    })

    it('a garbage length prefix never yields a frame: it is refused or waits for the caller\'s deadline', async function () {
      const prefixes = [[...new Array(10).fill(0xff), 0x01, 1, 2, 3], new Array(20).fill(0xff), [...new Array(11).fill(0x80), 0x00]]
      for (const bytes of prefixes) {
        const [a, b] = await pair()
        a.send(Uint8Array.from(bytes))
        await assert.rejects(frames(b, MAX_VENDOR_MESSAGE).read({ signal: AbortSignal.timeout(200) }), (err: unknown) => {
          if (err instanceof E.StorError) return true
          assert.ok(err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError'), `got ${describeError(err)}`)
          return true
        })
      }
    })

    // Regression: bytes a peer sends ahead of the reader pile up in the stream's buffer; past
    // maxBuffer read() threw StreamBufferError untranslated, which serve() answered as ERR_INTERNAL
    // with an error-level log. The vendor's store handler reads after its checks, so a sender that
    // pushes more than its buffer without waiting for the go-ahead hit this (stream.ts, fixed in 6fd1ccb).
    it('bytes sent ahead past the read buffer are refused as LimitError, not an internal error', async function () {
      const [a, b] = await pair()
      const reader = frames(b, MAX_VENDOR_MESSAGE)
      const writer = frames(a, MAX_VENDOR_MESSAGE)
      await writer.write(utf8('{"t":"ok"}'))
      assert.deepEqual(await reader.read(), utf8('{"t":"ok"}'))
      // while the handler works on the first frame, the peer sends 6 MiB: more than the 4 MiB buffer holds
      const flood = writer.writeData(new Uint8Array(6 * MiB)).catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 300))
      let frames_ = 0
      let err: unknown
      for (let i = 0; i < 30 && err == null; i++) {
        try { await reader.read({ signal: AbortSignal.timeout(2000) }); frames_++ } catch (e) { err = e }
      }
      await flood
      assert.ok(err != null, `read ${frames_} frames and no error`)
      assertRefusal('a flood past the read buffer')(err)
    })
  })
})
