import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { VendorMetrics, VendorOverview } from '../roles/vendor/index.ts'
import { LATENCY_BUCKETS, PREFIX, servedMetrics } from './metrics.ts'

/**
 * A vendor's metrics: bytes stored and free per device, device state, chunks, scrub progress,
 * read at scrape time from `overview` (undefined until the vendor runs); and what it counts as it
 * works (requests, chunk bytes in and out, store and fetch latency, scrubbing).
 */
export function vendorMetrics (registry: Registry, overview: () => VendorOverview | undefined): VendorMetrics {
  const perDevice = (name: string, help: string, read: (d: VendorOverview['devices'][number]) => number): void => {
    void new Gauge({
      name: `${PREFIX}vendor_device_${name}`,
      help,
      labelNames: ['device'],
      registers: [registry],
      collect () {
        this.reset()
        for (const d of overview()?.devices ?? []) this.set({ device: d.path }, read(d))
      }
    })
  }
  perDevice('capacity_bytes', 'A device\'s capacity: its quota, or the disk\'s free space at start', d => d.capacity)
  perDevice('used_bytes', 'Bytes of pieces stored on a device', d => d.used)
  perDevice('free_bytes', 'Bytes a device may still take', d => Math.max(0, d.free))
  perDevice('failed', '1 if a device failed (a write failed or its folder is gone or read-only), else 0', d => d.failed ? 1 : 0)
  const gauge = (name: string, help: string, read: (o: VendorOverview) => number): void => {
    void new Gauge({ name: `${PREFIX}vendor_${name}`, help, registers: [registry], collect () { const o = overview(); if (o != null) this.set(read(o)) } })
  }
  gauge('chunks', 'Chunks stored', o => o.chunks)
  gauge('chunks_damaged', 'Chunks found corrupt or missing, reported to the FAT until replaced', o => o.damaged)
  gauge('inflight', 'Stores and copies in progress', o => o.inflight)
  gauge('scrub_progress_ratio', 'Share of the stored bytes the scrub pass under way has checked (1 between passes)', o => o.scrubProgress)
  gauge('fat_last_heard_seconds', 'Seconds since a FAT replica last answered a heartbeat (-1: never)', o => o.lastHeard === 0 ? -1 : (Date.now() - o.lastHeard) / 1000)

  const received = new Counter({ name: `${PREFIX}vendor_received_bytes_total`, help: 'Chunk bytes received and stored, by kind (store: from a user or the previous hop; copy: a transfer order\'s copy)', labelNames: ['kind'], registers: [registry] })
  const sent = new Counter({ name: `${PREFIX}vendor_sent_bytes_total`, help: 'Chunk bytes sent, by kind (relay: to the next hop; fetch: to a user; copy: to a transfer\'s target)', labelNames: ['kind'], registers: [registry] })
  const storeLatency = new Histogram({ name: `${PREFIX}vendor_store_duration_seconds`, help: 'Time to receive, check and store one chunk (and hand it to the next hop), by kind', labelNames: ['kind'], buckets: LATENCY_BUCKETS, registers: [registry] })
  const fetchLatency = new Histogram({ name: `${PREFIX}vendor_fetch_duration_seconds`, help: 'Time to read one chunk from the devices and send it, by kind', labelNames: ['kind'], buckets: LATENCY_BUCKETS, registers: [registry] })
  const scrubbed = new Counter({ name: `${PREFIX}vendor_scrub_checked_bytes_total`, help: 'Bytes of pieces the scrub read back and checked', registers: [registry] })
  const scrubDamage = new Counter({ name: `${PREFIX}vendor_scrub_damaged_chunks_total`, help: 'Chunks the scrub found corrupt or missing', registers: [registry] })
  const scrubPasses = new Counter({ name: `${PREFIX}vendor_scrub_passes_total`, help: 'Full scrub passes finished', registers: [registry] })
  for (const kind of ['store', 'copy']) received.inc({ kind }, 0)
  for (const kind of ['relay', 'fetch', 'copy']) sent.inc({ kind }, 0)
  return {
    served: servedMetrics(registry),
    received: (kind, bytes, seconds) => { received.inc({ kind }, bytes); storeLatency.observe({ kind }, seconds) },
    sent: (kind, bytes, seconds) => {
      sent.inc({ kind }, bytes)
      // a relay's time is the store's: counted there
      if (kind !== 'relay') fetchLatency.observe({ kind }, seconds)
    },
    scrub: {
      checked: bytes => { scrubbed.inc(bytes) },
      damaged: () => { scrubDamage.inc() },
      passed: () => { scrubPasses.inc() }
    }
  }
}
