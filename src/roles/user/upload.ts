import { randomBytes } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { InvalidArgumentError, NoSpaceError, NotFoundError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { forwardChunk } from '../../protocol/chunk-transfer.ts'
import type * as M from '../../protocol/messages.ts'
import { sign, verify } from '../../protocol/sign.ts'
import type { StorNode } from '../../node/index.ts'
import { sha256 } from '../../store/devices.ts'
import { parallel } from '../../parallel.ts'
import type { BufferPool } from '../../buffer-pool.ts'
import { encryptChunk, nonceOf } from './cipher.ts'
import { CHUNK_OVERHEAD } from '../../protocol/ids.ts'
import type { Keystore } from './keystore.ts'
import { keepLease } from './lease.ts'
import { planPacks, readRange } from './pack.ts'
import { rank, score, type PathCache } from './rank.ts'
import { UploadJournal, type UploadState } from './resume.ts'
import { FileChangedError, ShortReadError, stampOf, unchanged } from './changes.ts'
import type { Progress } from './types.ts'
import { MAX_WINDOW_BYTES, Window } from './window.ts'

export interface UploadContext {
  node: StorNode
  key: PrivateKey
  keystore: Keystore
  log: Logger
  paths: PathCache
  dataDir: string
  /** Where chunk buffers come from and go back to. */
  buffers: BufferPool
  allocate: (sizes: number[], replicas: number, chunkSize: number, packed?: number[]) => Promise<M.Message<typeof M.Allocated>>
  renew: (allocationId: string) => Promise<M.Message<typeof M.Allocated>>
  commit: (allocationId: string, tables: M.FileTable[]) => Promise<void>
}

export interface UploadOptions {
  replicas: number
  chunkSize: number
  /** Sub-chunks each vendor cuts a chunk into, over distinct devices (fewer for small chunks, see MIN_PIECE). */
  pieces: number
  /** Most chunks in flight; the window adapts below it. */
  concurrency: number
  /** How long a vendor may stay silent on one chunk before it is marked unused. */
  chunkTimeoutMs: number
  /** Names to record instead of the files' base names. */
  names?: string[]
  /** Resume an interrupted run of the same upload, and record this one (default true). */
  resume?: boolean
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

/**
 * Bytes to store that are not a file on disk (a stream, a network body): `size` is known in
 * advance and `read` fills `into` with the `length` bytes at `offset`. Chunks are read in
 * increasing order, each once, so a source may be sequential (see source.ts). Not resumable.
 */
export interface ByteSource { name: string, size: number, read: (offset: number, length: number, into: Buffer) => Promise<void> }

export interface Placement { chunk: number, chunkId: string, vendors: string[] }

export interface UploadResult {
  fileId: string
  path: string
  size: number
  chunks: number
  placements: Placement[]
  /** chunks sent in this run */
  sent: number
  /** chunks placed by an earlier, interrupted run of the same upload and not sent again */
  reused: number
  /** the pack a small file was stored in: `placements` are the pack's chunks, and their sends count with its first file */
  pack?: string
}

/** A piece smaller than this gains nothing from its own device and costs an fsync: small chunks are cut into fewer. */
export const MIN_PIECE = 64 * 1024

/** What is sent: a file, or a pack of small files; `slot` is its place in the allocation. */
interface Source {
  slot: number
  name: string
  size: number
  fileId: string
  fileKey: Buffer
  chunks: M.ChunkEntry[]
  sent: number
  reused: number
  /** reads `length` bytes at `offset` into `into` */
  read: (offset: number, length: number, into: Buffer) => Promise<void>
}

/** An interrupted run's allocation, renewed; undefined when it is gone (its chunks went with it). */
async function renewed (ctx: UploadContext, allocationId: string): Promise<M.Message<typeof M.Allocated> | undefined> {
  try {
    return await ctx.renew(allocationId)
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err
    ctx.log('allocation %s of an interrupted run is gone: starting afresh', allocationId)
    return undefined
  }
}

/** Failures after which a vendor is marked unused for the rest of an upload. */
const MAX_FAILURES = 3

/**
 * The first `n` of `ordered` (best first), but skipping a vendor whose zone a chosen one or a
 * holder in `holders` is in while a vendor of another zone is left: replicas of one chunk go to
 * distinct failure domains whenever enough of them have room.
 */
export function distinctZones (ordered: string[], n: number, holders: Set<string>, zoneOf: (v: string) => string | undefined): string[] {
  const used = new Set([...holders].map(zoneOf).filter(z => z != null))
  const out: string[] = []
  for (const v of ordered) {
    if (out.length >= n) break
    const z = zoneOf(v)
    if (z != null && used.has(z)) continue
    out.push(v)
    if (z != null) used.add(z)
  }
  for (const v of ordered) if (out.length < n && !out.includes(v)) out.push(v)
  return out
}

/**
 * Stores files under one allocation and one commit: rank the candidates, encrypt and hash each
 * chunk, send it along a pipeline of replica vendors, resend what fails to other candidates.
 * Chunks move in parallel within an adaptive window; each placed chunk is recorded in the data
 * dir, so an interrupted upload, run again with the same arguments, sends only what is missing.
 */
export async function upload (ctx: UploadContext, inputs: Array<string | ByteSource>, opts: UploadOptions, retried = false): Promise<UploadResult[]> {
  if (inputs.length === 0) throw new InvalidArgumentError('FILE: name at least one file to upload')
  // every chunk in flight listens to the caller's signal
  if (opts.signal != null) setMaxListeners(0, opts.signal)
  const infos = await Promise.all(inputs.map(async input => {
    if (typeof input !== 'string') return { size: input.size, mtimeMs: 0, ctimeMs: 0, ino: 0 }
    const info = await stat(input).catch(() => { throw new InvalidArgumentError(`FILE: ${input} does not exist or cannot be read`) })
    if (!info.isFile()) throw new InvalidArgumentError(`FILE: ${input} is not a regular file`)
    return info
  }))
  // a byte source is read once, in order: nothing to resume from
  if (inputs.some(i => typeof i !== 'string')) opts = { ...opts, resume: false }
  const paths = inputs.map(i => typeof i === 'string' ? i : i.name)
  const sizes = infos.map(i => i.size)
  // a file written to while it is read is not stored: stamped now, checked after its last read
  const stamps = infos.map(stampOf)
  const isFile = inputs.map(i => typeof i === 'string')
  const changed = new Set<number>()
  const owner = ctx.node.peerId.toString()
  const names = paths.map((p, f) => (opts.names?.[f] ?? basename(p)).slice(0, 255))

  const packs = planPacks(sizes, opts.chunkSize)
  const packOf = new Map(packs.flatMap((p, k) => p.members.map((m, j) => [m, { pack: k, offset: p.offsets[j] }] as const)))
  // the allocation's files: every path, then the packs
  const slots = [...sizes, ...packs.map(p => p.size)]

  const journal = await UploadJournal.key(ctx.dataDir, { owner, paths, sizes, mtimes: infos.map(i => i.mtimeMs), ctimes: infos.map(i => i.ctimeMs), inodes: infos.map(i => i.ino), names, replicas: opts.replicas, chunkSize: opts.chunkSize, pieces: opts.pieces, packs: packs.length })
  let state: UploadState | undefined = opts.resume !== false ? await journal.load() : undefined
  const resumed = state != null ? await renewed(ctx, state.allocation.allocationId) : undefined
  let alloc: M.Message<typeof M.Allocated>
  let fileKeys: Buffer[]
  if (state != null && resumed != null) {
    alloc = resumed
    fileKeys = state.wrappedKeys.map((w, f) => ctx.keystore.unwrap(w, alloc.fileIds[f]))
  } else {
    state = undefined
    alloc = await ctx.allocate(slots, opts.replicas, opts.chunkSize, [...packOf.keys()])
    if (alloc.fileIds.length !== slots.length) throw new InvalidArgumentError(`the FAT allocated ${alloc.fileIds.length} files for ${slots.length}`)
    fileKeys = slots.map(() => randomBytes(32))
    if (opts.resume !== false) journal.start(alloc, fileKeys.map((k, f) => ctx.keystore.wrap(k, alloc.fileIds[f])))
  }
  const { allocationId } = alloc
  /** Reads a range of file `f`; false (and `f` marked changed) if it is shorter than it was, or gone. */
  const readChecked = async (f: number, offset: number, length: number, into: Buffer, at?: number): Promise<boolean> => {
    if (changed.has(f)) return false
    const input = inputs[f]
    // a byte source's failure is its own (a network body that ended short): it fails the upload
    if (typeof input !== 'string') { await input.read(offset, length, into.subarray(at ?? 0, (at ?? 0) + length)); return true }
    try {
      await readRange(input, offset, length, into, at)
      return true
    } catch (err: any) {
      if (!(err instanceof InvalidArgumentError) && err.code !== 'ENOENT') throw err
      changed.add(f)
      return false
    }
  }
  const source = (slot: number, name: string, read: Source['read']): Source =>
    ({ slot, name, size: slots[slot], fileId: alloc.fileIds[slot], fileKey: fileKeys[slot], chunks: new Array(Math.ceil(slots[slot] / opts.chunkSize)), sent: 0, reused: 0, read })
  const sources: Source[] = [
    ...paths.flatMap((path, f) => packOf.has(f) ? [] : [source(f, path, async (offset, length, into) => {
      if (!await readChecked(f, offset, length, into)) throw new ShortReadError(path)
    })]),
    ...packs.map((p, k) => source(paths.length + k, `pack of ${p.members.length} files`, async (offset, length, into) => {
      // a pack is one chunk: read whole, each file at its place (a file that changed is left out of
      // the commit, and its place in the pack zeroed)
      await Promise.all(p.members.map(async (m, j) => {
        const at = p.offsets[j] - offset
        if (!await readChecked(m, 0, sizes[m], into, at)) into.fill(0, at, at + sizes[m])
      }))
    }))
  ]
  const total = sources.reduce((a, s) => a + s.size, 0)
  let bytesDone = 0
  let chunksDone = 0
  const chunksTotal = sources.reduce((n, s) => n + s.chunks.length, 0)

  // the candidates' hops carry their grants: a lease renewal replaces them
  const hops = new Map(alloc.candidates.map(c => [c.vendor, c]))
  const remaining = new Map(alloc.candidates.map(c => [c.vendor, c.grant.bytes]))
  const assigned = new Map(alloc.candidates.map(c => [c.vendor, 0]))
  const reserve = (vendors: string[], bytes: number, direction: 1 | -1): void => {
    for (const v of vendors) {
      remaining.set(v, (remaining.get(v) ?? 0) - direction * bytes)
      assigned.set(v, (assigned.get(v) ?? 0) + direction * bytes)
    }
  }
  // chunks an earlier run placed count as sent and as taken from their vendors' grants
  const work: Array<[number, number]> = []
  sources.forEach((s, f) => {
    for (let i = 0; i < s.chunks.length; i++) {
      const done = state?.chunks[s.slot]?.get(i)
      if (done != null && done.replicas.length === opts.replicas) {
        s.chunks[i] = done
        s.reused++
        reserve(done.replicas.map(r => r.vendor), done.size, 1)
        bytesDone += Math.min(opts.chunkSize, s.size - i * opts.chunkSize)
        chunksDone++
      } else {
        work.push([f, i])
      }
    }
  })
  const intents = state?.intents
  state = undefined
  const progress = (): void => { opts.onProgress?.({ phase: 'upload', bytes: bytesDone, total, chunks: chunksDone, chunksTotal, files: paths.length }) }
  progress()

  /** Failures per vendor in this upload; one that fails MAX_FAILURES times (or cannot be reached) is marked unused. */
  const failures = new Map<string, number>()
  const usable = (v: string): boolean => (failures.get(v) ?? 0) < MAX_FAILURES
  const samples = await ctx.paths.measure(ctx.node, alloc.candidates.map(c => ({ vendor: c.vendor, addrs: c.addrs })))
  const scored = rank(samples, alloc.stats)
  for (const p of scored) if (!p.reachable) failures.set(p.vendor, MAX_FAILURES)
  const order = scored.map(p => p.vendor)
  // shares follow the score without its space term: the grants (and the FAT's high-water marks)
  // already bound what each vendor takes, and a half-full vendor should still take its share
  const statsOf = new Map(alloc.stats.map(x => [x.vendor, x]))
  const weight = new Map(scored.map(p => [p.vendor, Math.max(1e-6, score(p, statsOf.get(p.vendor), 0))]))
  const rankOf = new Map(order.map((v, i) => [v, i]))
  ctx.log('upload %s: %d files, %d bytes, %d chunks to send (%d placed before), candidates by score %o', allocationId, paths.length, total, work.length, chunksDone, scored.map(p => `${p.vendor.slice(-6)} ${p.score.toFixed(3)}`))

  /**
   * The usable vendors with the least bytes assigned for their score (so each takes a share in
   * proportion to its score), ordered best score first: the first hop carries the user's uplink.
   */
  const pick = (n: number, exclude: Set<string>, bytes: number): string[] => {
    const candidates = order.filter(v => usable(v) && !exclude.has(v) && (remaining.get(v) ?? 0) >= bytes)
    const load = (v: string): number => ((assigned.get(v) ?? 0) + bytes) / (weight.get(v) ?? 1e-6)
    // a vendor that failed lately comes after those that did not, whatever its share
    candidates.sort((a, b) => (failures.get(a) ?? 0) - (failures.get(b) ?? 0) || load(a) - load(b) || (rankOf.get(a) ?? 0) - (rankOf.get(b) ?? 0))
    return distinctZones(candidates, n, exclude, v => statsOf.get(v)?.zone).sort((a, b) => (rankOf.get(a) ?? 0) - (rankOf.get(b) ?? 0))
  }

  /**
   * Sends one sealed chunk until `replicas` vendors have signed receipts for it. `clean` is false
   * if a send failed: its stream may still hold views of `sealed`, so the buffer is not reused.
   */
  const place = async (src: Source, i: number, sealed: Uint8Array, chunkId: string, pieces: number): Promise<{ holders: M.Receipt[], clean: boolean }> => {
    const holders: M.Receipt[] = []
    let clean = true
    while (holders.length < opts.replicas) {
      const route = pick(opts.replicas - holders.length, new Set(holders.map(r => r.vendor)), sealed.byteLength)
      if (route.length === 0) {
        throw new NoSpaceError(`chunk ${i} of ${src.name} has ${holders.length} of ${opts.replicas} replicas and no candidate vendor is left to take it (${[...failures.values()].filter(n => n >= MAX_FAILURES).length} failed); try again, or lower --replicas`)
      }
      reserve(route, sealed.byteLength, 1)
      const header = await sign<M.ChunkHeader>(ctx.key, 'header', {
        owner, allocationId, fileId: src.fileId, chunkId, size: sealed.byteLength, pieces, route: route.map(v => hops.get(v) as M.Hop)
      })
      const signal = opts.signal != null ? AbortSignal.any([opts.signal, AbortSignal.timeout(opts.chunkTimeoutMs)]) : AbortSignal.timeout(opts.chunkTimeoutMs)
      const confirmed = new Set<string>()
      try {
        const reply = await forwardChunk(ctx.node, hops.get(route[0]) as M.Hop, header, 0, sealed, signal)
        for (const r of reply.receipts) {
          if (!route.includes(r.vendor) || r.chunkId !== chunkId || r.fileId !== src.fileId || r.size !== sealed.byteLength || confirmed.has(r.vendor)) continue
          await verify(r.vendor, 'receipt', r).then(() => { holders.push(r); confirmed.add(r.vendor) }, () => {})
        }
        for (const f of reply.failed) ctx.log('chunk %d: %s failed: %s', i, f.vendor, f.reason)
      } catch (err: any) {
        opts.signal?.throwIfAborted()
        ctx.log('chunk %d: %s failed: %s', i, route[0], err.message)
      }
      // a vendor that failed or stayed silent goes last (after repeated failures, unused); the chunk goes to another
      const failed = route.filter(v => !confirmed.has(v))
      for (const v of failed) failures.set(v, (failures.get(v) ?? 0) + 1)
      reserve(failed, sealed.byteLength, -1)
      if (failed.length > 0) clean = false
    }
    return { holders, clean }
  }

  const largest = Math.min(opts.chunkSize, Math.max(0, ...sources.map(x => x.size)))
  const small = largest < 256 * 1024
  const window = new Window(small ? 4 : 2, small ? 16 : 4, Math.max(2, opts.concurrency), MAX_WINDOW_BYTES)
  const lease = keepLease(alloc, ctx.renew, renewed => { for (const c of renewed.candidates) if (hops.has(c.vendor)) hops.set(c.vendor, c) }, ctx.log)
  try {
    await parallel(Math.max(2, opts.concurrency), work.length, async w => {
      const [f, i] = work[w]
      const src = sources[f]
      const plainSize = Math.min(opts.chunkSize, src.size - i * opts.chunkSize)
      await window.acquire(plainSize, opts.signal)
      let ok = false
      try {
        opts.signal?.throwIfAborted()
        // buffers go back to the pool only once nothing can touch them (a failed read or send may)
        const plain = ctx.buffers.take(plainSize)
        try {
          await src.read(i * opts.chunkSize, plainSize, plain)
        } catch (err) {
          // a file that shrank or went away: its other chunks are not sent either, the others go on
          if (!(err instanceof ShortReadError)) throw err
          ctx.buffers.give(plain)
          ok = true
          return
        }
        const sealed = ctx.buffers.take(plainSize + CHUNK_OVERHEAD)
        // a chunk an interrupted run had on its way is sealed again with the same nonce: if the
        // plaintext is unchanged it is the same chunk, and a vendor that stored it keeps one copy
        const before = intents?.[src.slot]?.get(i)
        encryptChunk(src.fileKey, src.fileId, i, plain, before != null ? Buffer.from(before.nonce, 'hex') : undefined, sealed)
        let chunkId = sha256(sealed)
        if (before != null && chunkId !== before.id) {
          encryptChunk(src.fileKey, src.fileId, i, plain, undefined, sealed)
          chunkId = sha256(sealed)
        }
        ctx.buffers.give(plain)
        journal.intent(src.slot, i, nonceOf(sealed).toString('hex'), chunkId)
        const pieces = Math.max(1, Math.min(opts.pieces, Math.ceil(sealed.byteLength / MIN_PIECE)))
        const { holders, clean } = await place(src, i, sealed, chunkId, pieces)
        if (clean) ctx.buffers.give(sealed)
        src.chunks[i] = { i, id: chunkId, size: sealed.byteLength, replicas: holders.map(r => ({ vendor: r.vendor, sig: r.sig })) }
        journal.record(src.slot, src.chunks[i])
        src.sent++
        ok = true
        bytesDone += plainSize
        chunksDone++
        progress()
      } finally {
        window.release(plainSize, ok)
      }
    })
  } finally {
    // what is placed is committed at once: the lease renewed last still has half its time
    lease.stop()
    await journal.close()
  }

  for (const [f, path] of paths.entries()) if (isFile[f] && !changed.has(f) && !await unchanged(path, stamps[f])) changed.add(f)
  ctx.log('upload %s: chunks placed, committing%s', allocationId, changed.size > 0 ? ` all but ${changed.size} files that changed as they were read` : '')
  const created = Date.now()
  const table = (slot: number, name: string, fileKey: Buffer, chunks: M.ChunkEntry[]): M.FileTable => ({
    fileId: alloc.fileIds[slot],
    owner,
    name,
    size: slots[slot],
    chunkSize: opts.chunkSize,
    replicas: opts.replicas,
    created,
    cipher: { alg: 'aes-256-gcm', wrappedKey: ctx.keystore.wrap(fileKey, alloc.fileIds[slot]) },
    chunks
  })
  const packSlot = (f: number): number => paths.length + (packOf.get(f)?.pack ?? 0)
  const bySlot = new Map(sources.map(s => [s.slot, s]))
  const kept = new Set(paths.flatMap((_, f) => changed.has(f) ? [] : [f]))
  const tables: M.FileTable[] = [
    ...paths.flatMap((_, f) => kept.has(f) ? [f] : []).map(f => {
      const p = packOf.get(f)
      if (p == null) return table(f, names[f], fileKeys[f], (bySlot.get(f) as Source).chunks)
      // a packed file is read with its pack's key
      return { ...table(f, names[f], fileKeys[packSlot(f)], []), packed: { pack: alloc.fileIds[packSlot(f)], offset: p.offset } }
    }),
    ...packs.flatMap((p, k) => p.members.some(m => kept.has(m)) ? [k] : []).map(k => ({ ...table(paths.length + k, `pack of ${packs[k].members.length} files`, fileKeys[paths.length + k], (bySlot.get(paths.length + k) as Source).chunks), kind: 'pack' as const }))
  ]
  try {
    // nothing to commit when every file changed: the allocation's lease ends and its chunks are erased
    if (tables.length > 0) await ctx.commit(allocationId, tables)
  } catch (err) {
    // the allocation is gone (its lease ended while the upload was stopped): its chunks were
    // erased by the FAT's settle order, so start over once with a new allocation
    if (err instanceof NotFoundError && !retried && sources.some(s => s.reused > 0)) {
      ctx.log('allocation %s is gone: starting over', allocationId)
      await journal.remove()
      return await upload(ctx, inputs, opts, true)
    }
    throw err
  }
  ctx.log('upload %s: committed', allocationId)
  await journal.remove()
  const placements = (s: Source): Placement[] => s.chunks.map(c => ({ chunk: c.i, chunkId: c.id, vendors: c.replicas.map(r => r.vendor) }))
  const results = [...kept].sort((a, b) => a - b).map((f): UploadResult => {
    const path = paths[f]
    const own = bySlot.get(f)
    if (own != null) return { fileId: own.fileId, path, size: own.size, chunks: own.chunks.length, sent: own.sent, reused: own.reused, placements: placements(own) }
    // a packed file has no chunks of its own: its bytes are in the pack's, whose sends count with its first file
    const pack = bySlot.get(packSlot(f)) as Source
    const first = packs[packSlot(f) - paths.length].members[0] === f
    return { fileId: alloc.fileIds[f], path, size: sizes[f], chunks: 0, sent: first ? pack.sent : 0, reused: first ? pack.reused : 0, placements: placements(pack), pack: pack.fileId }
  })
  if (changed.size > 0) throw new FileChangedError([...changed].sort((a, b) => a - b).map(f => paths[f]), results)
  return results
}
