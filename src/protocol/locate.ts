import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from '@libp2p/interface'
import { FAT_PROTOCOL, MAX_FAT_MESSAGE } from './ids.ts'
import * as M from './messages.ts'
import { call, type Target } from './rpc.ts'

/** How long one lookup may take in all (asking replicas, then the DHT). */
export const LOCATE_MS = 10_000

export interface LocateOptions {
  /** Other FAT replicas, asked for the member's current addresses. */
  replicas?: Target[]
  /** Peers to enter the DHT through when this node is connected to none (vendors a user has seen). */
  entry?: Target[]
  /** Addresses known not to answer: an answer with no other address is no answer. */
  stale?: string[]
  signal?: AbortSignal
  log?: (fmt: string, ...args: unknown[]) => void
}

/**
 * Finds the current addresses of a FAT replica whose known addresses no longer answer (restarted
 * on another port or host: its peer id stays). First any other replica is asked for the replica
 * set, which lists each member's addresses; then the DHT's peer routing, entered through `entry`
 * if this node is connected to nobody. Returns the addresses (full multiaddrs), or undefined.
 */
export async function locatePeer (node: Libp2p, peer: string, opts: LocateOptions = {}): Promise<string[] | undefined> {
  const signal = opts.signal ?? AbortSignal.timeout(LOCATE_MS)
  const fresh = (addrs: string[]): boolean => addrs.some(a => !(opts.stale ?? []).includes(a))
  for (const other of opts.replicas ?? []) {
    if ('peer' in other && other.peer === peer) continue
    try {
      const r = await call(node, other, FAT_PROTOCOL, { t: 'members' }, { 'members-reply': M.MembersReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.any([signal, AbortSignal.timeout(3_000)]) })
      const m = r.members.find(x => x.peer === peer)
      if (m != null && fresh(m.addrs)) { opts.log?.('located %s through replica %s: %o', peer, 'peer' in other ? other.peer : other.toString(), m.addrs); return m.addrs }
    } catch {}
  }
  const id = peerIdFromString(peer)
  if (node.getConnections().length === 0) {
    await Promise.all((opts.entry ?? []).slice(0, 8).map(async e => {
      try {
        if ('peer' in e) {
          await node.peerStore.merge(peerIdFromString(e.peer), { multiaddrs: e.addrs.map(a => multiaddr(a)) })
          await node.dial(peerIdFromString(e.peer), { signal })
        } else {
          await node.dial(e, { signal })
        }
      } catch {}
    }))
  }
  // no peer to ask: the DHT has nothing to offer
  if (node.getConnections().length === 0) return undefined
  // the DHT's routing table fills once the peers just dialled have identified themselves: retry a few times
  while (!signal.aborted) {
    try {
      // not from the local cache: that holds the addresses that no longer answer
      const info = await node.peerRouting.findPeer(id, { signal: AbortSignal.any([signal, AbortSignal.timeout(3_000)]), useCache: false } as any)
      const addrs = info.multiaddrs.map(a => a.getComponents().some(c => c.name === 'p2p') ? a.toString() : `${a.toString()}/p2p/${peer}`)
      if (fresh(addrs)) { opts.log?.('located %s through the DHT: %o', peer, addrs); return addrs }
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  return undefined
}
