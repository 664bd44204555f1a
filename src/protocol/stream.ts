import type { Stream, AbortOptions } from '@libp2p/interface'
import { LimitError } from '../errors.ts'
import { MAX_STREAM_BUFFER, SEND_BLOCK } from './ids.ts'

/**
 * A stream read and written as length-prefixed control frames, each at most `maxFrame` bytes,
 * and raw data: a run of bytes whose length a control frame announced.
 */
export interface FrameStream {
  read: (opts?: AbortOptions) => Promise<Uint8Array>
  write: (frame: Uint8Array, opts?: AbortOptions) => Promise<void>
  /** Sends `bytes` as they are, waiting for the stream to drain between blocks. */
  writeData: (bytes: Uint8Array, opts?: AbortOptions) => Promise<void>
  /**
   * Reads exactly `size` raw bytes, copied once, straight into the returned buffer; `onData`, if
   * given, sees each run of bytes as it lands there (a view of the buffer, not a copy).
   */
  readData: (size: number, opts?: ReadDataOptions) => Promise<Uint8Array>
  /** Bytes received and not read yet. */
  pending: () => number
  stream: Stream
}

export interface FramesOptions {
  /**
   * A signal given to a read or write aborts the whole stream when it fires (default). A stream
   * kept for many requests turns this off and links each request's signal for that request only,
   * since a request's timeout must not abort the stream after the request is over.
   */
  linkSignals?: boolean
}

export interface ReadDataOptions extends AbortOptions {
  onData?: (bytes: Uint8Array) => void
  /**
   * The buffer to read into (exactly `size` bytes), e.g. one from a BufferPool; once readData has
   * returned or thrown, nothing writes into it any more.
   */
  into?: Uint8Array
}

/** The peer closed its end before the bytes the reader waits for arrived. */
export class StreamEndedError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'StreamEndedError'
  }
}

/**
 * Waits until the stream can take more data: the 'drain' event while `writableNeedsDrain` is set
 * (`stream.onDrain()` resolves at once after the first drain in @libp2p/utils 7.4, see
 * NOTES-libp2p.md).
 */
export async function drained (stream: Stream, signal?: AbortSignal): Promise<void> {
  if (!stream.writableNeedsDrain) return
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const done = (err?: unknown): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
      if (err != null) reject(err)
      else resolve()
    }
    const onDrain = (): void => { done() }
    const onClose = (evt: any): void => { done(evt?.error ?? new StreamEndedError('the stream closed while waiting to send')) }
    const onAbort = (): void => { done(signal?.reason ?? new Error('aborted')) }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort)
  })
}

/** Bytes needed to write `n` as a varint. */
function varintLength (n: number): number {
  let len = 1
  while (n >= 128) { n = Math.floor(n / 128); len++ }
  return len
}

function varint (n: number): Uint8Array {
  const out = new Uint8Array(varintLength(n))
  for (let i = 0; i < out.length; i++) {
    out[i] = (n % 128) | (i < out.length - 1 ? 0x80 : 0)
    n = Math.floor(n / 128)
  }
  return out
}

function unzeroed (size: number): Uint8Array {
  const buf = Buffer.allocUnsafe(size)
  return new Uint8Array(buf.buffer, buf.byteOffset, size)
}

/**
 * The receiving side: incoming bytes queue up (at most `maxBuffer` of them, past which the stream
 * is refused), except while readData waits, when they are copied straight into its buffer.
 */
class Reader {
  // a queue read from `head`, so many small buffers cost no quadratic shifting
  private queue: Uint8Array[] = []
  private head = 0
  private queued = 0
  private sink: { out: Uint8Array, got: number, onData?: (bytes: Uint8Array) => void } | undefined
  private failure: Error | undefined
  private wakers: Array<() => void> = []

  constructor (private readonly stream: Stream, private readonly maxBuffer: number) {
    stream.addEventListener('message', evt => { this.take(evt.data) })
    stream.addEventListener('remoteCloseWrite', () => { this.notify() })
    stream.addEventListener('close', (evt: any) => {
      if (evt?.error != null) this.failure ??= evt.error
      this.notify()
    })
  }

  /** Bytes received and not read yet. */
  get pending (): number { return this.queued }

  private take (data: Uint8Array | Iterable<Uint8Array>): void {
    if (this.failure != null) return
    for (let buf of data instanceof Uint8Array ? [data] : data) {
      const sink = this.sink
      if (sink != null && this.queued === 0) {
        const n = Math.min(buf.byteLength, sink.out.byteLength - sink.got)
        sink.out.set(n === buf.byteLength ? buf : buf.subarray(0, n), sink.got)
        sink.onData?.(sink.out.subarray(sink.got, sink.got + n))
        sink.got += n
        buf = buf.subarray(n)
      }
      if (buf.byteLength === 0) continue
      this.queue.push(buf)
      this.queued += buf.byteLength
    }
    if (this.queued > this.maxBuffer) {
      const err = new LimitError(`the peer sent more than the stream may buffer (${this.maxBuffer} bytes)`)
      this.failure = err
      this.queue = []
      this.head = 0
      this.queued = 0
      // let the current dispatch finish first
      queueMicrotask(() => { this.stream.abort(err) })
    }
    this.notify()
  }

  private notify (): void {
    for (const wake of this.wakers.splice(0)) wake()
  }

  /** No more bytes will come: the remote closed its end and the stream holds nothing undelivered. */
  private ended (): boolean {
    return (this.stream.remoteWriteStatus !== 'writable' || this.stream.status !== 'open') && this.stream.readBufferLength === 0
  }

  /** Waits until `ready()` holds; throws if the stream fails, ends first, or the signal fires. */
  private async until (ready: () => boolean, what: () => string, signal?: AbortSignal): Promise<void> {
    while (true) {
      if (this.failure != null) throw this.failure
      if (ready()) return
      if (this.ended()) throw new StreamEndedError(`the stream ended ${what()}`)
      signal?.throwIfAborted()
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => { signal?.removeEventListener('abort', onAbort); resolve() }
        const onAbort = (): void => { this.wakers = this.wakers.filter(w => w !== wake); reject(signal?.reason) }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.wakers.push(wake)
      })
    }
  }

  private byteAt (i: number): number {
    for (let k = this.head; k < this.queue.length; k++) {
      const buf = this.queue[k]
      if (i < buf.byteLength) return buf[i]
      i -= buf.byteLength
    }
    throw new RangeError('read past the queued bytes')
  }

  /** Removes `n` queued bytes into `out` at `offset` (or drops them without `out`). */
  private drain (n: number, out?: Uint8Array, offset = 0): void {
    this.queued -= n
    while (n > 0) {
      const buf = this.queue[this.head]
      const k = Math.min(n, buf.byteLength)
      out?.set(k === buf.byteLength ? buf : buf.subarray(0, k), offset)
      offset += k
      n -= k
      if (k === buf.byteLength) this.head++
      else this.queue[this.head] = buf.subarray(k)
    }
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
    } else if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
  }

  async frame (maxFrame: number, opts?: AbortOptions): Promise<Uint8Array> {
    // the length prefix may be no longer than the varint of the largest frame
    const maxPrefix = varintLength(maxFrame)
    let length = 0
    let prefix = 0
    for (;;) {
      await this.until(() => this.queued > prefix, () => `inside a frame's length prefix after ${prefix} bytes`, opts?.signal)
      const b = this.byteAt(prefix)
      length += (b & 0x7f) * 2 ** (7 * prefix)
      prefix++
      if ((b & 0x80) === 0) break
      if (prefix >= maxPrefix) throw new LimitError(`frame over the limit of ${maxFrame} bytes`)
    }
    if (length > maxFrame) throw new LimitError(`frame over the limit of ${maxFrame} bytes`)
    await this.until(() => this.queued >= prefix + length, () => `after ${this.queued - prefix} of a frame's ${length} bytes`, opts?.signal)
    this.drain(prefix)
    const first = this.queue[this.head]
    if (length > 0 && first.byteLength >= length) {
      this.drain(length)
      return first.subarray(0, length)
    }
    const out = new Uint8Array(length)
    this.drain(length, out)
    return out
  }

  async data (size: number, opts?: ReadDataOptions): Promise<Uint8Array> {
    if (opts?.into != null && opts.into.byteLength !== size) throw new RangeError(`readData: the buffer holds ${opts.into.byteLength} bytes, not ${size}`)
    // every byte is written before it is returned, so the buffer need not be zeroed first
    const out = opts?.into ?? unzeroed(size)
    const sink = { out, got: Math.min(size, this.queued), onData: opts?.onData }
    this.drain(sink.got, out)
    if (sink.got > 0) sink.onData?.(out.subarray(0, sink.got))
    this.sink = sink
    try {
      await this.until(() => sink.got === size, () => `after ${sink.got} of ${size} data bytes`, opts?.signal)
    } finally {
      this.sink = undefined
    }
    return out
  }
}

export function frames (stream: Stream, maxFrame: number, maxBuffer = MAX_STREAM_BUFFER, opts: FramesOptions = {}): FrameStream {
  const reader = new Reader(stream, Math.max(maxBuffer, maxFrame + 64))
  // each signal aborts the whole stream once, and lets go of it when the stream closes (a
  // listener per wait for drain would pile up on a long-lived signal)
  const linked = new Set<AbortSignal>()
  const link = (signal?: AbortSignal): void => {
    if (signal == null || linked.has(signal) || opts.linkSignals === false) return
    signal.throwIfAborted()
    linked.add(signal)
    const onAbort = (): void => { stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.addEventListener('close', () => { signal.removeEventListener('abort', onAbort) }, { once: true })
  }
  const send = async (bytes: Uint8Array, opts?: AbortOptions): Promise<void> => {
    link(opts?.signal)
    if (!stream.send(bytes)) await drained(stream, opts?.signal)
  }
  return {
    stream,
    read: async opts => await reader.frame(maxFrame, opts),
    async write (frame, opts) {
      const prefix = varint(frame.byteLength)
      const out = new Uint8Array(prefix.byteLength + frame.byteLength)
      out.set(prefix)
      out.set(frame, prefix.byteLength)
      await send(out, opts)
    },
    async writeData (bytes, opts) {
      for (let off = 0; off < bytes.byteLength; off += SEND_BLOCK) {
        await send(bytes.subarray(off, off + SEND_BLOCK), opts)
      }
    },
    readData: async (size, opts) => await reader.data(size, opts),
    pending: () => reader.pending
  }
}
