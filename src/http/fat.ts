import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { FatMetrics } from '../roles/fat/index.ts'
import { TRANSFER_REASONS, VENDOR_STATES, type FatOverview } from '../roles/fat/overview.ts'
import { LATENCY_BUCKETS, PREFIX, servedMetrics } from './metrics.ts'

/** One overview serves every gauge of one scrape: it is taken again only after this long. */
const SCRAPE_REUSE_MS = 250

/** Shares one call of `fn` among callers within `ms` of each other. */
export function shared<T> (fn: () => Promise<T>, ms: number): () => Promise<T> {
  let last: { at: number, value: Promise<T> } | undefined
  return async () => {
    const now = Date.now()
    if (last == null || now - last.at > ms) {
      const value = fn()
      last = { at: now, value }
      // a failed overview is not kept for the next scrape
      value.catch(() => { if (last?.value === value) last = undefined })
    }
    return await last.value
  }
}

/**
 * A FAT replica's metrics: the replication state, the vendors per state, capacity, files and
 * chunk health, the copies under way, read from the overview at scrape time; and what the FAT
 * counts as it works (requests, allocation and commit latency, bytes committed and copied).
 */
export function fatMetrics (registry: Registry, overview: () => Promise<FatOverview>): FatMetrics {
  const view = shared(overview, SCRAPE_REUSE_MS)
  const gauge = (name: string, help: string, read: (o: FatOverview) => number): void => {
    void new Gauge({ name: `${PREFIX}fat_${name}`, help, registers: [registry], async collect () { this.set(read(await view())) } })
  }
  gauge('replicas', 'FAT replicas in the replica set', o => o.replicas.length)
  gauge('leader', '1 if this replica orders writes, else 0', o => o.isLeader ? 1 : 0)
  gauge('leader_known', '1 if this replica knows a replica that orders writes (it serves), else 0', o => o.leader != null ? 1 : 0)
  gauge('raft_term', 'The replica\'s current election term', o => o.term)
  gauge('raft_commit_index', 'Index of the last log entry a majority holds', o => o.commit)
  gauge('raft_applied_index', 'Index of the last log entry applied to the table here', o => o.applied)
  gauge('raft_log_entries', 'Entries in the replicated log', o => o.logEntries)
  gauge('files', 'Files users stored (packs of small files not counted)', o => o.files)
  gauge('allocations_open', 'Provisional allocations not yet committed or expired', o => o.allocations)
  // capacity of the vendors that are heard now: what the network can serve and grant
  const live = (o: FatOverview): FatOverview['vendors'] => o.vendors.filter(v => v.state !== 'silent')
  const sum = (o: FatOverview, k: 'capacity' | 'used' | 'allocated' | 'available'): number => live(o).reduce((n, v) => n + v[k], 0)
  gauge('capacity_bytes', 'Healthy capacity of the vendors heard recently', o => sum(o, 'capacity'))
  gauge('used_bytes', 'Bytes of committed files on the vendors heard recently', o => sum(o, 'used'))
  gauge('allocated_bytes', 'Bytes locked for open allocations and copies under way, on the vendors heard recently', o => sum(o, 'allocated'))
  gauge('free_bytes', 'Bytes the vendors heard recently may still be granted', o => sum(o, 'available'))

  void new Gauge({
    name: `${PREFIX}fat_vendors`,
    help: 'Vendors by state: alive (offered new data), full (above its high-water mark), draining, silent (not heard for three heartbeats)',
    labelNames: ['state'],
    registers: [registry],
    async collect () {
      const o = await view()
      for (const s of VENDOR_STATES) this.set({ state: s }, o.vendors.filter(v => v.state === s).length)
    }
  })
  const perVendor = (name: string, help: string, read: (v: FatOverview['vendors'][number]) => number): void => {
    void new Gauge({
      name: `${PREFIX}fat_vendor_${name}`,
      help,
      labelNames: ['vendor'],
      registers: [registry],
      async collect () {
        this.reset()
        for (const v of (await view()).vendors) this.set({ vendor: v.peer }, read(v))
      }
    })
  }
  perVendor('up', '1 if the vendor was heard within three heartbeats, else 0', v => v.state === 'silent' ? 0 : 1)
  perVendor('capacity_bytes', 'The vendor\'s healthy capacity', v => v.capacity)
  perVendor('used_bytes', 'Bytes of committed files on the vendor', v => v.used)
  perVendor('availability_ratio', 'Share of the vendor\'s recent heartbeats that arrived', v => v.availability)

  void new Gauge({
    name: `${PREFIX}fat_chunks`,
    help: 'Chunks by health: healthy (every replica readable), under_replicated (some), lost (none readable now)',
    labelNames: ['health'],
    registers: [registry],
    async collect () {
      const c = (await view()).chunks
      this.set({ health: 'healthy' }, c.healthy)
      this.set({ health: 'under_replicated' }, c.underReplicated)
      this.set({ health: 'lost' }, c.lost)
    }
  })
  const queue = (name: string, help: string, read: (q: { count: number, bytes: number }) => number): void => {
    void new Gauge({
      name: `${PREFIX}fat_${name}`,
      help,
      labelNames: ['reason'],
      registers: [registry],
      async collect () {
        const o = await view()
        for (const r of TRANSFER_REASONS) this.set({ reason: r }, read(o.transfers[r]))
      }
    })
  }
  queue('transfers_pending', 'Chunk copies ordered and not yet confirmed, by reason (repair, migrate, drain)', q => q.count)
  queue('transfers_pending_bytes', 'Bytes of the chunk copies ordered and not yet confirmed, by reason', q => q.bytes)
  gauge('chunks_reported_damaged', 'Chunks vendors reported corrupt or missing in their last heartbeat, awaiting repair', o => o.vendors.reduce((n, v) => n + v.damaged, 0))

  const served = servedMetrics(registry)
  const allocation = new Histogram({ name: `${PREFIX}fat_allocation_duration_seconds`, help: 'Time from an allocation request to its signed grants (on the replica that orders writes)', buckets: LATENCY_BUCKETS, registers: [registry] })
  const commit = new Histogram({ name: `${PREFIX}fat_commit_duration_seconds`, help: 'Time from a commit request until a majority holds it and it is applied (on the replica that orders writes)', buckets: LATENCY_BUCKETS, registers: [registry] })
  const committedBytes = new Counter({ name: `${PREFIX}fat_committed_bytes_total`, help: 'Bytes the committed files take on vendors, replicas included, as this replica applied the commits', registers: [registry] })
  const copies = new Counter({ name: `${PREFIX}fat_transfers_done_total`, help: 'Chunk copies confirmed, by reason (repair, migrate, drain), as this replica applied them', labelNames: ['reason'], registers: [registry] })
  const copiedBytes = new Counter({ name: `${PREFIX}fat_transferred_bytes_total`, help: 'Bytes of the chunk copies confirmed, by reason (repair: bytes repaired)', labelNames: ['reason'], registers: [registry] })
  for (const r of TRANSFER_REASONS) { copies.inc({ reason: r }, 0); copiedBytes.inc({ reason: r }, 0) }
  return {
    served,
    allocated: seconds => { allocation.observe(seconds) },
    committed: seconds => { commit.observe(seconds) },
    stored: bytes => { committedBytes.inc(bytes) },
    transferred: (reason, bytes) => { copies.inc({ reason }); copiedBytes.inc({ reason }, bytes) }
  }
}
