/**
 * A 100 GiB file's table (25,600 chunks of 4 MiB at two replicas) commits through three FAT
 * replicas as one log entry, without moving 100 GiB: the vendors are libp2p nodes of this test
 * that announce themselves as a real vendor does and sign the receipts a real one would sign.
 * A file whose table could not fit in one entry is refused at allocation, before any upload.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LimitError, UnavailableError } from '../src/errors.ts'
import { chunkLineBytes, commitBytesBound, checkCommitFits, MAX_ENTRY_BYTES } from '../src/roles/fat/commit-size.ts'
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

describe('the bound on a commit\'s size, checked at allocation', function () {
  it('bounds a real chunk line, and lets a 100 GiB file at 4 MiB chunks through', async function () {
    const vendors = await Promise.all([0, 1, 2].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    for (let replicas = 1; replicas <= 3; replicas++) {
      const real: M.ChunkEntry = { i: 25_599, id: randomBytes(32).toString('hex'), size: CHUNK + CHUNK_OVERHEAD, replicas: vendors.slice(0, replicas).map(vendor => ({ vendor, sig: randomBytes(64).toString('hex') })) }
      assert.ok(encode(real).byteLength + 1 <= chunkLineBytes(replicas), `a chunk line at ${replicas} replicas`)
    }
    assert.ok(commitBytesBound([SIZE], CHUNK, 2) <= MAX_ENTRY_BYTES)
    checkCommitFits([SIZE], CHUNK, 2)
    // packed small files have no chunks of their own: only the pack's count
    assert.ok(commitBytesBound([10, 10, 20], CHUNK, 2, [0, 1]) < commitBytesBound([10, 10, 20], CHUNK, 2))
  })

  it('refuses a table over one entry, naming the chunk size that fits', function () {
    assert.throws(() => { checkCommitFits([200 * GiB], CHUNK, 2) }, (err: Error) => err instanceof LimitError && /this file, in 51200 chunks of 4194304 bytes at 2 replicas, needs a table of up to [\d.]+ MiB, more than one commit can log \(15\.0 MiB\); use --chunk-size 8MiB or more$/.test(err.message))
    checkCommitFits([200 * GiB], 2 * CHUNK, 2)
    assert.throws(() => { checkCommitFits([2048 * GiB], CHUNK, 2) }, /even the largest --chunk-size \(16MiB\) is not enough: split the file, or use fewer --replicas/)
  })
})

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
    // (retried like the user's client does: on a loaded machine the leader, checking 51,200
    // receipts, may lose the lead before it logs the commit, and then nothing was logged)
    await eventually('the commit is taken', async () => {
      try {
        await n.ask({ t: 'commit', allocationId, tables: [table] }, { ok: M.Ok }, 2)
        return true
      } catch (err) {
        if (err instanceof UnavailableError) return false
        throw err
      }
    }, 120_000)
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

  it('a 200 GiB file at 4 MiB chunks is refused at allocation, before any byte moves', async function () {
    const n = net as FakeNetwork
    await assert.rejects(n.ask({ t: 'allocate', sizes: [2 * SIZE], replicas: 2, chunkSize: CHUNK }, { allocated: M.Allocated }), (err: Error) => err instanceof LimitError && /use --chunk-size 8MiB or more/.test(err.message))
  })
})
