/**
 * Chunk bytes a transfer keeps in flight at most. Each chunk in flight holds its plaintext and its
 * sealed form for a while, so this bounds the client's memory whatever the file's size. Measured
 * peak RSS of a 2 GiB upload: 256-301 MiB at 64 MiB, 207-257 MiB at 32 MiB, at the same speed.
 */
export const MAX_WINDOW_BYTES = 32 * 1024 * 1024

/**
 * How many chunks a transfer keeps in flight: bounded by a count and by bytes, and adapted to the
 * path by hill climbing on throughput. Every epoch (as many completions as the current limit) the
 * throughput is compared with the previous epoch's: 5% better grows the limit by one, 10% worse
 * shrinks it by one, and a failure halves it.
 */
export class Window {
  limit: number
  private inflight = 0
  private bytes = 0
  private readonly waiters: Array<() => void> = []
  private epochStart = performance.now()
  private epochBytes = 0
  private epochDone = 0
  private lastRate = 0

  constructor (readonly min: number, initial: number, readonly max: number, readonly maxBytes: number) {
    this.limit = Math.max(min, Math.min(max, initial))
  }

  /** Chunks in flight right now. */
  get active (): number { return this.inflight }

  /** Waits for room for one chunk of `bytes`; one chunk always fits when none is in flight. */
  async acquire (bytes: number, signal?: AbortSignal): Promise<void> {
    while (this.inflight > 0 && (this.inflight >= this.limit || this.bytes + bytes > this.maxBytes)) {
      signal?.throwIfAborted()
      await new Promise<void>(resolve => {
        const onAbort = (): void => { resolve() }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.waiters.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
      })
    }
    signal?.throwIfAborted()
    this.inflight++
    this.bytes += bytes
  }

  /** Returns the room of one chunk; `ok` false (a failure or a timeout) halves the limit. */
  release (bytes: number, ok: boolean): void {
    this.inflight--
    this.bytes -= bytes
    if (!ok) {
      this.limit = Math.max(this.min, Math.floor(this.limit / 2))
    } else {
      this.epochBytes += bytes
      if (++this.epochDone >= this.limit) this.adapt()
    }
    this.waiters.splice(0).forEach(w => { w() })
  }

  private adapt (): void {
    const now = performance.now()
    const rate = this.epochBytes / Math.max(1, now - this.epochStart)
    if (this.lastRate > 0 && rate >= this.lastRate * 1.05) this.limit = Math.min(this.max, this.limit + 1)
    else if (this.lastRate > 0 && rate < this.lastRate * 0.9) this.limit = Math.max(this.min, this.limit - 1)
    else if (this.lastRate === 0) this.limit = Math.min(this.max, this.limit + 1)
    this.lastRate = rate
    this.epochStart = now
    this.epochBytes = 0
    this.epochDone = 0
  }
}
