import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { StorNode } from '../../node/index.ts'
import { echo } from '../../protocol/echo.ts'
import { PERMILLE, type VendorStats } from '../../protocol/messages.ts'

/** One vendor's measured path: median echo round trip and hop count, with when it was taken. */
export interface PathSample { vendor: string, reachable: boolean, rttMs: number, hops: number, at: number }

/** A candidate with every measure and its score (see docs/paths.md). */
export interface PathScore extends PathSample {
  /** share of recent heartbeats the FAT saw, 0..1 */
  availability: number
  /** bytes the FAT may still grant on it */
  available: number
  /** free bytes of its last heartbeat */
  free: number
  /** stores in progress at its last heartbeat */
  inflight: number
  /** age of the path measure in ms (0 when just measured) */
  ageMs: number
  score: number
}

/** Echoes per vendor; the median is kept. */
export const SAMPLES = 5
/** A round trip of this many ms halves the latency term. */
export const RTT_REF_MS = 10
/** This many stores in progress halve the load term. */
export const LOAD_REF = 8
/** How long a measure is reused, in the session and from the data dir. */
export const MEASURE_TTL_MS = 120_000

/**
 * The score, higher is better, 0 for an unreachable vendor:
 *
 *   score = A x 1/H x R/(R + rtt) x 1/(1 + inflight/L) x (1/2 + 1/2 x available/maxAvailable)
 *
 * A availability (0..1, at least 0.01 so a vendor the FAT has not timed yet still orders),
 * H hops (1 direct), rtt the median echo round trip in ms, R = RTT_REF_MS, L = LOAD_REF,
 * maxAvailable the largest `available` among the vendors being ranked together.
 */
export function score (p: PathSample, s: Omit<VendorStats, 'vendor'> | undefined, maxAvailable: number): number {
  if (!p.reachable) return 0
  const a = Math.max(0.01, (s?.availability ?? PERMILLE) / PERMILLE)
  const latency = RTT_REF_MS / (RTT_REF_MS + p.rttMs)
  const load = 1 / (1 + (s?.inflight ?? 0) / LOAD_REF)
  const space = maxAvailable > 0 ? 0.5 + 0.5 * Math.min(1, (s?.available ?? 0) / maxAvailable) : 1
  return a * (1 / Math.max(1, p.hops)) * latency * load * space
}

/**
 * Path measures of one client session, reused for MEASURE_TTL_MS and kept in the data dir
 * (`paths.json`), so chunks and later commands do not measure again.
 */
export class PathCache {
  private readonly samples = new Map<string, PathSample>()
  private loaded = false

  constructor (private readonly dataDir?: string, private readonly ttlMs = MEASURE_TTL_MS) {}

  private get file (): string | undefined { return this.dataDir != null ? join(this.dataDir, 'paths.json') : undefined }

  private async load (): Promise<void> {
    if (this.loaded) return
    this.loaded = true
    if (this.file == null) return
    try {
      const saved = JSON.parse(await readFile(this.file, 'utf8')) as PathSample[]
      for (const p of saved) if (typeof p?.vendor === 'string' && typeof p.at === 'number' && p.reachable === true) this.samples.set(p.vendor, p)
    } catch {}
  }

  private async save (): Promise<void> {
    if (this.file == null) return
    const now = Date.now()
    const keep = [...this.samples.values()].filter(p => p.reachable && now - p.at < this.ttlMs)
    try {
      await mkdir(this.dataDir as string, { recursive: true })
      const tmp = `${this.file}.${process.pid}.tmp`
      await writeFile(tmp, JSON.stringify(keep))
      await rename(tmp, this.file)
    } catch {}
  }

  /** Measures the vendors with no fresh sample (all of them with `fresh`), the others from the cache. */
  async measure (node: StorNode, vendors: Array<{ vendor: string, addrs: string[] }>, opts: { fresh?: boolean, timeoutMs?: number } = {}): Promise<Map<string, PathSample>> {
    await this.load()
    const now = Date.now()
    const out = new Map<string, PathSample>()
    const todo = vendors.filter(v => {
      const p = this.samples.get(v.vendor)
      if (opts.fresh !== true && p != null && now - p.at < this.ttlMs) { out.set(v.vendor, p); return false }
      return true
    })
    await Promise.all(todo.map(async ({ vendor, addrs }) => {
      let p: PathSample
      try {
        const r = await echo(node, { peer: vendor, addrs }, SAMPLES, AbortSignal.timeout(opts.timeoutMs ?? 5000))
        const sorted = [...r.rtts].sort((a, b) => a - b)
        p = { vendor, reachable: true, rttMs: sorted[Math.floor(sorted.length / 2)], hops: r.hops, at: Date.now() }
      } catch {
        p = { vendor, reachable: false, rttMs: Number.POSITIVE_INFINITY, hops: 0, at: Date.now() }
      }
      this.samples.set(vendor, p)
      out.set(vendor, p)
    }))
    if (todo.length > 0) await this.save()
    return out
  }

  /** Marks a vendor unreachable for the rest of the session (a transfer to it failed). */
  forget (vendor: string): void { this.samples.delete(vendor) }
}

/** Every candidate with its measures and score, best first. */
export function rank (samples: Map<string, PathSample>, stats: VendorStats[]): PathScore[] {
  const byVendor = new Map(stats.map(s => [s.vendor, s]))
  const maxAvailable = Math.max(0, ...stats.map(s => s.available))
  const now = Date.now()
  return [...samples.values()].map(p => {
    const s = byVendor.get(p.vendor)
    return {
      ...p,
      availability: (s?.availability ?? PERMILLE) / PERMILLE,
      available: s?.available ?? 0,
      free: s?.free ?? 0,
      inflight: s?.inflight ?? 0,
      ageMs: Math.max(0, now - p.at),
      score: score(p, s, maxAvailable)
    }
  }).sort((a, b) => b.score - a.score || a.rttMs - b.rttMs || (a.vendor < b.vendor ? -1 : 1))
}
