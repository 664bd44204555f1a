import { setMaxListeners } from 'node:events'
import { open as openFile, rename, rm, type FileHandle } from 'node:fs/promises'
import type { PrivateKey } from '@libp2p/interface'
import { IntegrityError, UnreachableError, InvalidArgumentError, LocalDiskError, localDiskError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { fetchChunk } from '../../protocol/chunk-transfer.ts'
import type * as M from '../../protocol/messages.ts'
import { signRequest } from '../../protocol/auth.ts'
import type { StorNode } from '../../node/index.ts'
import { sha256 } from '../../store/devices.ts'
import { openDirect, writeAt } from '../../store/direct.ts'
import type { BufferPool } from '../../buffer-pool.ts'
import { decryptChunk } from './cipher.ts'
import { CHUNK_OVERHEAD } from '../../protocol/ids.ts'
import type { Keystore } from './keystore.ts'
import { rank, type PathCache, type PathScore } from './rank.ts'
import { DownloadJournal } from './resume.ts'
import type { Progress } from './types.ts'
import { MAX_WINDOW_BYTES, Window } from './window.ts'

export interface DownloadContext {
  node: StorNode
  key: PrivateKey
  keystore: Keystore
  log: Logger
  paths: PathCache
  /** Where chunk buffers come from and go back to. */
  buffers: BufferPool
}

export interface DownloadOptions {
  /** Most chunks in flight; the window adapts below it. */
  concurrency: number
  chunkTimeoutMs: number
  /** Keep a partial file and its record of verified chunks, and resume from them (default true). */
  resume?: boolean
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface DownloadResult {
  fileId: string
  out: string
  size: number
  chunks: number
  /** where each chunk came from, by index */
  sources: Array<{ chunk: number, vendor: string }>
  /** attempts that failed and went to another replica */
  fallbacks: number
  /** chunks fetched in this run */
  fetched: number
  /** chunks verified by an earlier, interrupted run and not fetched again */
  reused: number
  /** late chunks asked again of another replica (tail cutting) */
  duplicates: number
  /** the pack a small file was cut from (fetched once for all its files) */
  pack?: string
}

/**
 * Where plaintext goes instead of a file: each verified chunk's bytes with their offset in the
 * file, in any order; the chunk's window slot is held until `write` resolves (see range.ts).
 */
export interface ByteSink { write: (bytes: Buffer, offset: number) => Promise<void> }

/** One file to fetch, into `out`, or into `sink` (then only chunks `from` to `to`, exclusive, if given). */
export interface DownloadItem { reply: M.Message<typeof M.TableReply>, out: string, sink?: ByteSink, chunks?: { from: number, to: number } }

/** Initial guess of a path's transfer rate, bytes per ms (100 MB/s), until a chunk is timed. */
const GUESS_BYTES_PER_MS = 100_000
/** A chunk is late, and asked of another replica too, after this many times its expected time. */
const LATE_FACTOR = 2
const LATE_MIN_MS = 50

/** Expected time of a chunk on one vendor: its round trip plus bytes at its observed rate. */
class VendorModel {
  inflight = 0
  chunks = 0
  dead = false
  private latencyMs: number
  private msPerByte = 1 / GUESS_BYTES_PER_MS
  private timed = 0

  constructor (readonly vendor: string, readonly path: PathScore | undefined) {
    this.latencyMs = path?.reachable === true ? path.rttMs : 1000
  }

  expected (bytes: number): number { return this.latencyMs + bytes * this.msPerByte }

  /** Time until a new chunk of `bytes` would be done here, with `inflight` ahead of it. */
  cost (bytes: number): number { return (this.inflight + 1) * this.expected(bytes) }

  observe (bytes: number, ms: number): void {
    const a = this.timed < 3 ? 0.5 : 0.2
    this.timed++
    if (bytes >= 64 * 1024) {
      const per = Math.max(0, ms - this.latencyMs) / bytes
      this.msPerByte = (1 - a) * this.msPerByte + a * per
    } else {
      this.latencyMs = (1 - a) * this.latencyMs + a * ms
    }
  }
}

interface Job { item: number, i: number, entry: M.ChunkEntry, tried: Set<string>, attempts: Map<string, { started: number, ctrl: AbortController }>, done: boolean }

/**
 * Fetches the chunks of one or more files from their replicas. Each chunk goes to the replica
 * that would finish it soonest (its measured round trip and observed rate times the chunks
 * already queued there), so chunks spread over replicas in proportion to their speed; a chunk
 * that is late is asked of another replica too, and the first verified copy wins (tail cutting).
 * Any error moves the chunk to the next replica. Every chunk's hash and authentication tag are
 * checked before it is written in place; verified chunks are recorded next to the partial file,
 * so an interrupted download, run again, fetches only what is missing.
 */
export async function download (ctx: DownloadContext, items: DownloadItem[], opts: DownloadOptions): Promise<DownloadResult[]> {
  // every chunk in flight listens to the caller's signal
  if (opts.signal != null) setMaxListeners(0, opts.signal)
  const addrs = new Map<string, string[]>()
  const stats: M.VendorStats[] = []
  for (const { reply } of items) {
    reply.vendors.forEach(v => addrs.set(v.vendor, v.addrs))
    stats.push(...reply.stats)
  }
  const samples = await ctx.paths.measure(ctx.node, [...addrs].map(([vendor, a]) => ({ vendor, addrs: a })))
  const scores = new Map(rank(samples, stats).map(p => [p.vendor, p]))
  const models = new Map([...addrs.keys()].map(v => [v, new VendorModel(v, scores.get(v))]))
  for (const m of models.values()) if (scores.get(m.vendor)?.reachable === false) m.dead = true
  ctx.log('download: %d files, paths %o', items.length, [...scores.values()].map(p => `${p.vendor.slice(-6)} rtt ${p.rttMs.toFixed(2)} score ${p.score.toFixed(3)}`))

  const results: DownloadResult[] = []
  const journals: Array<DownloadJournal | undefined> = []
  const handles: Array<Awaited<ReturnType<typeof openFile>> | undefined> = []
  // the same files opened for direct writes where the system allows it (see store/direct.ts)
  const directs: Array<Awaited<ReturnType<typeof openDirect>>> = []
  const jobs: Job[] = []
  let total = 0
  let bytesDone = 0
  let chunksDone = 0
  let chunksTotal = 0
  const closeAll = async (): Promise<void> => {
    await Promise.all([...handles, ...directs].map(async fh => { await fh?.close().catch(() => {}) }))
    await Promise.all(journals.map(async j => { await j?.close() }))
  }
  try {
    for (const [f, { reply, out, sink, chunks: wanted }] of items.entries()) {
      const { table } = reply
      const part = `${out}.stor-part`
      // a sink keeps no partial file and no journal: what it got is its own business
      const journal = sink != null ? undefined : await DownloadJournal.open(part, table, opts.resume !== false)
      journals.push(journal)
      const fh = journal == null ? undefined : await openFile(part, journal.reused.size > 0 ? 'r+' : 'w').catch((err: any) => { throw new InvalidArgumentError(`OUT: cannot write ${out} (${err.code ?? err.message})`) })
      handles.push(fh)
      directs.push(fh == null ? undefined : await openDirect(part, 'write'))
      const chunks = wanted == null ? table.chunks : table.chunks.filter(c => c.i >= wanted.from && c.i < wanted.to)
      total += chunks.reduce((n, c) => n + Math.min(table.chunkSize, table.size - c.i * table.chunkSize), 0)
      chunksTotal += chunks.length
      results.push({ fileId: table.fileId, out, size: table.size, chunks: chunks.length, sources: [], fallbacks: 0, fetched: 0, reused: journal?.reused.size ?? 0, duplicates: 0 })
      for (const c of chunks) {
        const plain = Math.min(table.chunkSize, table.size - c.i * table.chunkSize)
        if (journal?.reused.has(c.i) === true) { bytesDone += plain; chunksDone++; continue }
        jobs.push({ item: f, i: c.i, entry: c, tried: new Set(), attempts: new Map(), done: false })
      }
    }
    const progress = (): void => { opts.onProgress?.({ phase: 'download', bytes: bytesDone, total, chunks: chunksDone, chunksTotal, files: items.length }) }
    progress()

    const largest = Math.max(1, ...jobs.map(j => j.entry.size))
    const small = largest < 256 * 1024
    const window = new Window(small ? 4 : 2, small ? 16 : 4, Math.max(2, opts.concurrency), MAX_WINDOW_BYTES)
    let pending = [...jobs]
    let failure: unknown
    let wake: () => void = () => {}
    const running = new Set<Promise<void>>()

    /** The live replicas of a job not yet tried, cheapest first. */
    const choices = (job: Job): VendorModel[] => job.entry.replicas
      .map(r => models.get(r.vendor) ?? new VendorModel(r.vendor, undefined))
      .filter(m => !m.dead && !job.tried.has(m.vendor))
      .sort((a, b) => a.cost(job.entry.size) - b.cost(job.entry.size))

    const finish = async (job: Job, m: VendorModel, plain: Buffer): Promise<void> => {
      const { reply, sink } = items[job.item]
      if (sink != null) await sink.write(plain, job.i * reply.table.chunkSize)
      // chunks start on page boundaries of the file (for the usual chunk sizes) and of their pooled
      // buffers, so they go to disk direct, without a copy through the page cache
      else await writeAt(handles[job.item] as FileHandle, directs[job.item], plain, job.i * reply.table.chunkSize).catch(err => { throw localDiskError(`${items[job.item].out}.stor-part`, err) })
      journals[job.item]?.record(job.i)
      job.done = true
      for (const [v, a] of job.attempts) if (v !== m.vendor) a.ctrl.abort(new Error('another replica was faster'))
      const r = results[job.item]
      r.sources.push({ chunk: job.i, vendor: m.vendor })
      r.fetched++
      m.chunks++
      bytesDone += plain.byteLength
      chunksDone++
      progress()
    }

    const attempt = (job: Job, m: VendorModel, duplicate: boolean): void => {
      const { table } = items[job.item].reply
      const ctrl = new AbortController()
      const started = performance.now()
      job.tried.add(m.vendor)
      job.attempts.set(m.vendor, { started, ctrl })
      m.inflight++
      if (duplicate) results[job.item].duplicates++
      const size = job.entry.size
      const p = (async () => {
        await window.acquire(size)
        let ok = false
        // once fetchChunk has returned or thrown nothing writes into `sealed`, nor into `plain`
        // once it is written out: both always go back
        const sealed = ctx.buffers.take(size)
        let plain: Buffer | undefined
        try {
          const signal = AbortSignal.any([ctrl.signal, AbortSignal.timeout(opts.chunkTimeoutMs), ...(opts.signal != null ? [opts.signal] : [])])
          const request = await signRequest(ctx.key, table.owner, { t: 'fetch' as const, fileId: table.fileId, chunkId: job.entry.id })
          await fetchChunk(ctx.node, { peer: m.vendor, addrs: addrs.get(m.vendor) ?? [] }, request, size, signal, sealed)
          if (job.done) { ok = true; return }
          if (sha256(sealed) !== job.entry.id) throw new IntegrityError(`chunk ${job.i} from ${m.vendor} does not match its hash`)
          plain = decryptChunk(fileKeys[job.item], table.fileId, job.i, sealed, ctx.buffers.take(size - CHUNK_OVERHEAD))
          m.observe(size, performance.now() - started)
          ok = true
          if (!job.done) await finish(job, m, plain)
        } catch (err: any) {
          // the local disk's failure is no replica's: stop, and say so
          if (err instanceof LocalDiskError) { failure ??= err; return }
          if (job.done || opts.signal?.aborted === true || failure != null) return
          ctx.log('chunk %d of %s from %s failed: %s', job.i, table.fileId, m.vendor, err.message)
          results[job.item].fallbacks++
          if (err instanceof UnreachableError && !/timed? ?out|aborted/i.test(err.message)) m.dead = true
          job.attempts.delete(m.vendor)
          if (job.attempts.size === 0) {
            if (choices(job).length > 0) pending.unshift(job)
            else failure ??= new UnreachableError(`chunk ${job.i} of file ${table.fileId} could not be fetched from any of its ${job.entry.replicas.length} replicas: ${err.message}`)
          }
        } finally {
          ctx.buffers.give(sealed)
          if (plain != null) ctx.buffers.give(plain)
          m.inflight--
          window.release(size, ok)
        }
      })()
      running.add(p)
      void p.finally(() => { running.delete(p); wake() })
    }

    const fileKeys = items.map(({ reply }) => ctx.keystore.unwrap(reply.table.cipher.wrappedKey, reply.table.fileId))

    while (failure == null) {
      if (opts.signal?.aborted === true) break
      // issue: the next chunk to its cheapest replica, while the window has room
      while (pending.length > 0 && running.size < window.limit) {
        const job = pending.shift() as Job
        if (job.done) continue
        const best = choices(job)[0]
        if (best == null) { failure ??= new UnreachableError(`chunk ${job.i} of file ${items[job.item].reply.table.fileId}: no replica left to ask`); break }
        attempt(job, best, false)
      }
      if (pending.length === 0 && running.size === 0) break
      // tail cutting: with room to spare and nothing new to send, ask again for a late chunk
      if (pending.length === 0 && running.size < window.limit) {
        const now = performance.now()
        for (const job of jobs) {
          if (job.done || job.attempts.size !== 1) continue
          const [[v, a]] = [...job.attempts]
          const late = Math.max(LATE_MIN_MS, LATE_FACTOR * (models.get(v)?.expected(job.entry.size) ?? 0))
          if (now - a.started < late) continue
          const alt = choices(job)[0]
          if (alt == null) continue
          ctx.log('chunk %d: %s is late (%d ms), asking %s too', job.i, v, Math.round(now - a.started), alt.vendor)
          attempt(job, alt, true)
          if (running.size >= window.limit) break
        }
      }
      await new Promise<void>(resolve => {
        // wake up for tail cutting even when nothing completes
        const t = setTimeout(resolve, pending.length === 0 && running.size > 0 ? LATE_MIN_MS : 1000)
        wake = () => { clearTimeout(t); resolve() }
      })
      pending = pending.filter(j => !j.done)
    }
    // stop everything still running and wait for it, so no stream outlives the call
    for (const job of jobs) for (const a of job.attempts.values()) if (!job.done) a.ctrl.abort(new Error('download stopped'))
    await Promise.allSettled([...running])
    opts.signal?.throwIfAborted()
    if (failure != null) throw failure

    for (const [f, { reply }] of items.entries()) {
      const fh = handles[f]
      try {
        await fh?.truncate(reply.table.size)
        await fh?.sync()
      } catch (err) {
        throw localDiskError(`${items[f].out}.stor-part`, err)
      }
    }
  } catch (err) {
    await closeAll()
    if (opts.resume === false) await Promise.all(items.map(async ({ out, sink }) => { if (sink == null) await rm(`${out}.stor-part`, { force: true }) }))
    throw err
  }
  await closeAll()
  for (const [f, { out, sink }] of items.entries()) {
    if (sink == null) await rename(`${out}.stor-part`, out).catch(err => { throw localDiskError(out, err) })
    await journals[f]?.remove()
    results[f].sources.sort((a, b) => a.chunk - b.chunk)
  }
  return results
}
