/**
 * Vendors played by the test process, for FAT tests that must not move the bytes they account
 * for: each is a libp2p node with its own key that heartbeats every FAT replica as a vendor does
 * (so the FAT grants on it) and signs the receipts a vendor would sign. They answer no orders.
 */
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { loopbackAddr, type DaemonProcess } from '../src/cluster.ts'
import { createNode, fullAddrs, type StorNode } from '../src/node/index.ts'
import { signRequest } from '../src/protocol/auth.ts'
import { FAT_PROTOCOL, MAX_FAT_MESSAGE } from '../src/protocol/ids.ts'
import * as M from '../src/protocol/messages.ts'
import { call } from '../src/protocol/rpc.ts'
import { sign } from '../src/protocol/sign.ts'

export interface FakeVendor { key: PrivateKey, node: StorNode, id: string }

export interface FakeNetwork {
  vendors: FakeVendor[]
  /** A user of its own, asking the replicas directly with signed requests. */
  ask: <C extends M.Message<any>>(msg: object, expected: Record<string, any>, via?: number, signed?: boolean) => Promise<C>
  owner: string
  /** A chunk entry of `size` bytes placed on `on`, with each vendor's signed receipt. */
  chunk: (fileId: string, i: number, size: number, on: string[]) => Promise<M.ChunkEntry>
  stop: () => Promise<void>
}

/** Starts `count` vendors of `capacity` bytes each, heartbeating `fats` every second, and a user. */
export async function fakeNetwork (fats: DaemonProcess[], count: number, capacity: number): Promise<FakeNetwork> {
  const vendors: FakeVendor[] = []
  for (let i = 0; i < count; i++) {
    const key = await generateKeyPair('Ed25519')
    const node = await createNode({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false })
    vendors.push({ key, node, id: node.peerId.toString() })
  }
  const addrs = (): ReturnType<typeof multiaddr>[] => fats.map(f => multiaddr(loopbackAddr(f)))
  const announce = async (): Promise<void> => {
    await Promise.all(vendors.flatMap(v => addrs().map(async fat => {
      const msg = { t: 'announce', addrs: fullAddrs(v.node), capacity, free: capacity, devices: [{ path: '/disk', capacity, free: capacity, failed: false }], inflight: 0, done: [], held: 0, room: capacity, over: 0, lost: [] }
      await call(v.node, fat, FAT_PROTOCOL, msg, { announced: M.Announced }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(10_000) }).catch(() => {})
    })))
  }
  await announce()
  const beat = setInterval(() => { void announce() }, 1000)
  const userKey = await generateKeyPair('Ed25519')
  const user = await createNode({ privateKey: userKey, listen: [], dhtServer: false })
  const owner = user.peerId.toString()
  const byId = new Map(vendors.map(v => [v.id, v]))
  return {
    vendors,
    owner,
    async ask<C extends M.Message<any>> (msg: object, expected: Record<string, any>, via = 0, signed = true): Promise<C> {
      return await call(user, addrs()[via], FAT_PROTOCOL, signed ? await signRequest(userKey, owner, msg) : msg, expected, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(120_000) }) as C
    },
    async chunk (fileId, i, size, on) {
      const id = randomBytes(32).toString('hex')
      const replicas = await Promise.all(on.map(async vendor => {
        const r = await sign<M.Receipt>((byId.get(vendor) as FakeVendor).key, 'receipt', { vendor, fileId, chunkId: id, size })
        return { vendor, sig: r.sig }
      }))
      return { i, id, size, replicas }
    },
    async stop () {
      clearInterval(beat)
      await user.stop()
      for (const v of vendors) await v.node.stop()
    }
  }
}
