/**
 * A 200 GiB file's table (51,200 chunks of 4 MiB at two replicas: ~25 MiB of chunk lines, more
 * than one message or log entry holds) commits through three FAT replicas in staged parts,
 * without moving 200 GiB: the vendors are libp2p nodes of this test that announce themselves as
 * a real vendor does and sign the receipts a real one would sign. The table then travels in a
 * snapshot to a replica that joins, and every replica serves it in pages.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { InvalidArgumentError, LimitError, UnavailableError } from '../src/errors.ts'
import { chunkLineBytes, commitBytesBound, checkCommitFits, MAX_COMMIT_BYTES } from '../src/roles/fat/commit-size.ts'
import { spawnDaemon, startCluster, type Cluster, type DaemonProcess } from '../src/index.ts'
import { loopbackAddr } from '../src/cluster.ts'
import { CHUNK_OVERHEAD, MAX_FAT_MESSAGE } from '../src/protocol/ids.ts'
import { encode } from '../src/protocol/codec.ts'
import * as M from '../src/protocol/messages.ts'
import { splitCommit, wholeTable } from '../src/protocol/table-pages.ts'
import { fakeNetwork, type FakeNetwork } from './fake-vendors.ts'
import { eventually, tempDir } from './helpers.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const CHUNK = 4 * MiB
const SIZE = 200 * GiB

describe('the bound on an upload\'s tables, checked at allocation', function () {
  it('bounds a real chunk line, and lets a 1 TiB file at 4 MiB chunks through', async function () {
    const vendors = await Promise.all([0, 1, 2].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    for (let replicas = 1; replicas <= 3; replicas++) {
      const real: M.ChunkEntry = { i: 25_599, id: randomBytes(32).toString('hex'), size: CHUNK + CHUNK_OVERHEAD, replicas: vendors.slice(0, replicas).map(vendor => ({ vendor, sig: randomBytes(64).toString('hex') })) }
      assert.ok(encode(real).byteLength + 1 <= chunkLineBytes(replicas), `a chunk line at ${replicas} replicas`)
    }
    assert.ok(commitBytesBound([1024 * GiB], CHUNK, 2) <= MAX_COMMIT_BYTES)
    checkCommitFits([1024 * GiB], CHUNK, 2)
    // a table the cap lets through has fewer chunks than a table may list (FileTable's chunks)
    assert.ok(MAX_COMMIT_BYTES / chunkLineBytes(1) < 1_000_000)
    // packed small files have no chunks of their own: only the pack's count
    assert.ok(commitBytesBound([10, 10, 20], CHUNK, 2, [0, 1]) < commitBytesBound([10, 10, 20], CHUNK, 2))
  })

  it('refuses tables over the cap, naming the chunk size that fits', function () {
    assert.throws(() => { checkCommitFits([4096 * GiB], CHUNK, 2) }, (err: Error) => err instanceof LimitError && /^this file, in 1048576 chunks of 4194304 bytes at 2 replicas, needs a table of up to [\d.]+ MiB, more than the FAT keeps for one upload \(256\.0 MiB\); use --chunk-size 16MiB or more$/.test(err.message))
    checkCommitFits([4096 * GiB], 4 * CHUNK, 2)
    assert.throws(() => { checkCommitFits([16384 * GiB], CHUNK, 2) }, /even the largest --chunk-size \(16MiB\) is not enough: split the file, or use fewer --replicas/)
  })
})

describe('a 200 GiB file\'s table commits in parts, travels in a snapshot and is served in pages', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  let net: FakeNetwork | undefined
  let joiner: DaemonProcess | undefined
  /** the replicas the test's user and vendors speak to; the joiner is added once it runs */
  const fats: DaemonProcess[] = []

  before(async function () {
    tmp = await tempDir('large-commit')
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 0, fatArgs: ['--heartbeat', '1s', '--snapshot-every', '20'] })
    fats.push(...cluster.fats)
    net = await fakeNetwork(fats, 3, 256 * GiB)
  })

  after(async function () {
    await joiner?.kill()
    await net?.stop()
    await cluster?.stop()
    await tmp?.remove()
  })

  it('51,200 chunks at two replicas: staged, committed, the same on a replica that joined by snapshot, and served whole', async function () {
    const n = net as FakeNetwork
    /** A write through a follower (so it also travels follower -> leader), retried like the client does while the lead moves. */
    const write = async (msg: object, what: string): Promise<void> => {
      await eventually(what, async () => {
        try {
          await n.ask(msg, { ok: M.Ok }, 2)
          return true
        } catch (err) {
          if (err instanceof UnavailableError) return false
          throw err
        }
      }, 120_000)
    }
    /** A request the FAT must refuse with `re` (asked again while the lead moves). */
    const refused = async (msg: object, re: RegExp): Promise<void> => {
      await eventually(`refused: ${re.source}`, async () => {
        try {
          await n.ask(msg, { ok: M.Ok })
        } catch (err) {
          if (err instanceof UnavailableError) return false
          assert.ok(err instanceof InvalidArgumentError && re.test(err.message), String(err))
          return true
        }
        assert.fail('the FAT took it')
      }, 120_000)
    }
    let a: M.Message<typeof M.Allocated> | undefined
    await eventually('the vendors are known to the leader', async () => {
      a = await n.ask<M.Message<typeof M.Allocated>>({ t: 'allocate', sizes: [SIZE], replicas: 2, chunkSize: CHUNK }, { allocated: M.Allocated })
      return true
    }, 30_000)
    const { allocationId, fileIds: [fileId], candidates } = a as M.Message<typeof M.Allocated>
    const count = SIZE / CHUNK
    assert.equal(count, 51_200)
    const granted = candidates.map(c => c.vendor)
    assert.equal(granted.length, 3)
    const chunks: M.ChunkEntry[] = []
    for (let i = 0; i < count; i++) chunks.push(await n.chunk(fileId, i, CHUNK + CHUNK_OVERHEAD, [granted[i % 3], granted[(i + 1) % 3]]))
    const table: M.FileTable = { fileId, owner: n.owner, name: 'two hundred gibibytes.bin', size: SIZE, chunkSize: CHUNK, replicas: 2, created: Date.now(), cipher: { alg: 'aes-256-gcm', wrappedKey: randomBytes(64).toString('hex') }, chunks }
    assert.ok(encode({ t: 'commit', allocationId, tables: [table] }).byteLength > MAX_FAT_MESSAGE, 'the whole commit would not fit one message')

    const split = splitCommit([table])
    assert.deepEqual(split.staged, [fileId])
    assert.ok(split.parts.length >= 3, `${split.parts.length} parts`)
    for (const p of split.parts) assert.ok(encode({ t: 'commit-part', allocationId, ...p }).byteLength < MAX_FAT_MESSAGE / 2)
    for (const p of split.parts.slice(0, -1)) await write({ t: 'commit-part', allocationId, ...p }, `part from ${p.first} is staged`)
    // a part overlapping a staged one is refused; a commit missing a part is refused, and changes nothing
    await refused({ t: 'commit-part', allocationId, fileId, first: 1, chunks: chunks.slice(1, 3) }, /overlap a part staged from 0/)
    const commit = { t: 'commit', allocationId, tables: split.tables, staged: split.staged }
    const last = split.parts[split.parts.length - 1]
    await refused(commit, new RegExp(`lists ${last.first} chunks, the file has ${count}`))
    await write({ t: 'commit-part', allocationId, ...last }, 'the last part is staged')
    await write(commit, 'the commit is taken')

    /** The table as replica `via` serves it, page by page. */
    const served = async (via: number): Promise<{ table: M.FileTable, pages: number }> => {
      let pages = 1
      const first = await n.ask<M.Message<typeof M.TableReply>>({ t: 'get', fileId }, { table: M.TableReply }, via)
      const whole = await wholeTable(first, async from => {
        pages++
        return await n.ask<M.Message<typeof M.TableReply>>({ t: 'get', fileId, from }, { table: M.TableReply }, via)
      })
      return { table: whole, pages }
    }
    const same = (t: M.FileTable): boolean => t.chunks.length === count && t.chunks.every((c, i) => c.i === i && c.id === chunks[i].id && c.replicas[1].sig === chunks[i].replicas[1].sig)
    for (let via = 0; via < 3; via++) {
      await eventually(`replica ${via} serves the whole table in pages`, async () => {
        const s = await served(via)
        return same(s.table) && s.pages >= 3
      }, 60_000)
    }
    // the download's own request: get-many answers the first page and where the rest begins
    const many = await n.ask<M.Message<typeof M.Tables>>({ t: 'get-many', fileIds: [fileId] }, { tables: M.Tables })
    assert.ok(many.next != null && many.next === many.tables[0].chunks.length && many.next < count)

    // more entries than a snapshot's period, so the log the joiner would need is compacted away
    for (let i = 0; i < 40; i++) await n.ask({ t: 'allocate', sizes: [1000], replicas: 2, chunkSize: CHUNK }, { allocated: M.Allocated })
    joiner = await spawnDaemon('fat', join(tmp.dir, 'fat-new'), ['--bootstrap', loopbackAddr(cluster.fats[0]), '--heartbeat', '1s', '--snapshot-every', '20'], 60_000, { DEBUG: 'stor:fat:raft' })
    fats.push(joiner)
    const status = async (): Promise<M.Message<typeof M.StatusReply>> => await n.ask({ t: 'status' }, { 'status-reply': M.StatusReply }, 0, false)
    await eventually('four replicas report one position and digest', async () => {
      const s = await status()
      return s.replicas.length === 4 && s.replicas.every(r => r.reachable && r.applied === s.replicas[0].applied && r.digest === s.replicas[0].digest)
    }, 120_000)
    assert.match(joiner.stderr(), /installed a snapshot at \d+/, 'the new replica was brought up by a snapshot')
    await eventually('the new replica serves the whole table in pages', async () => same((await served(3)).table), 60_000)
  })
})
