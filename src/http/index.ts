import type { Gateway } from '../gateway/index.ts'
import type { Logger } from '../logger.ts'
import type { Fat, FatMetrics } from '../roles/fat/index.ts'
import type { FatOverview } from '../roles/fat/overview.ts'
import type { Vendor, VendorMetrics } from '../roles/vendor/index.ts'
import { fatMetrics } from './fat.ts'
import { gatewayMetrics, type GatewayMetrics } from './gateway.ts'
import { createRegistry, startMonitoring } from './metrics.ts'
import type { HttpAddress, HttpServer } from './server.ts'
import { StatusTracker, statusRoutes } from './status.ts'
import { vendorMetrics } from './vendor.ts'

export { parseHttpListen, startHttpServer, listenError, DEFAULT_HTTP_HOST } from './server.ts'
export type { HttpAddress, HttpServer, HttpReply, Route } from './server.ts'
export { createRegistry, startMonitoring, servedMetrics, metricsRoute, healthRoute, probedHealth, PREFIX, LATENCY_BUCKETS } from './metrics.ts'
export type { Health, MonitoringOptions } from './metrics.ts'
export { gatewayMetrics } from './gateway.ts'
export type { GatewayMetrics } from './gateway.ts'

/**
 * A role's monitoring, in two steps because the role needs its metrics before it exists:
 * `metrics` goes into the role's options, then `start(role)` serves `/metrics`, `/health` (and
 * the FAT's status page) on the address.
 */
export interface Monitoring<R, M> {
  metrics: M
  start: (role: R) => Promise<HttpServer>
}

/** A FAT replica's metrics, health and status page (`/`, `/status.json`). */
export function fatMonitoring (listen: HttpAddress, log: Logger): Monitoring<Fat, FatMetrics> & { stop: () => void } {
  const registry = createRegistry()
  let fat: Fat | undefined
  const overview = async (): Promise<FatOverview> => {
    if (fat == null) throw new Error('the FAT is not running yet')
    return await fat.overview()
  }
  const counted = fatMetrics(registry, overview)
  let tracker: StatusTracker | undefined
  return {
    metrics: {
      served: (...a) => { counted.served(...a); tracker?.served() },
      allocated: counted.allocated,
      committed: counted.committed,
      stored: bytes => { counted.stored(bytes); tracker?.committed(bytes) },
      transferred: (reason, bytes) => { counted.transferred(reason, bytes); tracker?.transferred(reason, bytes) }
    },
    async start (role) {
      fat = role
      tracker = new StatusTracker({ overview, log })
      try {
        return await startMonitoring({ listen, registry, health: role.health, routes: await statusRoutes(tracker), log })
      } catch (err) {
        tracker.stop()
        throw err
      }
    },
    stop () { tracker?.stop() }
  }
}

/** A vendor's metrics and health. */
export function vendorMonitoring (listen: HttpAddress, log: Logger): Monitoring<Vendor, VendorMetrics> {
  const registry = createRegistry()
  let vendor: Vendor | undefined
  return {
    metrics: vendorMetrics(registry, () => vendor?.overview()),
    async start (role) {
      vendor = role
      return await startMonitoring({ listen, registry, health: role.health, log })
    }
  }
}

/** An S3 gateway's metrics and health (on a listener of its own, apart from S3). */
export function gatewayMonitoring (listen: HttpAddress, log: Logger): Monitoring<Pick<Gateway, 'health'>, GatewayMetrics> {
  const registry = createRegistry()
  return {
    metrics: gatewayMetrics(registry),
    async start (role) {
      return await startMonitoring({ listen, registry, health: role.health, log })
    }
  }
}
