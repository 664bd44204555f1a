import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { PrivateKey } from '@libp2p/interface'
import { DHT_PROTOCOL, MAX_STREAM_BUFFER } from '../protocol/ids.ts'

const STREAM_WINDOW = Math.floor(MAX_STREAM_BUFFER / 2)

export type Services = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}

export type StorNode = Libp2p<Services>

export interface NodeOptions {
  privateKey: PrivateKey
  listen: string[]
  /** Answer DHT queries (servers do; short-lived CLI users stay clients). */
  dhtServer: boolean
}

/** The one libp2p node every role runs on: TCP, noise, yamux, identify, ping, a private DHT, gossipsub. */
export async function createNode (opts: NodeOptions): Promise<StorNode> {
  return await createLibp2p<Services>({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // a window at most half of a stream's read buffer keeps a slow reader's memory bounded; it
    // starts at its largest, because on loopback and LANs yamux's RTT-based ramp-up (from 256 KiB)
    // rarely fires, and a small window means small frames and a window update for each
    streamMuxers: [yamux({ streamOptions: { initialStreamWindowSize: STREAM_WINDOW, maxStreamWindowSize: STREAM_WINDOW } })],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: !opts.dhtServer, peerInfoMapper: passthroughMapper }),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true })
    }
  })
}

/** Listen addresses as full multiaddrs with /p2p/, the form a script passes to --bootstrap. */
export function fullAddrs (node: StorNode): string[] {
  return node.getMultiaddrs().map(a => a.toString())
}
