import { randomBytes } from 'node:crypto'
import { open as openFile, stat } from 'node:fs/promises'
import { basename } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { InvalidArgumentError, NoSpaceError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { forwardChunk } from '../../protocol/chunk-transfer.ts'
import type * as M from '../../protocol/messages.ts'
import { sign, verify } from '../../protocol/sign.ts'
import type { StorNode } from '../../node/index.ts'
import { sha256 } from '../../store/devices.ts'
import { parallel } from '../../parallel.ts'
import { encryptChunk } from './cipher.ts'
import type { Keystore } from './keystore.ts'
import { measure, ranked } from './rank.ts'
import type { Progress } from './types.ts'

export interface UploadContext {
  node: StorNode
  key: PrivateKey
  keystore: Keystore
  log: Logger
  allocate: (sizes: number[], replicas: number, chunkSize: number) => Promise<M.Message<typeof M.Allocated>>
  commit: (allocationId: string, tables: M.FileTable[]) => Promise<void>
}

export interface UploadOptions {
  replicas: number
  chunkSize: number
  /** Sub-chunks each vendor cuts a chunk into, over distinct devices. */
  pieces: number
  concurrency: number
  /** How long a vendor may stay silent on one chunk before it is marked unused. */
  chunkTimeoutMs: number
  /** Names to record instead of the files' base names. */
  names?: string[]
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface Placement { chunk: number, chunkId: string, vendors: string[] }

export interface UploadResult { fileId: string, path: string, size: number, chunks: number, placements: Placement[] }

interface Source { path: string, size: number, fileId: string, fileKey: Buffer, chunks: M.ChunkEntry[] }

/**
 * Stores files under one allocation and one commit: rank the candidates, encrypt and hash each
 * chunk, send it along a pipeline of replica vendors, resend what fails to other candidates.
 */
export async function upload (ctx: UploadContext, paths: string[], opts: UploadOptions): Promise<UploadResult[]> {
  if (paths.length === 0) throw new InvalidArgumentError('FILE: name at least one file to upload')
  const sizes = await Promise.all(paths.map(async path => {
    const info = await stat(path).catch(() => { throw new InvalidArgumentError(`FILE: ${path} does not exist or cannot be read`) })
    if (!info.isFile()) throw new InvalidArgumentError(`FILE: ${path} is not a regular file`)
    return info.size
  }))
  const alloc = await ctx.allocate(sizes, opts.replicas, opts.chunkSize)
  const { allocationId } = alloc
  const owner = ctx.node.peerId.toString()
  const sources: Source[] = paths.map((path, f) => ({ path, size: sizes[f], fileId: alloc.fileIds[f], fileKey: randomBytes(32), chunks: new Array(Math.ceil(sizes[f] / opts.chunkSize)) }))
  const work = sources.flatMap((s, f) => Array.from({ length: s.chunks.length }, (_, i) => [f, i] as const))
  const total = sizes.reduce((a, b) => a + b, 0)

  const hops = new Map(alloc.candidates.map(c => [c.vendor, c]))
  const remaining = new Map(alloc.candidates.map(c => [c.vendor, c.grant.bytes]))
  const assigned = new Map(alloc.candidates.map(c => [c.vendor, 0]))
  const unused = new Set<string>()
  const order = ranked(await measure(ctx.node, alloc.candidates))
  const rank = new Map(order.map((v, i) => [v, i]))
  ctx.log('upload %s: %d files, %d bytes in %d chunks, candidates by latency %o', allocationId, paths.length, total, work.length, order)

  /** The least-loaded usable vendors, the fastest first: the first hop carries the user's uplink. */
  const pick = (n: number, exclude: Set<string>, bytes: number): string[] => {
    const usable = order.filter(v => !unused.has(v) && !exclude.has(v) && (remaining.get(v) ?? 0) >= bytes)
    usable.sort((a, b) => (assigned.get(a) ?? 0) - (assigned.get(b) ?? 0) || (rank.get(a) ?? 0) - (rank.get(b) ?? 0))
    return usable.slice(0, n).sort((a, b) => (rank.get(a) ?? 0) - (rank.get(b) ?? 0))
  }
  const reserve = (vendors: string[], bytes: number, direction: 1 | -1): void => {
    for (const v of vendors) {
      remaining.set(v, (remaining.get(v) ?? 0) - direction * bytes)
      assigned.set(v, (assigned.get(v) ?? 0) + direction * bytes)
    }
  }

  /** Sends one sealed chunk until `replicas` vendors have signed receipts for it. */
  const place = async (src: Source, i: number, sealed: Uint8Array, chunkId: string): Promise<M.Receipt[]> => {
    const holders: M.Receipt[] = []
    while (holders.length < opts.replicas) {
      const route = pick(opts.replicas - holders.length, new Set(holders.map(r => r.vendor)), sealed.byteLength)
      if (route.length === 0) {
        throw new NoSpaceError(`chunk ${i} of ${src.path} has ${holders.length} of ${opts.replicas} replicas and no candidate vendor is left to take it (${unused.size} failed); try again, or lower --replicas`)
      }
      reserve(route, sealed.byteLength, 1)
      const header = await sign<M.ChunkHeader>(ctx.key, 'header', {
        owner, allocationId, fileId: src.fileId, chunkId, size: sealed.byteLength, pieces: opts.pieces, route: route.map(v => hops.get(v) as M.Hop)
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
      // a vendor that failed or stayed silent is marked unused; the chunk goes to another
      const failed = route.filter(v => !confirmed.has(v))
      for (const v of failed) unused.add(v)
      reserve(failed, sealed.byteLength, -1)
    }
    return holders
  }

  let sent = 0
  await parallel(opts.concurrency, work.length, async w => {
    opts.signal?.throwIfAborted()
    const [f, i] = work[w]
    const src = sources[f]
    const plainSize = Math.min(opts.chunkSize, src.size - i * opts.chunkSize)
    const plain = Buffer.allocUnsafe(plainSize)
    const fh = await openFile(src.path, 'r')
    try {
      const { bytesRead } = await fh.read(plain, 0, plainSize, i * opts.chunkSize)
      if (bytesRead !== plainSize) throw new InvalidArgumentError(`FILE: ${src.path} changed while it was being read`)
    } finally {
      await fh.close()
    }
    const sealed = encryptChunk(src.fileKey, src.fileId, i, plain)
    const chunkId = sha256(sealed)
    const holders = await place(src, i, sealed, chunkId)
    src.chunks[i] = { i, id: chunkId, size: sealed.byteLength, replicas: holders.map(r => ({ vendor: r.vendor, sig: r.sig })) }
    sent += plainSize
    opts.onProgress?.({ phase: 'upload', bytes: sent, total })
  })

  const created = Date.now()
  const tables: M.FileTable[] = sources.map((s, f) => ({
    fileId: s.fileId,
    owner,
    name: (opts.names?.[f] ?? basename(s.path)).slice(0, 255),
    size: s.size,
    chunkSize: opts.chunkSize,
    replicas: opts.replicas,
    created,
    cipher: { alg: 'aes-256-gcm', wrappedKey: ctx.keystore.wrap(s.fileKey, s.fileId) },
    chunks: s.chunks
  }))
  await ctx.commit(allocationId, tables)
  return sources.map(s => ({ fileId: s.fileId, path: s.path, size: s.size, chunks: s.chunks.length, placements: s.chunks.map(c => ({ chunk: c.i, chunkId: c.id, vendors: c.replicas.map(r => r.vendor) })) }))
}
