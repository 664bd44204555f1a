import { PERMILLE } from '../../protocol/messages.ts'

/** What a FAT knows of a vendor from its heartbeats alone; memory only, never logged. */
interface Beats { first: number, lastSeen: number, free: number, inflight: number, times: number[] }

/**
 * Heartbeat bookkeeping per vendor: last seen, last reported free bytes and load, and the
 * availability, the share of the heartbeats expected over the recent window that arrived.
 *
 * The window is `windowBeats` heartbeat intervals (or less, since the vendor was first heard:
 * a new vendor is not punished for the time before it existed). Expected beats in a window of
 * length w are floor(w / interval) + 1; availability = min(1, received / expected), sent in
 * thousandths. A vendor that missed every third beat is at about 0.67; one never heard is 0.
 */
export class Liveness {
  private readonly beats = new Map<string, Beats>()

  constructor (private readonly heartbeatMs: number, private readonly silentMs: number, private readonly windowBeats = 30) {}

  beat (peer: string, free: number, inflight: number, now = Date.now()): void {
    const b = this.beats.get(peer) ?? { first: now, lastSeen: now, free, inflight, times: [] }
    b.lastSeen = now
    b.free = free
    b.inflight = inflight
    b.times.push(now)
    this.trim(b, now)
    this.beats.set(peer, b)
  }

  lastSeen (peer: string): number { return this.beats.get(peer)?.lastSeen ?? 0 }
  alive (peer: string, now = Date.now()): boolean { return now - this.lastSeen(peer) <= this.silentMs }
  free (peer: string): number | undefined { return this.beats.get(peer)?.free }
  inflight (peer: string): number { return this.beats.get(peer)?.inflight ?? 0 }

  /** Share of expected heartbeats received over the window, in thousandths (0..1000). */
  availability (peer: string, now = Date.now()): number {
    const b = this.beats.get(peer)
    if (b == null) return 0
    this.trim(b, now)
    const window = Math.min(this.windowBeats * this.heartbeatMs, now - b.first)
    const expected = Math.floor(window / this.heartbeatMs) + 1
    return Math.round(Math.min(1, b.times.length / expected) * PERMILLE)
  }

  private trim (b: Beats, now: number): void {
    const from = now - this.windowBeats * this.heartbeatMs
    let drop = 0
    while (drop < b.times.length && b.times[drop] < from) drop++
    if (drop > 0) b.times.splice(0, drop)
  }
}
