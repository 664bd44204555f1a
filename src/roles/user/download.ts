import { open as openFile, rename, rm } from 'node:fs/promises'
import { IntegrityError, UnreachableError, InvalidArgumentError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { fetchChunk } from '../../protocol/chunk-transfer.ts'
import type * as M from '../../protocol/messages.ts'
import type { StorNode } from '../../node/index.ts'
import { sha256 } from '../../store/devices.ts'
import { signRequest } from '../../protocol/auth.ts'
import type { PrivateKey } from '@libp2p/interface'
import { parallel } from '../../parallel.ts'
import { decryptChunk } from './cipher.ts'
import type { Keystore } from './keystore.ts'
import { measure } from './rank.ts'
import type { Progress } from './types.ts'

export interface DownloadContext {
  node: StorNode
  key: PrivateKey
  keystore: Keystore
  log: Logger
}

export interface DownloadOptions {
  concurrency: number
  chunkTimeoutMs: number
  signal?: AbortSignal
  onProgress?: (p: Progress) => void
}

export interface DownloadResult { fileId: string, size: number, chunks: number, sources: Array<{ chunk: number, vendor: string }>, fallbacks: number }

/**
 * Fetches every chunk from its best replica (by measured latency, spread over equals), falls back
 * to the next replica on any error or hash mismatch, decrypts, and writes the file in place.
 */
export async function download (ctx: DownloadContext, reply: M.Message<typeof M.TableReply>, out: string, opts: DownloadOptions): Promise<DownloadResult> {
  const { table } = reply
  const fileKey = ctx.keystore.unwrap(table.cipher.wrappedKey, table.fileId)
  const addrs = new Map(reply.vendors.map(v => [v.vendor, v.addrs]))
  const measures = await measure(ctx.node, reply.vendors)
  const latency = (v: string): number => measures.get(v)?.latencyMs ?? Number.POSITIVE_INFINITY
  const busy = new Map<string, number>()
  const sources: DownloadResult['sources'] = []
  let fallbacks = 0
  let done = 0

  const part = `${out}.stor-part`
  const fh = await openFile(part, 'w').catch((err: any) => { throw new InvalidArgumentError(`OUT: cannot write ${out} (${err.code ?? err.message})`) })
  try {
    await parallel(opts.concurrency, table.chunks.length, async i => {
      const c = table.chunks[i]
      // the best replica first; among equals the one with the fewest transfers in flight
      const replicas = c.replicas.map(r => r.vendor).sort((a, b) => latency(a) - latency(b) || (busy.get(a) ?? 0) - (busy.get(b) ?? 0))
      const errors: string[] = []
      for (const vendor of replicas) {
        opts.signal?.throwIfAborted()
        busy.set(vendor, (busy.get(vendor) ?? 0) + 1)
        try {
          const signal = opts.signal != null ? AbortSignal.any([opts.signal, AbortSignal.timeout(opts.chunkTimeoutMs)]) : AbortSignal.timeout(opts.chunkTimeoutMs)
          const request = await signRequest(ctx.key, table.owner, { t: 'fetch' as const, fileId: table.fileId, chunkId: c.id })
          const sealed = await fetchChunk(ctx.node, { peer: vendor, addrs: addrs.get(vendor) ?? [] }, request, c.size, signal)
          if (sha256(sealed) !== c.id) throw new IntegrityError(`chunk ${i} from ${vendor} does not match its hash`)
          const plain = decryptChunk(fileKey, table.fileId, i, sealed)
          await fh.write(plain, 0, plain.byteLength, i * table.chunkSize)
          sources.push({ chunk: i, vendor })
          done += plain.byteLength
          opts.onProgress?.({ phase: 'download', bytes: done, total: table.size })
          return
        } catch (err: any) {
          opts.signal?.throwIfAborted()
          ctx.log('chunk %d from %s failed: %s', i, vendor, err.message)
          errors.push(`${vendor}: ${err.message}`)
          fallbacks++
        } finally {
          busy.set(vendor, (busy.get(vendor) ?? 1) - 1)
        }
      }
      throw new UnreachableError(`chunk ${i} of file ${table.fileId} could not be fetched from any of its ${replicas.length} replicas: ${errors.join('; ')}`)
    })
    await fh.truncate(table.size)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await rm(part, { force: true })
    throw err
  }
  await fh.close()
  await rename(part, out)
  sources.sort((a, b) => a.chunk - b.chunk)
  return { fileId: table.fileId, size: table.size, chunks: table.chunks.length, sources, fallbacks }
}
