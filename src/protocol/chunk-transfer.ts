import type { AbortOptions } from '@libp2p/interface'
import { StorError, UnreachableError, MalformedMessageError } from '../errors.ts'
import { decodeReply, encode } from './codec.ts'
import { CHUNK_STREAM_REUSE, FETCH_PROTOCOL, MAX_DATA_BUFFER, MAX_IDLE_CHUNK_STREAMS, MAX_VENDOR_MESSAGE, SEND_BLOCK, STORE_PROTOCOL } from './ids.ts'
import * as M from './messages.ts'
import type { Target } from './rpc.ts'
import { StreamPool } from './stream-pool.ts'
import type { FrameStream } from './stream.ts'
import type { Libp2p } from '@libp2p/interface'

export type StoredReply = M.Message<typeof M.Stored>

/** Each node's kept store and fetch streams. */
const pools = new WeakMap<Libp2p, StreamPool>()

function poolOf (node: Libp2p): StreamPool {
  let pool = pools.get(node)
  if (pool == null) {
    pool = new StreamPool(node, CHUNK_STREAM_REUSE, MAX_IDLE_CHUNK_STREAMS)
    pools.set(node, pool)
  }
  return pool
}

/** Closes the store and fetch streams a node keeps open (before it stops, so vendors see a clean end). */
export async function closeChunkStreams (node: Libp2p): Promise<void> {
  const pool = pools.get(node)
  pools.delete(node)
  await pool?.close()
}

/** One request on a kept (or new) stream to `target`; any failure but a vendor's error reply is UnreachableError. */
async function withStream<T> (node: Libp2p, target: Target, protocol: string, maxBuffer: number, opts: AbortOptions, fn: (fs: FrameStream) => Promise<T>): Promise<T> {
  try {
    return await poolOf(node).use(target, protocol, MAX_VENDOR_MESSAGE, maxBuffer, opts, fn)
  } catch (err: any) {
    if (err instanceof StorError) throw err
    throw new UnreachableError(`transfer with ${'peer' in target ? target.peer : target.toString()} failed: ${err.message ?? err}`)
  }
}

/**
 * Sends one chunk to `route[hop]` under its signed header. The vendor checks the header before
 * any data moves, stores the chunk, forwards it along the rest of the route, and answers with the
 * receipts of every copy made.
 */
export async function forwardChunk (node: Libp2p, to: M.Hop, header: M.ChunkHeader, hop: number, bytes: Uint8Array, signal?: AbortSignal): Promise<StoredReply> {
  return await withStream(node, { peer: to.vendor, addrs: to.addrs }, STORE_PROTOCOL, MAX_VENDOR_MESSAGE, { signal }, async fs => {
    await fs.write(encode({ t: 'store', header, hop }), { signal })
    decodeReply(await fs.read({ signal }), { ok: M.Ok }, MAX_VENDOR_MESSAGE)
    await fs.writeData(bytes, { signal })
    return decodeReply(await fs.read({ signal }), { stored: M.Stored }, MAX_VENDOR_MESSAGE)
  })
}

/** A chunk passed on to the next hop while it still arrives (cut-through forwarding). */
export interface Relay {
  /** Passes on the next bytes of the chunk; they go out once the next hop has given its go-ahead. */
  push: (bytes: Uint8Array) => void
  /** The next hop's answer once it has the whole chunk. */
  reply: Promise<StoredReply>
  /** Stops passing the chunk on (the bytes turned out bad, or never all arrived). */
  abort: (err: Error) => void
}

/**
 * Opens the store conversation with `to` at once and sends it the chunk's bytes as they are
 * pushed, `header.size` in all. The bytes are not checked here: every hop checks the chunk id
 * itself before it signs a receipt. The pushed buffers are queued by reference, not copied.
 */
export function relayChunk (node: Libp2p, to: M.Hop, header: M.ChunkHeader, hop: number, signal?: AbortSignal): Relay {
  const early: Uint8Array[] = []
  let open: FrameStream | undefined
  let pushed = 0
  // pushed bytes not yet handed to the stream: runs that follow each other in one buffer (as a
  // chunk's bytes land in its receive buffer) are joined, so the next hop gets SEND_BLOCK-sized
  // frames instead of one per incoming network message (~64 KiB), and a window update for each
  let pending: Uint8Array | undefined
  let stopped: Error | undefined
  let allPushed: () => void = () => {}
  let failed: (err: Error) => void = () => {}
  const whole = new Promise<void>((resolve, reject) => { allPushed = resolve; failed = reject })
  whole.catch(() => {})
  if (header.size === 0) allPushed()
  const send = (fs: FrameStream, bytes: Uint8Array): void => {
    // the stream keeps what it cannot send yet and sends it as the next hop's window opens
    try { fs.stream.send(bytes) } catch (err: any) { failed(err) }
  }
  const reply = withStream(node, { peer: to.vendor, addrs: to.addrs }, STORE_PROTOCOL, MAX_VENDOR_MESSAGE, { signal }, async fs => {
    await fs.write(encode({ t: 'store', header, hop }), { signal })
    decodeReply(await fs.read({ signal }), { ok: M.Ok }, MAX_VENDOR_MESSAGE)
    if (stopped != null) throw stopped
    open = fs
    for (const bytes of early.splice(0)) send(fs, bytes)
    await whole
    return decodeReply(await fs.read({ signal }), { stored: M.Stored }, MAX_VENDOR_MESSAGE)
  })
  const flush = (): void => {
    if (pending == null) return
    if (open != null) send(open, pending)
    else early.push(pending)
    pending = undefined
  }
  return {
    push (bytes) {
      if (stopped != null || bytes.byteLength === 0) return
      pushed += bytes.byteLength
      if (pending != null && pending.buffer === bytes.buffer && pending.byteOffset + pending.byteLength === bytes.byteOffset) {
        pending = new Uint8Array(pending.buffer, pending.byteOffset, pending.byteLength + bytes.byteLength)
      } else {
        flush()
        pending = bytes
      }
      if (pending.byteLength >= SEND_BLOCK || pushed >= header.size) flush()
      if (pushed >= header.size) allPushed()
    },
    reply,
    abort (err) {
      stopped ??= err
      early.length = 0
      pending = undefined
      failed(err)
      open?.stream.abort(err)
    }
  }
}

/** Asks a vendor for one chunk's bytes on the fetch protocol (`fetch` or `copy`); the caller checks them against the chunk id. */
async function requestChunk (node: Libp2p, from: Target, request: M.Message<typeof M.Fetch> | M.Message<typeof M.Copy>, expectedSize: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array> {
  return await withStream(node, from, FETCH_PROTOCOL, MAX_DATA_BUFFER, { signal }, async fs => {
    await fs.write(encode(request), { signal })
    const head = decodeReply(await fs.read({ signal }), { chunk: M.ChunkReply }, MAX_VENDOR_MESSAGE)
    if (head.size !== expectedSize) throw new MalformedMessageError(`vendor offers ${head.size} bytes for a chunk of ${expectedSize}`)
    return await fs.readData(head.size, { signal, into })
  })
}

/** Fetches one chunk's bytes from a vendor with the owner's signed request, into `into` if given. */
export async function fetchChunk (node: Libp2p, from: Target, request: M.Message<typeof M.Fetch>, expectedSize: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array> {
  return await requestChunk(node, from, request, expectedSize, signal, into)
}

/**
 * Copies one chunk from the vendor holding it, on the strength of a FAT-signed transfer order that
 * names this node as its target.
 */
export async function copyChunk (node: Libp2p, transfer: M.Transfer, signal?: AbortSignal): Promise<Uint8Array> {
  return await requestChunk(node, { peer: transfer.from, addrs: transfer.fromAddrs }, { t: 'copy', transfer }, transfer.size, signal)
}
