/** A token bucket per peer: `burst` requests at once, refilled at `perSecond`. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()

  constructor (private readonly perSecond: number, private readonly burst: number) {}

  take (peer: string, now = Date.now()): boolean {
    const b = this.buckets.get(peer) ?? { tokens: this.burst, at: now }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) / 1000 * this.perSecond)
    b.at = now
    if (this.buckets.size > 10_000) this.prune(now)
    this.buckets.set(peer, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  /** Forgets peers whose buckets are full again. */
  private prune (now: number): void {
    for (const [peer, b] of this.buckets) {
      if (b.tokens + (now - b.at) / 1000 * this.perSecond >= this.burst) this.buckets.delete(peer)
    }
  }
}
