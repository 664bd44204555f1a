import { InvalidArgumentError } from '../../errors.ts'
import type { ByteSource } from './upload.ts'

/**
 * A ByteSource over a stream that delivers exactly `size` bytes in order (an HTTP body, a pipe).
 * Upload reads chunks in increasing order; a read that comes early waits for the reads before it,
 * so only the chunks the upload's window holds are ever in memory. A stream that ends short, or
 * fails, fails the read in progress and every later one.
 */
export function streamSource (name: string, size: number, body: AsyncIterable<Uint8Array>): ByteSource {
  const it = body[Symbol.asyncIterator]()
  let position = 0
  let leftover: Uint8Array | undefined
  let failed: unknown
  const waiting = new Map<number, () => void>()

  const fill = async (into: Buffer, length: number): Promise<void> => {
    let got = 0
    while (got < length) {
      if (leftover == null || leftover.byteLength === 0) {
        const next = await it.next()
        if (next.done === true) throw new InvalidArgumentError(`${name}: the data ended after ${position + got} of ${size} bytes`)
        leftover = next.value
        continue
      }
      const n = Math.min(leftover.byteLength, length - got)
      into.set(leftover.subarray(0, n), got)
      leftover = leftover.subarray(n)
      got += n
    }
  }

  return {
    name,
    size,
    async read (offset, length, into) {
      if (offset < position) throw new RangeError(`${name}: bytes at ${offset} were read already (a stream is read once, in order)`)
      while (offset !== position && failed == null) await new Promise<void>(resolve => { waiting.set(offset, resolve) })
      if (failed != null) throw failed
      try {
        await fill(into, length)
      } catch (err) {
        failed = err
        for (const wake of waiting.values()) wake()
        waiting.clear()
        throw err
      }
      position += length
      const next = waiting.get(position)
      waiting.delete(position)
      next?.()
    }
  }
}
