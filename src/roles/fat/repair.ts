/**
 * The repair planner: a pure function from the chunks that may need copies, the vendors' health
 * and the copies already under way to this round's copies. No I/O, no clock, no randomness, so
 * test/repair-planner.test.ts runs it in milliseconds; the FAT (index.ts) gathers its input from
 * the vendor -> chunks index and logs its output as transfer orders.
 */

/** How much repair may run at once; HDFS's defaults are 2 streams per source and 4 per target. */
export interface RepairLimits {
  /** copies one vendor serves at once as a source */
  perSource: number
  /** copies one vendor receives at once */
  perTarget: number
  /** copies planned in one round (one heartbeat, or one batch of confirmations) */
  perRound: number
}

export const DEFAULT_REPAIR_LIMITS: RepairLimits = { perSource: 2, perTarget: 4, perRound: 64 }

/** A chunk as the planner sees it (a ChunkInfo of table.ts fits). */
export interface RepairChunk {
  fileId: string
  chunkId: string
  size: number
  /** copies its file asked for */
  want: number
  /** vendors the table places a copy on, healthy or not */
  holders: readonly string[]
}

/** A vendor that may take new copies, with the bytes it may still take. */
export interface RepairTarget { vendor: string, room: number, zone?: string }

export interface RepairInput<C extends RepairChunk> {
  /** Chunks that may need a copy (any order; healthy ones are skipped, and a chunk that comes twice as the same object). */
  chunks: Iterable<C>
  /** A copy counts: its vendor is not dead and does not report this chunk lost. */
  healthy: (vendor: string, chunk: C) => boolean
  /** The vendor answers now (heard within a few heartbeats), so it can serve a copy. */
  canServe: (vendor: string) => boolean
  /** Vendors offered for new data (alive, in service, below their high-water mark). */
  targets: readonly RepairTarget[]
  zoneOf: (vendor: string) => string | undefined
  /** Copies under way: per source, per target, and the chunks they copy (fileId/chunkId). */
  sourcing: ReadonlyMap<string, number>
  receiving: ReadonlyMap<string, number>
  moving: ReadonlySet<string>
  limits: RepairLimits
}

export interface PlannedCopy<C extends RepairChunk> {
  chunk: C
  from: string
  to: string
  /** the unhealthy copy the new one takes the place of in the file's table */
  replaces: string
}

export interface RepairPlan<C extends RepairChunk> {
  copies: Array<PlannedCopy<C>>
  /** chunks with fewer healthy copies than wanted, and at least one */
  under: number
  /** chunks with no healthy copy left: nothing to copy from */
  lost: number
  /** under-replicated chunks with no copy under way or planned this round */
  queued: number
}

/**
 * Plans this round's repair copies. Most at risk first: chunks with one healthy copy before
 * those with two, and among equals the one missing most copies. Each copy comes from a healthy
 * replica that answers and goes to an offered vendor that holds none of the chunk, in a zone the
 * chunk's healthy copies are not in when one has room; no chunk gets two copies at once, no
 * source serves more than `perSource`, no target receives more than `perTarget`, and no more
 * than `perRound` are planned.
 */
export function planRepair<C extends RepairChunk> (input: RepairInput<C>): RepairPlan<C> {
  const { limits } = input
  // chunks by healthy copies left: buckets instead of a sort, so a backlog of many thousands
  // costs one pass
  const buckets: C[][] = []
  // the same chunk may come twice (on a dead vendor and reported lost): the index hands out one
  // object per chunk, so identity finds it without building a key for each of many thousands
  const seen = new Set<C>()
  /** vendors holding a copy of a chunk to repair: when all of them serve their most, the round is full */
  const holding = new Set<string>()
  let under = 0
  let lost = 0
  let queued = 0
  for (const c of input.chunks) {
    if (seen.has(c)) continue
    seen.add(c)
    const healthy = c.holders.reduce((n, v) => input.healthy(v, c) ? n + 1 : n, 0)
    if (healthy >= c.want) continue
    if (healthy === 0) { lost++; continue }
    under++
    if (input.moving.size > 0 && input.moving.has(`${c.fileId}/${c.chunkId}`)) continue
    queued++
    for (const v of c.holders) holding.add(v)
    ;(buckets[healthy] ??= []).push(c)
  }

  const sourcing = new Map(input.sourcing)
  const receiving = new Map(input.receiving)
  const room = new Map(input.targets.map(t => [t.vendor, t.room]))
  const count = (m: Map<string, number>, k: string): number => m.get(k) ?? 0
  const targetFree = (v: string): boolean => count(receiving, v) < limits.perTarget
  const copies: Array<PlannedCopy<C>> = []
  const servers = [...holding].filter(v => input.canServe(v))

  plan: for (const bucket of buckets) {
    if (bucket == null) continue
    // the chunk missing most copies first; among equals, the order they came in (sort is stable)
    bucket.sort((a, b) => b.want - a.want)
    for (const c of bucket) {
      if (copies.length >= limits.perRound) break plan
      // every target or every source busy: the rest waits for the next round
      if (!input.targets.some(t => targetFree(t.vendor) && count(room, t.vendor) > 0)) break plan
      if (servers.every(v => count(sourcing, v) >= limits.perSource)) break plan
      const healthyHolders = c.holders.filter(v => input.healthy(v, c))
      const replaces = c.holders.find(v => !input.healthy(v, c))
      if (replaces == null) continue
      const from = healthyHolders
        .filter(v => input.canServe(v) && count(sourcing, v) < limits.perSource)
        .sort((a, b) => count(sourcing, a) - count(sourcing, b) || (a < b ? -1 : 1))[0]
      if (from == null) continue
      const zones = new Set(healthyHolders.map(v => input.zoneOf(v)).filter(z => z != null))
      const to = input.targets
        .filter(t => !c.holders.includes(t.vendor) && targetFree(t.vendor) && count(room, t.vendor) >= c.size)
        .sort((a, b) => Number(a.zone != null && zones.has(a.zone)) - Number(b.zone != null && zones.has(b.zone)) ||
          count(receiving, a.vendor) - count(receiving, b.vendor) ||
          count(room, b.vendor) - count(room, a.vendor) ||
          (a.vendor < b.vendor ? -1 : 1))[0]
      if (to == null) continue
      copies.push({ chunk: c, from, to: to.vendor, replaces })
      queued--
      sourcing.set(from, count(sourcing, from) + 1)
      receiving.set(to.vendor, count(receiving, to.vendor) + 1)
      room.set(to.vendor, count(room, to.vendor) - c.size)
    }
  }
  return { copies, under, lost, queued }
}
