/**
 * 100,000 files committed in batches of 1,000 (each batch one pack chunk and a thousand packed
 * files, so no file bytes move: the vendors are test nodes that sign receipts), through three
 * replicas that compact their logs every 50 entries; then a fourth replica joins. It must reach
 * the same position and digest through a snapshot, and no replica's data dir may exceed five
 * times the snapshot's size: disk use follows the table, not its history.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { spawnDaemon, startCluster, type Cluster, type DaemonProcess } from '../src/index.ts'
import { loopbackAddr } from '../src/cluster.ts'
import { CHUNK_OVERHEAD } from '../src/protocol/ids.ts'
import * as M from '../src/protocol/messages.ts'
import { fakeNetwork, type FakeNetwork } from './fake-vendors.ts'
import { diskUsage, eventually, tempDir } from './helpers.ts'

const FILES = 100_000
const BATCH = 1000
const FILE_BYTES = 100
const CHUNK = 1024 * 1024

describe('100,000 files, then a new replica joins through a snapshot', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  let net: FakeNetwork | undefined
  let joiner: DaemonProcess | undefined

  before(async function () {
    tmp = await tempDir('snapshot-scale')
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 0, fatArgs: ['--heartbeat', '1s', '--snapshot-every', '50'] })
    net = await fakeNetwork(cluster.fats, 3, 64 * 1024 * CHUNK)
  })

  after(async function () {
    await joiner?.kill()
    await net?.stop()
    await cluster?.stop()
    await tmp?.remove()
  })

  it('commits 100,000 files, and the new replica agrees within 30 s; every data dir stays under five snapshots', async function () {
    const n = net as FakeNetwork
    const packBytes = BATCH * FILE_BYTES
    const sizes = [...Array.from({ length: BATCH }, () => FILE_BYTES), packBytes]
    const packed = Array.from({ length: BATCH }, (_, i) => i)
    const wrappedKey = randomBytes(64).toString('hex')
    for (let b = 0; b < FILES / BATCH; b++) {
      let a: M.Message<typeof M.Allocated> | undefined
      await eventually('an allocation', async () => {
        a = await n.ask<M.Message<typeof M.Allocated>>({ t: 'allocate', sizes, replicas: 2, chunkSize: CHUNK, packed }, { allocated: M.Allocated })
        return true
      }, 30_000)
      const { allocationId, fileIds, candidates } = a as M.Message<typeof M.Allocated>
      const packId = fileIds[BATCH]
      const created = Date.now()
      const pack: M.FileTable = { fileId: packId, owner: n.owner, name: `pack ${b}`, size: packBytes, chunkSize: CHUNK, replicas: 2, created, cipher: { alg: 'aes-256-gcm', wrappedKey }, chunks: [await n.chunk(packId, 0, packBytes + CHUNK_OVERHEAD, [candidates[0].vendor, candidates[1].vendor])], kind: 'pack' }
      const files: M.FileTable[] = fileIds.slice(0, BATCH).map((fileId, i) => ({ fileId, owner: n.owner, name: `batch ${b} file ${i}`, size: FILE_BYTES, chunkSize: CHUNK, replicas: 2, created, cipher: { alg: 'aes-256-gcm', wrappedKey }, chunks: [], packed: { pack: packId, offset: i * FILE_BYTES } }))
      await n.ask({ t: 'commit', allocationId, tables: [...files, pack] }, { ok: M.Ok })
    }
    const status = async (): Promise<M.Message<typeof M.StatusReply>> => await n.ask({ t: 'status' }, { 'status-reply': M.StatusReply }, 0, false)
    assert.equal((await status()).files, FILES + FILES / BATCH, 'every file and pack is in the table')

    const started = Date.now()
    joiner = await spawnDaemon('fat', join(tmp.dir, 'fat-new'), ['--bootstrap', loopbackAddr(cluster.fats[0]), '--heartbeat', '1s', '--snapshot-every', '50'], 60_000, { DEBUG: 'stor:fat:raft' })
    await eventually('four replicas report one position and digest', async () => {
      const s = await status()
      return s.replicas.length === 4 && s.replicas.every(r => r.reachable && r.applied === s.replicas[0].applied && r.digest === s.replicas[0].digest)
    }, 30_000)
    const tookMs = Date.now() - started
    const installed = /installed a snapshot at \d+ \(term \d+, (\d+) bytes\)/.exec(joiner.stderr())
    assert.ok(installed != null, 'the new replica was brought up by a snapshot')
    const snapshotBytes = Number(installed[1])
    const dirs = [...cluster.fats.map(f => f.dataDir), joiner.dataDir]
    const sizesOnDisk = await Promise.all(dirs.map(async d => await diskUsage(d)))
    for (const [i, bytes] of sizesOnDisk.entries()) {
      assert.ok(bytes < 5 * snapshotBytes, `${dirs[i]} holds ${bytes} bytes, over five snapshots of ${snapshotBytes}`)
    }
    // what was measured, for the record (the test's own output is the reporter's)
    this.test!.title += ` [joined in ${(tookMs / 1000).toFixed(1)} s; snapshot ${(snapshotBytes / 1e6).toFixed(1)} MB; data dirs ${sizesOnDisk.map(b => (b / 1e6).toFixed(1)).join(', ')} MB]`
  })
})
