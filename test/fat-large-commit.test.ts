/**
 * A 100 GiB file's table (25,600 chunks of 4 MiB at two replicas) commits through three FAT
 * replicas as one log entry, without moving 100 GiB: the vendors are libp2p nodes of this test
 * that announce themselves as a real vendor does and sign the receipts a real one would sign.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { startCluster, type Cluster } from '../src/index.ts'
import { loopbackAddr } from '../src/cluster.ts'
import { createNode, fullAddrs, type StorNode } from '../src/node/index.ts'
import { CHUNK_OVERHEAD, FAT_PROTOCOL, MAX_FAT_MESSAGE } from '../src/protocol/ids.ts'
import { signRequest } from '../src/protocol/auth.ts'
import { encode } from '../src/protocol/codec.ts'
import { call } from '../src/protocol/rpc.ts'
import { sign } from '../src/protocol/sign.ts'
import * as M from '../src/protocol/messages.ts'
import { eventually, tempDir } from './helpers.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const CHUNK = 4 * MiB
const SIZE = 100 * GiB

describe('a 100 GiB file\'s table commits through the replicated log', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  const vendors: Array<{ key: PrivateKey, node: StorNode, id: string }> = []
  let user: StorNode | undefined
  let beat: NodeJS.Timeout | undefined

  before(async function () {
    tmp = await tempDir('large-commit')
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 0, fatArgs: ['--heartbeat', '1s'] })
    for (let i = 0; i < 3; i++) {
      const key = await generateKeyPair('Ed25519')
      const node = await createNode({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false })
      vendors.push({ key, node, id: node.peerId.toString() })
    }
    // heartbeats to every replica, as a vendor sends them: 128 GiB offered each
    const announce = async (): Promise<void> => {
      await Promise.all(vendors.flatMap(v => cluster.fats.map(async f => {
        const capacity = 128 * GiB
        await call(v.node, multiaddr(loopbackAddr(f)), FAT_PROTOCOL, { t: 'announce', addrs: fullAddrs(v.node), capacity, free: capacity, devices: [{ path: '/disk', capacity, free: capacity, failed: false }], inflight: 0, done: [], held: 0, room: capacity, over: 0, lost: [] }, { announced: M.Announced }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(10_000) }).catch(() => {})
      })))
    }
    await announce()
    beat = setInterval(() => { void announce() }, 1000)
  })

  after(async function () {
    clearInterval(beat)
    await user?.stop()
    for (const v of vendors) await v.node.stop()
    await cluster?.stop()
    await tmp?.remove()
  })

  it('25,600 chunks at two replicas: committed, the same on every replica, and served whole', async function () {
    const userKey = await generateKeyPair('Ed25519')
    user = await createNode({ privateKey: userKey, listen: [], dhtServer: false })
    const owner = user.peerId.toString()
    const fats = cluster.fats.map(f => multiaddr(loopbackAddr(f)))
    const ask = async <C extends M.Message<any>>(msg: object, expected: Record<string, any>, via = fats[0]): Promise<C> =>
      await call(user as StorNode, via, FAT_PROTOCOL, await signRequest(userKey, owner, msg), expected, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(120_000) }) as C

    let allocation: M.Message<typeof M.Allocated> | undefined
    await eventually('the vendors are known to the leader', async () => {
      allocation = await ask<M.Message<typeof M.Allocated>>({ t: 'allocate', sizes: [SIZE], replicas: 2, chunkSize: CHUNK }, { allocated: M.Allocated })
      return true
    }, 30_000)
    const a = allocation as M.Message<typeof M.Allocated>
    const fileId = a.fileIds[0]
    const count = SIZE / CHUNK
    assert.equal(count, 25_600)
    const byId = new Map(vendors.map(v => [v.id, v]))
    const granted = a.candidates.map(c => c.vendor).filter(v => byId.has(v))
    assert.equal(granted.length, 3)
    const chunks: M.ChunkEntry[] = []
    for (let i = 0; i < count; i++) {
      const id = randomBytes(32).toString('hex')
      const size = CHUNK + CHUNK_OVERHEAD
      const on = [granted[i % 3], granted[(i + 1) % 3]]
      const replicas = await Promise.all(on.map(async vendor => {
        const r = await sign<M.Receipt>((byId.get(vendor) as { key: PrivateKey }).key, 'receipt', { vendor, fileId, chunkId: id, size })
        return { vendor, sig: r.sig }
      }))
      chunks.push({ i, id, size, replicas })
    }
    const table: M.FileTable = { fileId, owner, name: 'a hundred gibibytes.bin', size: SIZE, chunkSize: CHUNK, replicas: 2, created: Date.now(), cipher: { alg: 'aes-256-gcm', wrappedKey: randomBytes(64).toString('hex') }, chunks }
    const bytes = encode({ t: 'commit', allocationId: a.allocationId, tables: [table] }).byteLength
    assert.ok(bytes > 8 * MiB, `the commit is ${bytes} bytes: more than the old limit of one log entry (8 MiB)`)
    // through a follower, so the table also travels follower -> leader before it is logged
    await ask({ t: 'commit', allocationId: a.allocationId, tables: [table] }, { ok: M.Ok }, fats[2])
    for (const via of fats) {
      await eventually(`${via.toString().slice(-8)} serves the table`, async () => {
        const got = await ask<M.Message<typeof M.TableReply>>({ t: 'get', fileId }, { table: M.TableReply }, via)
        return got.table.chunks.length === count && got.table.chunks[count - 1].id === chunks[count - 1].id
      }, 60_000)
    }
    await eventually('every replica holds the same table', async () => {
      const s = await call(user as StorNode, fats[0], FAT_PROTOCOL, { t: 'status' }, { 'status-reply': M.StatusReply }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(30_000) })
      return s.replicas.every(r => r.reachable && r.digest === s.replicas[0].digest && r.applied === s.replicas[0].applied)
    }, 60_000)
  })
})
