import { createHash } from 'node:crypto'
import { Worker } from 'node:worker_threads'
import { crc32 } from 'node:zlib'
import { makeHasher } from './checksum.ts'

/**
 * Hashes of request bodies (MD5 for the ETag, SHA-256 for a signed payload, a checksum the client
 * sent: see checksum.ts) computed on a worker
 * thread, beside the main thread that encrypts and sends the same bytes: on the gateway's PUT
 * path the two hashes took a fifth of the main thread's time.
 */

/** Bytes gathered before they go to the worker in one message. */
const BATCH_BYTES = 1024 * 1024
/** Bytes sent to the worker and not hashed yet, at most: a body waits for the worker beyond. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024
/** Batches kept for reuse once the worker hands them back. */
const MAX_SPARE_BATCHES = 16

// the worker's code, evaluated as CommonJS (a bundle has no file of its own to point a worker at)
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { crc32 } = require('node:zlib')
// esbuild with keepNames (tsx runs the tests so) wraps named functions in __name(): give it one
const __name = (target) => target
const makeHasher = ${makeHasher.toString()}
const jobs = new Map()
parentPort.on('message', m => {
  if (m.t === 'start') jobs.set(m.id, m.algorithms.map(a => makeHasher(a, createHash, crc32)))
  else if (m.t === 'update') { for (const h of jobs.get(m.id) ?? []) h.update(m.data); parentPort.postMessage({ t: 'hashed', id: m.id, bytes: m.data.byteLength, data: m.data }, [m.data.buffer]) }
  else if (m.t === 'digest') { const hs = jobs.get(m.id) ?? []; jobs.delete(m.id); parentPort.postMessage({ t: 'digest', id: m.id, digests: hs.map(h => h.digest()) }) }
  else if (m.t === 'drop') jobs.delete(m.id)
})
`

interface Job { pending: number, wake?: () => void, done?: (digests: string[]) => void, fail?: (err: Error) => void }

/** One worker thread shared by every body being hashed; it does not keep the process alive. */
export class HashWorker {
  private worker: Worker | undefined
  private readonly jobs = new Map<number, Job>()
  private next = 0
  private readonly spare: Array<Buffer<ArrayBuffer>> = []

  private start (): Worker {
    if (this.worker != null) return this.worker
    const w = new Worker(WORKER_SOURCE, { eval: true })
    w.unref()
    w.on('message', (m: { t: string, id: number, bytes?: number, data?: Uint8Array, digests?: string[] }) => {
      // a batch hashed comes back, to be filled again (fewer big buffers for the garbage collector)
      if (m.data != null && this.spare.length < MAX_SPARE_BATCHES) this.spare.push(Buffer.from(m.data.buffer as ArrayBuffer, 0, BATCH_BYTES))
      const job = this.jobs.get(m.id)
      if (job == null) return
      if (m.t === 'hashed') { job.pending -= m.bytes ?? 0; job.wake?.() }
      if (m.t === 'digest') { this.jobs.delete(m.id); job.done?.(m.digests ?? []) }
    })
    // a worker that dies fails the bodies it was hashing; the next body starts a new one
    w.on('error', err => { this.failAll(err) })
    w.on('exit', code => { if (this.worker === w) this.worker = undefined; this.failAll(new Error(`the hashing thread stopped (exit ${code})`)) })
    this.worker = w
    return w
  }

  private failAll (err: Error): void {
    for (const job of this.jobs.values()) { job.fail?.(err); job.wake?.() }
    this.jobs.clear()
  }

  /**
   * Hashes of one body with `algorithms` (e.g. ['md5', 'sha256', 'crc32']): feed it in order, then ask for
   * the digests. A body known to be smaller than one batch is hashed here, sparing the round trip.
   */
  hashing (algorithms: string[], size?: number): BodyHash {
    if (size != null && size < BATCH_BYTES) {
      const hs = algorithms.map(a => makeHasher(a, createHash, crc32))
      return { update: async piece => { for (const h of hs) h.update(piece) }, digest: async () => hs.map(h => h.digest()), drop: () => {} }
    }
    const worker = this.start()
    const id = this.next++
    const job: Job = { pending: 0 }
    this.jobs.set(id, job)
    worker.postMessage({ t: 'start', id, algorithms })
    // bytes are copied into a batch of their own (never a slice of node's shared pool), which is
    // handed over whole to the worker
    const newBatch = (): Buffer<ArrayBuffer> => this.spare.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES)
    let batch = newBatch()
    let batchBytes = 0
    let failed: Error | undefined
    const flush = (): void => {
      if (batchBytes === 0) return
      const data = batch.subarray(0, batchBytes)
      batch = newBatch()
      batchBytes = 0
      job.pending += data.byteLength
      worker.postMessage({ t: 'update', id, data }, [data.buffer as ArrayBuffer])
    }
    job.fail = err => { failed = err }
    return {
      update: async (piece: Uint8Array): Promise<void> => {
        if (failed != null) throw failed
        for (let at = 0; at < piece.byteLength;) {
          const n = Math.min(piece.byteLength - at, BATCH_BYTES - batchBytes)
          batch.set(piece.subarray(at, at + n), batchBytes)
          batchBytes += n
          at += n
          if (batchBytes === BATCH_BYTES) flush()
        }
        while (job.pending > MAX_PENDING_BYTES && failed == null) await new Promise<void>(resolve => { job.wake = resolve })
        if (failed != null) throw failed
      },
      digest: async (): Promise<string[]> => {
        if (failed != null) throw failed
        flush()
        return await new Promise<string[]>((resolve, reject) => {
          job.done = resolve
          job.fail = err => { failed = err; reject(err) }
          worker.postMessage({ t: 'digest', id })
        })
      },
      drop: (): void => {
        if (!this.jobs.has(id)) return
        this.jobs.delete(id)
        worker.postMessage({ t: 'drop', id })
      }
    }
  }

  async close (): Promise<void> {
    const w = this.worker
    this.worker = undefined
    await w?.terminate()
  }
}

export interface BodyHash {
  /** Adds bytes (copied; the caller may reuse them); waits while the worker is behind. */
  update: (piece: Uint8Array) => Promise<void>
  /** The hex digests, in the order of the algorithms; the hash is then finished. */
  digest: () => Promise<string[]>
  /** Forgets a hash that will not be finished (a body that failed). */
  drop: () => void
}
