import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FatOverview, VendorState } from '../roles/fat/overview.ts'
import type { Logger } from '../logger.ts'
import type { Route } from './server.ts'

/** Traffic per second over one sample period. */
export interface Sample {
  t: number
  /** requests the FAT answered */
  requests: number
  /** bytes of committed files, replicas included, written to vendors */
  written: number
  /** bytes of chunk copies confirmed (repair, migration, drain) */
  copied: number
}

export type EventKind = 'vendor-new' | 'vendor-silent' | 'vendor-back' | 'vendor-state' | 'leader' | 'no-leader' | 'transfer-done'

export interface StatusEvent { t: number, kind: EventKind, text: string }

interface Seen { leader?: string, vendors: Map<string, VendorState> }

const short = (peer: string): string => `…${peer.slice(-8)}`

/**
 * What changed between two overviews, as events an operator reads: vendors that went silent or
 * came back or changed state, and the replica that orders writes.
 */
export function changes (prev: Seen | undefined, next: FatOverview, now: number): StatusEvent[] {
  const out: StatusEvent[] = []
  if (prev == null) return out
  if (prev.leader !== next.leader) {
    out.push(next.leader != null
      ? { t: now, kind: 'leader', text: `replica ${short(next.leader)} orders writes (term ${next.term})` }
      : { t: now, kind: 'no-leader', text: 'no replica orders writes: an election is under way, or a majority is unreachable' })
  }
  for (const v of next.vendors) {
    const was = prev.vendors.get(v.peer)
    if (was === v.state) continue
    if (was == null) out.push({ t: now, kind: 'vendor-new', text: `vendor ${short(v.peer)} joined (${v.state})` })
    else if (v.state === 'silent') out.push({ t: now, kind: 'vendor-silent', text: `vendor ${short(v.peer)} went silent (was ${was})` })
    else if (was === 'silent') out.push({ t: now, kind: 'vendor-back', text: `vendor ${short(v.peer)} is back (${v.state})` })
    else out.push({ t: now, kind: 'vendor-state', text: `vendor ${short(v.peer)}: ${was} -> ${v.state}` })
  }
  return out
}

/** A fixed-size ring: the newest `size` items, oldest first. */
export class Ring<T> {
  private readonly items: T[] = []
  constructor (private readonly size: number) {}
  push (item: T): void {
    this.items.push(item)
    if (this.items.length > this.size) this.items.splice(0, this.items.length - this.size)
  }

  list (): T[] { return [...this.items] }
}

export interface StatusOptions {
  overview: () => Promise<FatOverview>
  /** time between samples of traffic and state (default 2 s) */
  sampleMs?: number
  /** samples kept: 150 of 2 s is the last five minutes */
  samples?: number
  events?: number
  log: Logger
}

/**
 * The FAT status page's data: counts traffic as it happens, samples it (and the vendors' and
 * replicas' state, for events) on a timer into rings, and answers `/status.json`.
 */
export class StatusTracker {
  private readonly samples: Ring<Sample>
  private readonly events: Ring<StatusEvent>
  private readonly counts = { requests: 0, written: 0, copied: 0 }
  private last = { t: Date.now(), requests: 0, written: 0, copied: 0 }
  private seen: Seen | undefined
  private repaired = 0
  private readonly timer: NodeJS.Timeout
  readonly sampleMs: number

  constructor (private readonly opts: StatusOptions) {
    this.sampleMs = opts.sampleMs ?? 2000
    this.samples = new Ring(opts.samples ?? 150)
    this.events = new Ring(opts.events ?? 100)
    this.timer = setInterval(() => { this.tick().catch(err => { opts.log.error('status sample: %s', err.message) }) }, this.sampleMs)
    this.timer.unref()
    void this.tick().catch(err => { opts.log.error('status sample: %s', err.message) })
  }

  served (): void { this.counts.requests++ }
  committed (bytes: number): void { this.counts.written += bytes }
  transferred (reason: string, bytes: number): void {
    this.counts.copied += bytes
    if (reason === 'repair') this.repaired += bytes
    this.events.push({ t: Date.now(), kind: 'transfer-done', text: `${reason === 'repair' ? 'repair' : reason === 'drain' ? 'drain copy' : 'migration'} done: one chunk of ${bytes} bytes copied` })
  }

  stop (): void { clearInterval(this.timer) }

  private async tick (): Promise<void> {
    const now = Date.now()
    const seconds = Math.max(0.001, (now - this.last.t) / 1000)
    const rate = (k: 'requests' | 'written' | 'copied'): number => Math.round((this.counts[k] - this.last[k]) / seconds * 100) / 100
    if (this.seen != null) this.samples.push({ t: now, requests: rate('requests'), written: rate('written'), copied: rate('copied') })
    this.last = { t: now, ...this.counts }
    const o = await this.opts.overview()
    for (const e of changes(this.seen, o, now)) this.events.push(e)
    this.seen = { leader: o.leader, vendors: new Map(o.vendors.map(v => [v.peer, v.state])) }
  }

  /** The page's data: the live overview, the traffic samples and the recent events (newest first). */
  async json (): Promise<object> {
    const o = await this.opts.overview()
    const live = o.vendors.filter(v => v.state !== 'silent')
    const total = (k: 'capacity' | 'used' | 'allocated' | 'available'): number => live.reduce((n, v) => n + v[k], 0)
    return {
      time: Date.now(),
      sampleMs: this.sampleMs,
      self: o.self,
      leader: o.leader ?? null,
      isLeader: o.isLeader,
      term: o.term,
      commit: o.commit,
      applied: o.applied,
      replicas: o.replicas,
      vendors: o.vendors,
      capacity: { total: total('capacity'), used: total('used'), allocated: total('allocated'), free: total('available') },
      files: o.files,
      allocations: o.allocations,
      chunks: o.chunks,
      transfers: o.transfers,
      repairedBytes: this.repaired,
      samples: this.samples.list(),
      events: this.events.list().reverse()
    }
  }
}

/** The folder of the status page's files: web/status in the package, wherever this module was loaded from. */
export function pageDir (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir)
    if (up === dir) throw new Error('the stordaemon package folder (with package.json) was not found above this module')
    dir = up
  }
  return join(dir, 'web', 'status')
}

const PAGE_FILES: Record<string, [string, string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8']
}

/** The status page's routes: its files (read once, at start) and the JSON it polls. */
export async function statusRoutes (tracker: StatusTracker): Promise<Record<string, Route>> {
  const dir = pageDir()
  const routes: Record<string, Route> = {}
  for (const [path, [file, type]] of Object.entries(PAGE_FILES)) {
    let body: Buffer
    try {
      body = await readFile(join(dir, file))
    } catch (err: any) {
      throw new Error(`the status page's file ${join(dir, file)} cannot be read (${err.code ?? err.message}); reinstall stordaemon`)
    }
    routes[path] = () => ({ status: 200, type, body })
  }
  routes['/status.json'] = async () => ({ status: 200, type: 'application/json', body: JSON.stringify(await tracker.json()) })
  return routes
}
