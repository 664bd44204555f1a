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
  allocate: (bytes: number, replicas: number, chunkSize: number) => Promise<M.Message<typeof M.Allocated>>
  commit: (table: M.FileTable) => Promise<void>
}

export interface UploadOptions {
  replicas: number
  chunkSize: number
  /** Sub-chunks each vendor cuts a chunk into, over distinct devices. */
  pieces: number
  concurrency: number
  /** How long a vendor may stay silent on one chunk before it is marked unused. */
  chunkTimeoutMs: number
  name?: string
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface Placement { chunk: number, chunkId: string, vendors: string[] }

export interface UploadResult { fileId: string, size: number, chunks: number, placements: Placement[] }

/**
 * Stores a file: allocate, rank candidates, encrypt and hash each chunk, send it along a pipeline
 * of replica vendors, resend what fails to other candidates, and commit the final table.
 */
export async function upload (ctx: UploadContext, path: string, opts: UploadOptions): Promise<UploadResult> {
  const info = await stat(path).catch(() => { throw new InvalidArgumentError(`FILE: ${path} does not exist or cannot be read`) })
  if (!info.isFile()) throw new InvalidArgumentError(`FILE: ${path} is not a regular file`)
  const size = info.size
  const count = Math.ceil(size / opts.chunkSize)
  const alloc = await ctx.allocate(size, opts.replicas, opts.chunkSize)
  const { fileId } = alloc
  const owner = ctx.node.peerId.toString()
  const fileKey = randomBytes(32)
  const hops = new Map(alloc.candidates.map(c => [c.vendor, c]))
  const remaining = new Map(alloc.candidates.map(c => [c.vendor, c.grant.bytes]))
  const assigned = new Map(alloc.candidates.map(c => [c.vendor, 0]))
  const unused = new Set<string>()
  const order = ranked(await measure(ctx.node, alloc.candidates))
  const rank = new Map(order.map((v, i) => [v, i]))
  ctx.log('upload %s: %d bytes in %d chunks, candidates by latency %o', fileId, size, count, order)

  /** The least-loaded usable vendors, the fastest first: the first hop carries the user's uplink. */
  const pick = (n: number, exclude: Set<string>, bytes: number): string[] => {
    const usable = order.filter(v => !unused.has(v) && !exclude.has(v) && (remaining.get(v) ?? 0) >= bytes)
    usable.sort((a, b) => (assigned.get(a) ?? 0) - (assigned.get(b) ?? 0) || (rank.get(a) ?? 0) - (rank.get(b) ?? 0))
    return usable.slice(0, n).sort((a, b) => (rank.get(a) ?? 0) - (rank.get(b) ?? 0))
  }
  const reserve = (vendors: string[], bytes: number, sign_: 1 | -1): void => {
    for (const v of vendors) {
      remaining.set(v, (remaining.get(v) ?? 0) - sign_ * bytes)
      assigned.set(v, (assigned.get(v) ?? 0) + sign_ * bytes)
    }
  }

  const chunks: M.ChunkEntry[] = new Array(count)
  let sent = 0
  const fh = await openFile(path, 'r')
  try {
    await parallel(opts.concurrency, count, async i => {
      opts.signal?.throwIfAborted()
      const plainSize = Math.min(opts.chunkSize, size - i * opts.chunkSize)
      const plain = Buffer.allocUnsafe(plainSize)
      const { bytesRead } = await fh.read(plain, 0, plainSize, i * opts.chunkSize)
      if (bytesRead !== plainSize) throw new InvalidArgumentError(`FILE: ${path} changed while it was being read`)
      const sealed = encryptChunk(fileKey, fileId, i, plain)
      const chunkId = sha256(sealed)
      const holders: M.Receipt[] = []
      while (holders.length < opts.replicas) {
        const route = pick(opts.replicas - holders.length, new Set(holders.map(r => r.vendor)), sealed.byteLength)
        if (route.length === 0) {
          throw new NoSpaceError(`chunk ${i} has ${holders.length} of ${opts.replicas} replicas and no candidate vendor is left to take it (${unused.size} failed); try again, or lower --replicas`)
        }
        reserve(route, sealed.byteLength, 1)
        const header = await sign<M.ChunkHeader>(ctx.key, 'header', {
          owner, fileId, chunkId, size: sealed.byteLength, pieces: opts.pieces, route: route.map(v => hops.get(v) as M.Hop)
        })
        const signal = opts.signal != null ? AbortSignal.any([opts.signal, AbortSignal.timeout(opts.chunkTimeoutMs)]) : AbortSignal.timeout(opts.chunkTimeoutMs)
        let confirmed = new Set<string>()
        try {
          const reply = await forwardChunk(ctx.node, hops.get(route[0]) as M.Hop, header, 0, sealed, signal)
          for (const r of reply.receipts) {
            if (!route.includes(r.vendor) || r.chunkId !== chunkId || r.fileId !== fileId || r.size !== sealed.byteLength || confirmed.has(r.vendor)) continue
            await verify(r.vendor, 'receipt', r).then(() => { holders.push(r); confirmed.add(r.vendor) }, () => {})
          }
          for (const f of reply.failed) ctx.log('chunk %d: %s failed: %s', i, f.vendor, f.reason)
        } catch (err: any) {
          opts.signal?.throwIfAborted()
          ctx.log('chunk %d: %s failed: %s', i, route[0], err.message)
          confirmed = new Set()
        }
        // a vendor that failed or stayed silent is marked unused; the chunk goes to another
        const failed = route.filter(v => !confirmed.has(v))
        for (const v of failed) unused.add(v)
        reserve(failed, sealed.byteLength, -1)
      }
      chunks[i] = { i, id: chunkId, size: sealed.byteLength, replicas: holders.map(r => ({ vendor: r.vendor, sig: r.sig })) }
      sent += plainSize
      opts.onProgress?.({ phase: 'upload', bytes: sent, total: size })
    })
  } finally {
    await fh.close()
  }

  const table: M.FileTable = {
    fileId,
    owner,
    name: (opts.name ?? basename(path)).slice(0, 255),
    size,
    chunkSize: opts.chunkSize,
    replicas: opts.replicas,
    created: Date.now(),
    cipher: { alg: 'aes-256-gcm', wrappedKey: ctx.keystore.wrap(fileKey, fileId) },
    chunks
  }
  await ctx.commit(table)
  return { fileId, size, chunks: count, placements: chunks.map(c => ({ chunk: c.i, chunkId: c.id, vendors: c.replicas.map(r => r.vendor) })) }
}
