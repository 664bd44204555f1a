/**
 * A 100 GiB file's table (25,600 chunks of 4 MiB at two replicas) commits through three FAT
 * replicas as one log entry, without moving 100 GiB: the vendors are libp2p nodes of this test
 * that announce themselves as a real vendor does and sign the receipts a real one would sign.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { startCluster, type Cluster } from '../src/index.ts'
import { CHUNK_OVERHEAD, MAX_FAT_MESSAGE } from '../src/protocol/ids.ts'
import { encode } from '../src/protocol/codec.ts'
import * as M from '../src/protocol/messages.ts'
import { fakeNetwork, type FakeNetwork } from './fake-vendors.ts'
import { eventually, tempDir } from './helpers.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const CHUNK = 4 * MiB
const SIZE = 100 * GiB

describe('a 100 GiB file\'s table commits through the replicated log', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  let net: FakeNetwork | undefined

  before(async function () {
    tmp = await tempDir('large-commit')
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 0, fatArgs: ['--heartbeat', '1s'] })
    net = await fakeNetwork(cluster.fats, 3, 128 * GiB)
  })

  after(async function () {
    await net?.stop()
    await cluster?.stop()
    await tmp?.remove()
  })

  it('25,600 chunks at two replicas: committed, the same on every replica, and served whole', async function () {
    const n = net as FakeNetwork
    let a: M.Message<typeof M.Allocated> | undefined
    await eventually('the vendors are known to the leader', async () => {
      a = await n.ask<M.Message<typeof M.Allocated>>({ t: 'allocate', sizes: [SIZE], replicas: 2, chunkSize: CHUNK }, { allocated: M.Allocated })
      return true
    }, 30_000)
    const { allocationId, fileIds: [fileId], candidates } = a as M.Message<typeof M.Allocated>
    const count = SIZE / CHUNK
    assert.equal(count, 25_600)
    const granted = candidates.map(c => c.vendor)
    assert.equal(granted.length, 3)
    const chunks: M.ChunkEntry[] = []
    for (let i = 0; i < count; i++) chunks.push(await n.chunk(fileId, i, CHUNK + CHUNK_OVERHEAD, [granted[i % 3], granted[(i + 1) % 3]]))
    const table: M.FileTable = { fileId, owner: n.owner, name: 'a hundred gibibytes.bin', size: SIZE, chunkSize: CHUNK, replicas: 2, created: Date.now(), cipher: { alg: 'aes-256-gcm', wrappedKey: randomBytes(64).toString('hex') }, chunks }
    const bytes = encode({ t: 'commit', allocationId, tables: [table] }).byteLength
    assert.ok(bytes > 8 * MiB && bytes < MAX_FAT_MESSAGE, `the commit is ${bytes} bytes: more than the old limit of one log entry (8 MiB)`)
    // through a follower, so the table also travels follower -> leader before it is logged
    await n.ask({ t: 'commit', allocationId, tables: [table] }, { ok: M.Ok }, 2)
    for (let via = 0; via < cluster.fats.length; via++) {
      await eventually(`replica ${via} serves the table`, async () => {
        const got = await n.ask<M.Message<typeof M.TableReply>>({ t: 'get', fileId }, { table: M.TableReply }, via)
        return got.table.chunks.length === count && got.table.chunks[count - 1].id === chunks[count - 1].id
      }, 60_000)
    }
    await eventually('every replica holds the same table', async () => {
      const s = await n.ask<M.Message<typeof M.StatusReply>>({ t: 'status' }, { 'status-reply': M.StatusReply }, 0, false)
      return s.replicas.every(r => r.reachable && r.digest === s.replicas[0].digest && r.applied === s.replicas[0].applied)
    }, 60_000)
  })
})
