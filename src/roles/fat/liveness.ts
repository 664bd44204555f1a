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

/** What the leader knows of one vendor when it judges vendors' states. */
export interface VendorView {
  peer: string
  /** the state the log holds: dead, back, or in service (undefined) */
  state?: 'dead' | 'back'
  draining: boolean
  /**
   * How long it has been silent as this replica can tell: since its last heartbeat, or since this
   * replica started if it has not heard it since (a replica never blames a vendor for the time
   * before it was listening).
   */
  silentMs: number
  /** a heartbeat of it arrived within `aliveMs` (not merely: this replica started a moment ago) */
  heard: boolean
  /** chunks the tables still place on it */
  holds: number
  /** orders it has not taken yet (a back vendor's surplus erases) */
  ordersWaiting: number
}

export interface VendorRules {
  /** silent this long: dead, its chunks repaired elsewhere */
  repairAfterMs: number
  /** share of the known vendors that must stay in service (not dead) */
  minIn: number
}

export interface VendorVerdict {
  dead: string[]
  back: string[]
  /** back vendors whose surplus copies are erased: in service again */
  in: string[]
  /** silent long enough to be dead, kept in service by the guard */
  held: string[]
}

/**
 * The state changes the leader logs this round. A dead vendor heard again is back; a back vendor
 * that took every order waiting for it is in service again; a vendor silent for repairAfterMs is
 * dead, the longest silent first, unless that would leave fewer than `minIn` of the known vendors
 * in service (the guard: a switch failure or a frozen rack is no reason to copy the whole
 * network). Known vendors are those not draining, less the dead ones that hold nothing any more
 * (fully repaired: they no longer count either way).
 */
export function judgeVendors (views: readonly VendorView[], rules: VendorRules): VendorVerdict {
  const out: VendorVerdict = { dead: [], back: [], in: [], held: [] }
  const known = views.filter(v => !v.draining && !(v.state === 'dead' && v.holds === 0))
  let inService = known.filter(v => v.state !== 'dead').length
  for (const v of views) {
    if (v.state === 'dead' && v.heard) out.back.push(v.peer)
    if (v.state === 'back' && v.heard && v.ordersWaiting === 0) out.in.push(v.peer)
  }
  const candidates = known
    .filter(v => v.state !== 'dead' && v.silentMs >= rules.repairAfterMs)
    .sort((a, b) => b.silentMs - a.silentMs || (a.peer < b.peer ? -1 : 1))
  for (const v of candidates) {
    if (known.length > 0 && (inService - 1) / known.length >= rules.minIn - 1e-9) {
      out.dead.push(v.peer)
      inService--
    } else {
      out.held.push(v.peer)
    }
  }
  return out
}
