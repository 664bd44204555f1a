import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { StorNode } from '../../node/index.ts'

export interface PathMeasure { vendor: string, latencyMs: number, reachable: boolean }

const SAMPLES = 3

/** Measures each vendor's round trip (median of a few pings); unreachable ones rank last. */
export async function measure (node: StorNode, vendors: Array<{ vendor: string, addrs: string[] }>, timeoutMs = 5000): Promise<Map<string, PathMeasure>> {
  const out = new Map<string, PathMeasure>()
  await Promise.all(vendors.map(async ({ vendor, addrs }) => {
    const id = peerIdFromString(vendor)
    try {
      if (addrs.length > 0) await node.peerStore.merge(id, { multiaddrs: addrs.map(a => multiaddr(a)) })
      const samples: number[] = []
      for (let i = 0; i < SAMPLES; i++) samples.push(await node.services.ping.ping(id, { signal: AbortSignal.timeout(timeoutMs) }))
      samples.sort((a, b) => a - b)
      out.set(vendor, { vendor, latencyMs: samples[Math.floor(SAMPLES / 2)], reachable: true })
    } catch {
      out.set(vendor, { vendor, latencyMs: Number.POSITIVE_INFINITY, reachable: false })
    }
  }))
  return out
}

/** Vendors ordered best first: reachable, then by latency. */
export function ranked (measures: Map<string, PathMeasure>): string[] {
  return [...measures.values()].sort((a, b) => Number(b.reachable) - Number(a.reachable) || a.latencyMs - b.latencyMs).map(m => m.vendor)
}
