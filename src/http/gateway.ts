import { Counter, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS, PREFIX } from './metrics.ts'

/** What a gateway reports of each HTTP request it answered. */
export interface GatewayMetrics {
  /** `operation` names the API call (e.g. GetObject), `status` the HTTP status sent */
  request: (operation: string, status: number, seconds: number, bytesIn: number, bytesOut: number) => void
}

/** The gateway's metrics: requests per operation and status, bytes in and out, latency. */
export function gatewayMetrics (registry: Registry): GatewayMetrics {
  const requests = new Counter({ name: `${PREFIX}gateway_requests_total`, help: 'Requests answered, by operation and HTTP status', labelNames: ['operation', 'status'], registers: [registry] })
  const bytesIn = new Counter({ name: `${PREFIX}gateway_received_bytes_total`, help: 'Request body bytes received, by operation', labelNames: ['operation'], registers: [registry] })
  const bytesOut = new Counter({ name: `${PREFIX}gateway_sent_bytes_total`, help: 'Response body bytes sent, by operation', labelNames: ['operation'], registers: [registry] })
  const latency = new Histogram({ name: `${PREFIX}gateway_request_duration_seconds`, help: 'Time from a request\'s arrival to the end of its answer, by operation', labelNames: ['operation'], buckets: LATENCY_BUCKETS, registers: [registry] })
  return {
    request (operation, status, seconds, inBytes, outBytes) {
      requests.inc({ operation, status: String(status) })
      bytesIn.inc({ operation }, inBytes)
      bytesOut.inc({ operation }, outBytes)
      latency.observe({ operation }, seconds)
    }
  }
}
