import { lpStream } from '@libp2p/utils'
import type { Stream, AbortOptions } from '@libp2p/interface'
import { LimitError, MalformedMessageError } from '../errors.ts'
import { DATA_FRAME, MAX_STREAM_BUFFER } from './ids.ts'

/** A stream read and written as length-prefixed frames, each at most `maxFrame` bytes. */
export interface FrameStream {
  read: (opts?: AbortOptions) => Promise<Uint8Array>
  write: (frame: Uint8Array, opts?: AbortOptions) => Promise<void>
  /** Sends `bytes` as data frames, waiting for the peer to drain between them. */
  writeData: (bytes: Uint8Array, opts?: AbortOptions) => Promise<void>
  /** Reads exactly `size` bytes of data frames. */
  readData: (size: number, opts?: AbortOptions) => Promise<Uint8Array>
  stream: Stream
}

export function frames (stream: Stream, maxFrame: number, maxBuffer = MAX_STREAM_BUFFER): FrameStream {
  const lp = lpStream(stream, { maxDataLength: Math.max(maxFrame, DATA_FRAME), maxBufferSize: Math.max(maxBuffer, maxFrame + 64) })
  const read = async (opts?: AbortOptions): Promise<Uint8Array> => {
    try {
      return (await lp.read(opts)).subarray()
    } catch (err: any) {
      if (err.name === 'InvalidDataLengthError' || err.name === 'InvalidDataLengthLengthError') throw new LimitError(`frame over the limit of ${Math.max(maxFrame, DATA_FRAME)} bytes`)
      if (err.name === 'InvalidMessageLengthError') throw new MalformedMessageError('frame length prefix is invalid')
      if (err.name === 'StreamBufferError') throw new LimitError('the peer sent more than the stream may buffer')
      throw err
    }
  }
  // lp.write would add an abort listener to the signal on every wait for drain and never remove
  // it; instead each signal aborts the whole stream once, and lets go of it when the stream closes
  const linked = new Set<AbortSignal>()
  const link = (signal?: AbortSignal): void => {
    if (signal == null || linked.has(signal)) return
    signal.throwIfAborted()
    linked.add(signal)
    const onAbort = (): void => { stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.addEventListener('close', () => { signal.removeEventListener('abort', onAbort) }, { once: true })
  }
  const write = async (frame: Uint8Array, opts?: AbortOptions): Promise<void> => {
    link(opts?.signal)
    await lp.write(frame)
  }
  return {
    stream,
    read,
    write,
    async writeData (bytes, opts) {
      for (let off = 0; off < bytes.byteLength; off += DATA_FRAME) {
        await write(bytes.subarray(off, off + DATA_FRAME), opts)
      }
    },
    async readData (size, opts) {
      const out = new Uint8Array(size)
      let got = 0
      while (got < size) {
        const frame = await read(opts)
        if (frame.byteLength === 0 || frame.byteLength > DATA_FRAME || got + frame.byteLength > size) {
          throw new MalformedMessageError(`data frame of ${frame.byteLength} bytes does not fit: ${got} of ${size} bytes received`)
        }
        out.set(frame, got)
        got += frame.byteLength
      }
      return out
    }
  }
}
