import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Logger } from '../logger.ts'
import { startHttpServer, type HttpAddress, type HttpServer, type Route } from './server.ts'

/** Every metric name starts with it; units are in the names (`_bytes`, `_seconds`), counters end in `_total`. */
export const PREFIX = 'stor_'

/** Latency buckets in seconds: a loopback round trip up to a slow disk or a long election. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** A registry of its own per daemon (not prom-client's global one), with the process's CPU, memory and event-loop metrics. */
export function createRegistry (labels: Record<string, string> = {}): Registry {
  const registry = new Registry()
  registry.setDefaultLabels(labels)
  collectDefaultMetrics({ register: registry, prefix: PREFIX })
  return registry
}

/** Counts served requests per protocol, request type and outcome (`ok` or the error code), with their latency. */
export function servedMetrics (registry: Registry): (protocol: string, request: string, outcome: string, seconds: number) => void {
  const requests = new Counter({ name: `${PREFIX}requests_total`, help: 'Requests served, by libp2p protocol, request type and outcome (ok or the error code)', labelNames: ['protocol', 'request', 'outcome'], registers: [registry] })
  const latency = new Histogram({ name: `${PREFIX}request_duration_seconds`, help: 'Time from a request\'s arrival to its answer, by protocol and request type', labelNames: ['protocol', 'request'], buckets: LATENCY_BUCKETS, registers: [registry] })
  return (protocol, request, outcome, seconds) => {
    requests.inc({ protocol, request, outcome })
    latency.observe({ protocol, request }, seconds)
  }
}

/** Whether a daemon serves; `reason` says why not (or what it rests on). */
export interface Health { ok: boolean, reason: string }

/**
 * A health answer that takes a round trip (a gateway asking the FAT): one probe at a time, its
 * answer reused for `freshMs` (a scraper asking often costs one probe per that), and a probe that
 * has not answered within `timeoutMs` answers unhealthy at once (it goes on, and the next ask
 * after it ends gets a fresh one). A probe that throws is unhealthy with its message.
 */
export function probedHealth (probe: () => Promise<Health>, opts: { freshMs: number, timeoutMs: number, what: string }): () => Promise<Health> {
  let last: { health: Health, at: number } | undefined
  let running: Promise<Health> | undefined
  return async () => {
    if (last != null && Date.now() - last.at < opts.freshMs) return last.health
    running ??= probe()
      .catch((err: any): Health => ({ ok: false, reason: `${opts.what} did not answer: ${String(err?.message ?? err)}` }))
      .then(health => { last = { health, at: Date.now() }; running = undefined; return health })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<Health>(resolve => { timer = setTimeout(() => { resolve({ ok: false, reason: `${opts.what} did not answer within ${opts.timeoutMs / 1000} s` }) }, opts.timeoutMs) })
    try {
      return await Promise.race([running, late])
    } finally {
      clearTimeout(timer)
    }
  }
}

export function metricsRoute (registry: Registry): Route {
  return async () => ({ status: 200, type: registry.contentType, body: await registry.metrics() })
}

/** 200 when the daemon serves, else 503; the body is one line with the reason, or JSON with ?json. */
export function healthRoute (health: () => Health | Promise<Health>): Route {
  return async req => {
    const h = await health()
    const json = new URL(req.url ?? '/', 'http://x').searchParams.has('json')
    return json
      ? { status: h.ok ? 200 : 503, type: 'application/json', body: JSON.stringify(h) }
      : { status: h.ok ? 200 : 503, type: 'text/plain; charset=utf-8', body: `${h.ok ? 'ok' : 'unavailable'}: ${h.reason}\n` }
  }
}

export interface MonitoringOptions {
  listen: HttpAddress
  registry: Registry
  health: () => Health | Promise<Health>
  /** More pages, e.g. the FAT's status page. */
  routes?: Record<string, Route>
  log: Logger
}

/** One call for any daemon: `/metrics` and `/health` (and `routes`) on `listen`. */
export async function startMonitoring (opts: MonitoringOptions): Promise<HttpServer> {
  return await startHttpServer(opts.listen, {
    ...opts.routes,
    '/metrics': metricsRoute(opts.registry),
    '/health': healthRoute(opts.health)
  }, opts.log)
}
