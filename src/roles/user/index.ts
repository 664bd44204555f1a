import { readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { AccessDeniedError, IntegrityError, InvalidArgumentError, NoQuorumError, NotFoundError, UnavailableError, UnreachableError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { FAT_PROTOCOL, MAX_CHUNK_SIZE, MAX_FAT_MESSAGE, MAX_REPLICAS, MiB } from '../../protocol/ids.ts'
import * as M from '../../protocol/messages.ts'
import { call, type Target } from '../../protocol/rpc.ts'
import { signRequest } from '../../protocol/auth.ts'
import { splitCommit, wholeTable } from '../../protocol/table-pages.ts'
import type { Check } from '../../protocol/schema.ts'
import type { StorNode } from '../../node/index.ts'
import { parallel } from '../../parallel.ts'
import { createBufferPool } from '../../buffer-pool.ts'
import { MAX_WINDOW_BYTES } from './window.ts'
import { download, type DownloadResult } from './download.ts'
import { PathCache, rank, type PathScore } from './rank.ts'
import { Keystore } from './keystore.ts'
import { upload, type ByteSource, type UploadResult } from './upload.ts'
import { streamSource } from './source.ts'
import { copyInto, streamRange, type RangeWriter } from './range.ts'
import { createRecordStore, type RecordStore } from './records.ts'
import { unpack } from './pack.ts'
import { PeerBook, peerOf, relocateReplicas, unreachableReplicas } from './peer-book.ts'
import { hedged, roundVerdict } from './hedge.ts'
import type { Progress } from './types.ts'

export type { UploadResult, DownloadResult, Progress, PathScore, RangeWriter, RecordStore }
export type { UserRecord, RecordChange, RecordCondition } from './records.ts'
export type FileSummary = M.FileSummary
export type StatusReport = M.Message<typeof M.StatusReply>
export type Allocation = M.Message<typeof M.Allocated>

export interface UserOptions {
  node: StorNode
  key: PrivateKey
  dataDir: string
  /** FAT servers to ask, in order; the next is tried when one does not answer. */
  fats: Multiaddr[]
  /** The identity was just created: a master key may be made for it. */
  newIdentity: boolean
  log: Logger
}

export interface TransferOptions {
  /** Stops the transfer: streams are closed, nothing more is sent, the call rejects with the reason. */
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
  /** Most chunks in flight (default 32); the window adapts below it. */
  concurrency?: number
  /** Resume an interrupted run of the same transfer from its record in the data dir or beside OUT (default true). */
  resume?: boolean
}

export interface DownloadOptions extends TransferOptions {
  release?: boolean
}

export interface UploadOptions extends TransferOptions {
  replicas?: number
  chunkSize?: number
  pieces?: number
  /** The name to record (default: the file's base name). */
  name?: string
}

export interface UploadManyOptions extends Omit<UploadOptions, 'name'> {
  /** Names to record, one per path (default: the base names). */
  names?: string[]
}

export interface User {
  readonly peerId: string
  upload: (path: string, opts?: UploadOptions) => Promise<UploadResult>
  /** Stores several files under one allocation and one commit. */
  uploadMany: (paths: string[], opts?: UploadManyOptions) => Promise<UploadResult[]>
  download: (fileId: string, out: string, opts?: DownloadOptions) => Promise<DownloadResult & { released: boolean }>
  /** Fetches several files in one transfer: their chunks share the window and the paths. */
  downloadMany: (files: Array<{ fileId: string, out: string }>, opts?: DownloadOptions) => Promise<Array<DownloadResult & { released: boolean }>>
  /** Every vendor the FAT knows, measured (round trip, hops) and scored, best first. */
  paths: (opts?: { fresh?: boolean }) => Promise<PathScore[]>
  list: () => Promise<FileSummary[]>
  /** The health of the files named (none: all of this user's files); `missing` lists ids the FAT does not know for this user. */
  check: (fileIds?: string[]) => Promise<{ files: FileSummary[], missing: string[] }>
  release: (fileId: string) => Promise<{ fileId: string, freed: number }>
  status: () => Promise<StatusReport>
  /** The peer id of the FAT replica that orders writes, as the first replica to answer knows it; undefined while none does (an election, no majority). */
  leader: () => Promise<string | undefined>
  /** The FAT's authoritative table of one of this user's files, with its vendors' addresses. */
  table: (fileId: string) => Promise<M.Message<typeof M.TableReply>>
  /** Asks for a provisional allocation without storing anything (it expires with its lease). */
  allocate: (sizes: number[], replicas: number, chunkSize?: number) => Promise<Allocation>
  /** Extends an open allocation's lease (uploads do this by themselves); the reply carries fresh grants. */
  renew: (allocationId: string) => Promise<Allocation>
  /**
   * Stores `size` bytes read once, in order, from `body` (a network body, a pipe): only the
   * chunks in flight are held in memory. Fails if the body ends short. Not resumable.
   */
  uploadStream: (body: AsyncIterable<Uint8Array>, size: number, opts?: UploadOptions & { name: string }) => Promise<UploadResult>
  /**
   * Sends bytes [start, end) of a file to `to`, in order (default: all of it): only the chunks
   * that cover the range are fetched, a bounded segment at a time ahead of the writer.
   */
  downloadRange: (fileId: string, to: RangeWriter, opts?: TransferOptions & { start?: number, end?: number }) => Promise<{ fileId: string, size: number, start: number, end: number }>
  /** Small sealed records the FAT keeps for this identity (see records.ts). */
  records: RecordStore
}

export const DEFAULT_REPLICAS = 2
export const DEFAULT_CHUNK_SIZE = 4 * MiB
export const DEFAULT_PIECES = 2
export const DEFAULT_CONCURRENCY = 32
const CHUNK_TIMEOUT_MS = 60_000
const FILE_ID = /^[0-9a-f]{32}$/
/** How long a command keeps trying other FAT replicas while one dies and another takes over. */
const FAILOVER_MS = 20_000
/** How long a FAT replica has to answer before the next one is asked as well. */
const HEDGE_MS = 500
/** The peer id of the replica that last ordered writes, in the data dir. */
const LEADER_FILE = 'fat-leader'

/** A file id as upload and ls print it, or an InvalidArgumentError. */
export function checkFileId (id: string): void {
  if (!FILE_ID.test(id)) throw new InvalidArgumentError(`ID: "${id}" is not a file id (32 hex digits, as printed by upload and ls)`)
}

/** The client side: stores, fetches, lists and releases the files of the identity it runs as. */
export async function createUser (opts: UserOptions): Promise<User> {
  const { node, log } = opts
  const keystore = await Keystore.open(opts.dataDir, opts.newIdentity)
  const paths = new PathCache(opts.dataDir)
  // enough idle buffers for a full window of chunks, sealed and plain
  // page-aligned, so downloaded chunks go to disk direct (store/direct.ts)
  const buffers = createBufferPool(MAX_WINDOW_BYTES * 2, { aligned: true })
  if (opts.fats.length === 0) throw new InvalidArgumentError('--bootstrap: give the multiaddr of a FAT server')

  const self = node.peerId.toString()
  /** Asks the FAT servers in turn; requests on our files are signed, fresh for each try. */
  /** The FAT replicas: those given, then every member of their replica set once one answers. */
  // and the replicas met before (by peer id: a replica that moved is looked up, see peer-book.ts)
  const book = await PeerBook.load(opts.dataDir)
  const known = new Set(opts.fats.map(a => a.getComponents().find(c => c.name === 'p2p')?.value))
  const replicas: Target[] = [...opts.fats, ...book.replicas().filter(r => !known.has(r.peer))]
  replicas.forEach(r => known.add(peerOf(r)))
  let lastLeader = (await readFile(join(opts.dataDir, LEADER_FILE), 'utf8').catch(() => '')).trim()
  const first = replicas.findIndex(r => peerOf(r) === lastLeader)
  if (first > 0) replicas.unshift(...replicas.splice(first, 1))
  let learned = false
  const learn = async (from: Target): Promise<void> => {
    const r = await call(node, from, FAT_PROTOCOL, { t: 'members' }, { 'members-reply': M.MembersReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(5_000) })
    learned = true
    // the replica that orders writes is asked first next time (the next command, too)
    if (r.leader !== '' && r.leader !== lastLeader) {
      lastLeader = r.leader
      await writeFile(join(opts.dataDir, LEADER_FILE), `${r.leader}\n`).catch(() => {})
    }
    r.members.forEach(m => { book.noteReplica(m.peer, m.addrs) })
    await book.save().catch(() => {})
    for (const m of r.members) {
      if (known.has(m.peer)) continue
      known.add(m.peer)
      replicas.push({ peer: m.peer, addrs: m.addrs })
    }
  }

  /**
   * Asks the FAT replicas, the last known leader first and each next one HEDGE_MS later (at once
   * when one fails), taking the first answer; requests on our files are signed afresh for each
   * round. When the replica set is known, rounds go on for a while, so a replica's death or an
   * election does not fail the command.
   */
  const ask = async <C extends Check<any>>(msg: object, expected: Record<string, C>, signed = true): Promise<M.Message<C>> => {
    const deadline = Date.now() + FAILOVER_MS
    const errors: string[] = []
    let relocated = false
    for (let round = 1; ; round++) {
      // one signature per round: a write that reaches the leader twice (through two replicas) is
      // done once, the leader refusing the second copy as a replay
      const request = signed ? await signRequest(opts.key, self, msg) : msg
      const r = await hedged([...replicas], HEDGE_MS, async (fat, signal) => {
        if (!learned) await learn(fat)
        return await call(node, fat, FAT_PROTOCOL, request, expected, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]) })
      })
      if ('value' in r) {
        // the replica that answered is asked first from now on
        const at = replicas.indexOf(r.target)
        if (at > 0) replicas.unshift(...replicas.splice(at, 1))
        book.harvest(r.value)
        await book.save().catch(() => {})
        return r.value
      }
      const v = roundVerdict(r.errors)
      if (v.verdict === 'final') throw v.error
      if (v.verdict === 'cut-off') {
        const silent = r.errors.filter((e: any) => e instanceof UnreachableError).length
        throw new NoQuorumError(`no FAT replica this command reaches can make writes: ${v.error.message}${silent > 0 ? `; ${silent} other replica(s) did not answer` : ''}; give --bootstrap a replica on the majority's side, or try again once the network heals`)
      }
      errors.push(...r.errors.map((e: any) => String(e.message)))
      // before any replica has answered, a few quick rounds only (a reset connection is worth a
      // retry; an address where nothing listens is not worth 20 s)
      if ((!learned && round >= 3) || Date.now() > deadline) {
        // before giving up: the replicas may have moved; look them up by peer id, once
        if (!learned && !relocated && await relocateReplicas(node, replicas, book, log)) { relocated = true; continue }
        break
      }
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    throw new UnreachableError(`no FAT server answered: ${learned ? '' : `${unreachableReplicas(replicas)}; `}${[...new Set(errors)].slice(-3).join('; ')}`)
  }

  const allocate = async (sizes: number[], replicas: number, chunkSize = DEFAULT_CHUNK_SIZE, packed: number[] = []): Promise<Allocation> => {
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) throw new InvalidArgumentError(`--replicas: ${replicas} is not a whole number from 1 to ${MAX_REPLICAS}`)
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) throw new InvalidArgumentError(`--chunk-size: ${chunkSize} must be from 1 byte to ${MAX_CHUNK_SIZE / MiB} MiB`)
    return await ask({ t: 'allocate', sizes, replicas, chunkSize, ...(packed.length > 0 ? { packed } : {}) }, { allocated: M.Allocated })
  }

  const renew = async (allocationId: string): Promise<Allocation> => {
    if (!FILE_ID.test(allocationId)) throw new InvalidArgumentError(`allocation id: "${allocationId}" is not 32 hex digits`)
    return await ask({ t: 'renew', allocationId }, { allocated: M.Allocated })
  }

  const table = async (fileId: string): Promise<M.Message<typeof M.TableReply>> => {
    checkFileId(fileId)
    const first = await ask({ t: 'get', fileId }, { table: M.TableReply })
    if (first.next == null) return first
    // a large table comes in pages
    const { next: _next, ...reply } = first
    return { ...reply, table: await wholeTable(first, async from => await ask({ t: 'get', fileId, from }, { table: M.TableReply })) }
  }

  const release = async (fileId: string): Promise<{ fileId: string, freed: number }> => {
    checkFileId(fileId)
    const r = await ask({ t: 'release', fileId }, { released: M.Released })
    return { fileId: r.fileId, freed: r.freed }
  }

  const uploadMany = async (files: Array<string | ByteSource>, o: UploadManyOptions): Promise<UploadResult[]> => await upload({
    node,
    key: opts.key,
    keystore,
    log,
    paths,
    dataDir: opts.dataDir,
    buffers,
    allocate,
    renew,
    commit: async (allocationId, whole) => {
      // a large file's chunk lines go first, in parts the FAT stages; the commit names them
      const { tables, staged, parts } = splitCommit(whole)
      for (const p of parts) await ask({ t: 'commit-part', allocationId, ...p }, { ok: M.Ok })
      try {
        await ask({ t: 'commit', allocationId, tables, ...(staged.length > 0 ? { staged } : {}) }, { ok: M.Ok })
      } catch (err) {
        // a commit retried on another replica after its reply was lost finds the allocation gone:
        // it took effect if the files are there
        if (!(err instanceof NotFoundError) || tables.length === 0) throw err
        await table(tables[0].fileId)
      }
    }
  }, files, {
    replicas: o.replicas ?? DEFAULT_REPLICAS,
    chunkSize: o.chunkSize ?? DEFAULT_CHUNK_SIZE,
    pieces: o.pieces ?? DEFAULT_PIECES,
    concurrency: o.concurrency ?? DEFAULT_CONCURRENCY,
    chunkTimeoutMs: CHUNK_TIMEOUT_MS,
    names: o.names,
    resume: o.resume,
    signal: o.signal,
    onProgress: o.onProgress
  })

  /** The tables of `fileIds`, in order, with the packs they lie in; checked to be ours and what was asked. */
  const tables = async (fileIds: string[]): Promise<{ tables: M.FileTable[], packs: Map<string, M.FileTable>, vendors: M.VendorAddrs[], stats: M.VendorStats[] }> => {
    const out: M.FileTable[] = []
    const packs = new Map<string, M.FileTable>()
    const vendors = new Map<string, M.VendorAddrs>()
    const stats = new Map<string, M.VendorStats>()
    while (out.length < fileIds.length) {
      const r = await ask({ t: 'get-many', fileIds: fileIds.slice(out.length, out.length + M.MAX_FILES) }, { tables: M.Tables })
      if (r.tables.length === 0) throw new IntegrityError('the FAT answered with no tables')
      for (const [k, t] of r.tables.entries()) {
        const want = fileIds[out.length]
        if (t.fileId !== want || t.owner !== self) throw new IntegrityError(`the FAT answered with another file's table than ${want}`)
        // the last table may be the first page of a large one: the rest through get
        const next = k === r.tables.length - 1 ? r.next : undefined
        out.push(next == null ? t : await wholeTable({ table: t, next }, async from => await ask({ t: 'get', fileId: want, from }, { table: M.TableReply })))
      }
      for (const p of r.packs) if (p.owner === self && p.kind === 'pack') packs.set(p.fileId, p)
      r.vendors.forEach(v => vendors.set(v.vendor, v))
      r.stats.forEach(v => stats.set(v.vendor, v))
    }
    for (const t of out) {
      const pack = t.packed != null ? packs.get(t.packed.pack) : undefined
      if (t.packed != null && (pack == null || t.packed.offset + t.size > pack.size)) throw new IntegrityError(`the FAT did not send the pack of file ${t.fileId}`)
    }
    return { tables: out, packs, vendors: [...vendors.values()], stats: [...stats.values()] }
  }

  const downloadMany = async (files: Array<{ fileId: string, out: string }>, o: DownloadOptions = {}): Promise<Array<DownloadResult & { released: boolean }>> => {
    if (files.length === 0) throw new InvalidArgumentError('ID: name at least one file to download')
    files.forEach(f => { checkFileId(f.fileId) })
    const found = await tables(files.map(f => f.fileId))
    // a packed file is cut from its pack, fetched once into the first such file's folder
    const packOuts = new Map<string, string>()
    for (const [f, t] of found.tables.entries()) {
      if (t.packed != null && !packOuts.has(t.packed.pack)) packOuts.set(t.packed.pack, join(dirname(files[f].out), `.stor-pack-${t.packed.pack}`))
    }
    const reply = (table: M.FileTable): M.Message<typeof M.TableReply> => ({ t: 'table', table, vendors: found.vendors, stats: found.stats })
    const items = [
      ...found.tables.flatMap((t, f) => t.packed == null ? [{ reply: reply(t), out: files[f].out }] : []),
      ...[...packOuts].map(([pack, out]) => ({ reply: reply(found.packs.get(pack) as M.FileTable), out }))
    ]
    const fetched = await download({ node, key: opts.key, keystore, log, paths, buffers }, items, {
      concurrency: o.concurrency ?? DEFAULT_CONCURRENCY, chunkTimeoutMs: CHUNK_TIMEOUT_MS, resume: o.resume, signal: o.signal, onProgress: o.onProgress
    })
    const byOut = new Map(fetched.map(r => [r.out, r]))
    await unpack(found.tables.flatMap((t, f) => t.packed != null ? [{ table: t, out: files[f].out }] : []), packOuts)
    const results = found.tables.map((t, f): DownloadResult => t.packed == null
      ? byOut.get(files[f].out) as DownloadResult
      : { fileId: t.fileId, out: files[f].out, size: t.size, chunks: 0, sources: [], fallbacks: 0, fetched: 0, reused: 0, duplicates: 0, pack: t.packed.pack })
    if (o.release === true) await parallel(16, files.length, async f => { await release(files[f].fileId) })
    return results.map(r => ({ ...r, released: o.release === true }))
  }

  const downloadRange = async (fileId: string, to: RangeWriter, o: TransferOptions & { start?: number, end?: number } = {}): Promise<{ fileId: string, size: number, start: number, end: number }> => {
    checkFileId(fileId)
    const found = await tables([fileId])
    const own = found.tables[0]
    const start = o.start ?? 0
    const end = o.end ?? own.size
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > own.size) throw new InvalidArgumentError(`range ${start}-${end} is not within file ${fileId} of ${own.size} bytes`)
    // a packed file's bytes lie in its pack, from its offset
    const table = own.packed != null ? found.packs.get(own.packed.pack) as M.FileTable : own
    const shift = own.packed?.offset ?? 0
    const reply: M.Message<typeof M.TableReply> = { t: 'table', table, vendors: found.vendors, stats: found.stats }
    await streamRange(table, start + shift, end + shift, to, async (seg, into) => {
      await download({ node, key: opts.key, keystore, log, paths, buffers }, [{ reply, out: fileId, chunks: { from: seg.from, to: seg.to }, sink: { write: async (bytes, offset) => { copyInto(into, seg, bytes, offset) } } }], {
        concurrency: o.concurrency ?? DEFAULT_CONCURRENCY, chunkTimeoutMs: CHUNK_TIMEOUT_MS, resume: false, signal: o.signal
      })
    })
    return { fileId, size: own.size, start, end }
  }

  const records = createRecordStore(keystore, {
    written: async msg => (await ask(msg, { 'records-written': M.RecordsWritten })).applied,
    listed: async msg => await ask(msg, { 'record-list': M.RecordList })
  })

  return {
    peerId: node.peerId.toString(),
    records,
    downloadRange,
    async uploadStream (body, size, o) {
      if (!Number.isSafeInteger(size) || size < 0) throw new InvalidArgumentError(`size: ${size} is not a byte count`)
      return (await uploadMany([streamSource(o?.name ?? 'stream', size, body)], { ...o, names: [o?.name ?? 'stream'] }))[0]
    },
    allocate,
    renew,
    async upload (path, o = {}) {
      return (await uploadMany([path], { ...o, names: o.name != null ? [o.name] : undefined }))[0]
    },
    async uploadMany (paths, o = {}) {
      return await uploadMany(paths, o)
    },
    async download (fileId, out, o = {}) {
      return (await downloadMany([{ fileId, out }], o))[0]
    },
    downloadMany,
    async paths (o = {}) {
      const s = await ask({ t: 'status' }, { 'status-reply': M.StatusReply }, false)
      const vendors = s.vendors.filter(v => v.alive)
      const samples = await paths.measure(node, vendors.map(v => ({ vendor: v.vendor, addrs: v.addrs })), { fresh: o.fresh })
      return rank(samples, vendors.map(v => ({ vendor: v.vendor, available: v.available, free: v.free, inflight: v.inflight, availability: v.availability })))
    },
    async list () {
      return (await ask({ t: 'list' }, { files: M.Files })).files
    },
    async check (fileIds = []) {
      fileIds.forEach(checkFileId)
      const r = await ask({ t: 'check', fileIds }, { checked: M.Checked })
      return { files: r.files, missing: r.missing }
    },
    release,
    table,
    async status () {
      return await ask({ t: 'status' }, { 'status-reply': M.StatusReply }, false)
    },
    async leader () {
      const r = await ask({ t: 'members' }, { 'members-reply': M.MembersReply }, false)
      return r.leader !== '' ? r.leader : undefined
    }
  }
}
