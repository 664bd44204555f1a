/** What a replica knows of whom it has heard, for deciding whether it is cut off. */
export interface Hearing {
  self: string
  /** The replica set's peer ids. */
  members: string[]
  /** Whether this replica leads (check-quorum decides for a leader) or is a member at all. */
  leading: boolean
  member: boolean
  lead: string | null
  /** When each replica was last heard: a message from it, or its acknowledgement of ours. */
  heard: ReadonlyMap<string, number>
  now: number
  /** Since when the process has run without a pause; silence from before that proves nothing. */
  awakeSince: number
  lastTickAt: number
  /** How long a silence counts (an election's worth at least). */
  silenceMs: number
}

/**
 * Why this replica knows it is cut off, or undefined: for longer than `silenceMs` it heard
 * neither its leader nor a majority of its set, itself included. A healthy follower hears its
 * leader every heartbeat; replicas electing among themselves hear each other's pre-votes. A
 * leader is never judged here (check-quorum makes it step down), nor a replica that is not a
 * member (joining, or removed: it has no majority of its own to hear).
 */
export function cutOffReason (h: Hearing): string | undefined {
  if (h.leading || !h.member) return undefined
  // a pause the ticker has not noticed yet counts as one too
  if (h.now - h.awakeSince < h.silenceMs || h.now - h.lastTickAt > h.silenceMs) return undefined
  const recent = (peer: string): boolean => peer === h.self || h.now - (h.heard.get(peer) ?? Number.NEGATIVE_INFINITY) < h.silenceMs
  if (h.lead != null && recent(h.lead)) return undefined
  const reached = h.members.filter(recent).length
  if (reached > h.members.length / 2) return undefined
  return `FAT replica ${h.self} cannot reach a majority of its replica set (it heard ${reached} of ${h.members.length} replicas, itself included, in the last ${Math.round(h.silenceMs / 1000)} s) and knows no leader: it is cut off by the network, or most replicas are down`
}
