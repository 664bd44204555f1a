/**
 * Chunk-sized buffers kept for reuse. On the machines measured here a fresh multi-MiB buffer costs
 * more than the work done in it: every page faults on first touch and is zeroed by the kernel, and
 * the freed memory goes back to it (4 MiB allocated and filled: 0.64 ms/MB; AES-GCM on a reused
 * buffer: 0.33 ms/MB). A transfer takes a buffer per chunk in flight and gives it back once nothing
 * can still read it; what it never gives back is simply collected.
 */
export interface BufferPool {
  /** A buffer of exactly `size` bytes, its contents undefined. */
  take: (size: number) => Buffer
  /** Returns a buffer from `take` (or a view of one); the caller must not touch it afterwards. */
  give: (buf: Uint8Array) => void
}

/** Sizes are rounded up to this, so chunks of one transfer (plain or sealed) share a class. */
const GRAIN = 64 * 1024
/** Below this a fresh buffer is cheap (Node's slab or malloc's heap serves it). */
const MIN_POOLED = 256 * 1024

/** Memory pages are at least this large and aligned: what direct (O_DIRECT) file writes need. */
export const PAGE_ALIGN = 4096

/**
 * Memory whose first byte sits on a page boundary. WebAssembly memory is the one page-aligned
 * allocation JavaScript can ask for (an ArrayBuffer's address is the allocator's choice and cannot
 * be read); `capacity` is a multiple of GRAIN, i.e. whole 64 KiB WebAssembly pages.
 */
function pageAligned (capacity: number): ArrayBuffer {
  const pages = capacity / GRAIN
  return new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer
}

export interface BufferPoolOptions {
  /**
   * Pooled buffers start on a page boundary (PAGE_ALIGN), so a vendor can write a chunk's pieces
   * to disk with O_DIRECT straight from the buffer it received them into.
   */
  aligned?: boolean
}

/** A pool that keeps at most `maxIdleBytes` of buffers not in use. */
export function createBufferPool (maxIdleBytes: number, opts: BufferPoolOptions = {}): BufferPool {
  const fresh = opts.aligned === true ? pageAligned : (capacity: number) => new ArrayBuffer(capacity)
  const idle = new Map<number, ArrayBuffer[]>()
  let idleBytes = 0
  return {
    take (size) {
      if (size < MIN_POOLED) return Buffer.allocUnsafe(size)
      const capacity = Math.ceil(size / GRAIN) * GRAIN
      const free = idle.get(capacity)
      const ab = free?.pop()
      if (ab != null) {
        idleBytes -= capacity
        return Buffer.from(ab, 0, size)
      }
      return Buffer.from(fresh(capacity), 0, size)
    },
    give (buf) {
      const ab = buf.buffer
      const capacity = ab.byteLength
      if (!(ab instanceof ArrayBuffer) || capacity < MIN_POOLED || capacity % GRAIN !== 0) return
      if (idleBytes + capacity > maxIdleBytes) return
      const free = idle.get(capacity) ?? []
      if (free.includes(ab)) return
      free.push(ab)
      idle.set(capacity, free)
      idleBytes += capacity
    }
  }
}
