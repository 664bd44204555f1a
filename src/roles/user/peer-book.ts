import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Libp2p } from '@libp2p/interface'
import { locatePeer } from '../../protocol/locate.ts'
import type { Target } from '../../protocol/rpc.ts'
import type { Logger } from '../../logger.ts'

/** A peer and its last known full multiaddrs. */
export interface PeerAddrs { peer: string, addrs: string[] }

/** Vendors kept as ways into the DHT. */
const MAX_ENTRY = 16
const MAX_ADDRS = 8

/**
 * What a user remembers of the network between commands, in `DATA_DIR/peers.json`: every FAT
 * replica it has met (peer id and last addresses), so a replica that moved can be looked up by
 * its peer id, and a few vendors, to enter the DHT through when no replica answers.
 */
export class PeerBook {
  private saved: string

  private constructor (private readonly path: string, private readonly fats: Map<string, string[]>, private readonly vendors: Map<string, string[]>) {
    this.saved = this.text()
  }

  static async load (dataDir: string): Promise<PeerBook> {
    const path = join(dataDir, 'peers.json')
    const fats = new Map<string, string[]>()
    const vendors = new Map<string, string[]>()
    try {
      const data = JSON.parse(await readFile(path, 'utf8'))
      for (const [into, list] of [[fats, data?.fats], [vendors, data?.vendors]] as const) {
        if (!Array.isArray(list)) continue
        for (const p of list) if (typeof p?.peer === 'string' && Array.isArray(p.addrs)) into.set(p.peer, p.addrs.filter((a: unknown) => typeof a === 'string').slice(0, MAX_ADDRS))
      }
    } catch {} // none yet, or unreadable: it is only a cache
    return new PeerBook(path, fats, vendors)
  }

  replicas (): PeerAddrs[] { return [...this.fats].map(([peer, addrs]) => ({ peer, addrs })) }
  entry (): PeerAddrs[] { return [...this.vendors].map(([peer, addrs]) => ({ peer, addrs })) }

  noteReplica (peer: string, addrs: string[]): void { if (addrs.length > 0) this.fats.set(peer, addrs.slice(0, MAX_ADDRS)) }

  /** Keeps the vendor addresses a FAT reply carries (allocations, tables, status), a few at most. */
  harvest (reply: any): void {
    const found: PeerAddrs[] = [
      ...(reply?.candidates ?? []).map((c: any) => ({ peer: c?.vendor, addrs: c?.addrs })),
      ...(reply?.vendors ?? []).map((v: any) => ({ peer: v?.vendor, addrs: v?.addrs }))
    ]
    for (const v of found) {
      if (typeof v.peer !== 'string' || !Array.isArray(v.addrs) || v.addrs.length === 0) continue
      this.vendors.delete(v.peer)
      this.vendors.set(v.peer, v.addrs.slice(0, MAX_ADDRS))
    }
    // the most recently seen last
    while (this.vendors.size > MAX_ENTRY) this.vendors.delete(this.vendors.keys().next().value as string)
  }

  /** Writes the file if anything changed (a temporary file renamed: never half written). */
  async save (): Promise<void> {
    const text = this.text()
    if (text === this.saved) return
    await writeFile(`${this.path}.tmp`, text, { mode: 0o600 })
    await rename(`${this.path}.tmp`, this.path)
    this.saved = text
  }

  private text (): string {
    return `${JSON.stringify({ fats: this.replicas(), vendors: this.entry() })}\n`
  }
}

/** The peer id of a replica target (a multiaddr's /p2p/ part, or the peer named). */
export function peerOf (t: Target): string | undefined {
  return 'peer' in t ? t.peer : t.getComponents().find(c => c.name === 'p2p')?.value
}

/**
 * Looks up the replicas in `replicas` whose addresses fail, by peer id (another replica's
 * member list, then the DHT entered through the vendors the book knows), and puts the addresses
 * found in their place. True if any replica was found at new addresses.
 */
export async function relocateReplicas (node: Libp2p, replicas: Target[], book: PeerBook, log: Logger): Promise<boolean> {
  let found = false
  // all at once: a command waits for the slowest lookup, not for their sum
  await Promise.all([...replicas].map(async (t, i) => {
    const peer = peerOf(t)
    if (peer == null) return
    const before = 'peer' in t ? t.addrs : [t.toString()]
    const addrs = await locatePeer(node, peer, { replicas: replicas.filter(r => r !== t), entry: book.entry(), stale: before, log })
    if (addrs == null) return
    replicas[i] = { peer, addrs }
    book.noteReplica(peer, addrs)
    found = true
  }))
  if (found) await book.save().catch(() => {})
  return found
}

/** The replicas named in an error after every way of reaching them failed. */
export function unreachableReplicas (replicas: Target[]): string {
  const peers = [...new Set(replicas.map(peerOf).filter(p => p != null))]
  return `FAT replica${peers.length > 1 ? 's' : ''} ${peers.join(', ')} did not answer at ${peers.length > 1 ? 'their' : 'its'} known addresses and ${peers.length > 1 ? 'were' : 'was'} not found through the other replicas or the DHT`
}
