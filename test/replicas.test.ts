import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { startCluster, openClient, type Cluster, type Client, type DaemonProcess, type StatusReport } from '../src/index.ts'
import { loopbackAddr } from '../src/cluster.ts'
import { createNode, type StorNode } from '../src/node/index.ts'
import { FAT_SYNC_PROTOCOL } from '../src/protocol/ids.ts'
import { call } from '../src/protocol/rpc.ts'
import { encode } from '../src/protocol/codec.ts'
import * as M from '../src/protocol/messages.ts'
import * as S from '../src/protocol/fat-sync.ts'
import { eventually, randomFile, sha256File, tempDir } from './helpers.ts'

const MiB = 1024 * 1024

describe('mirrored FAT replicas', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  const clients: Client[] = []

  const client = async (name: string, via: DaemonProcess): Promise<Client> => {
    const c = await openClient({ dataDir: join(tmp.dir, name), bootstrap: [loopbackAddr(via)] })
    clients.push(c)
    return c
  }
  const status = async (c: Client): Promise<StatusReport> => await c.status()
  const leaderOf = (s: StatusReport): string | undefined => s.replicas.find(r => r.leader)?.peer
  const fatNamed = (peer: string): DaemonProcess => cluster.fats.find(f => f.peerId === peer) as DaemonProcess
  /** All reachable replicas at one position with one digest. */
  const agreed = (s: StatusReport, n = cluster.fats.length): boolean => {
    const up = s.replicas.filter(r => r.reachable)
    return up.length === n && new Set(up.map(r => `${r.applied}/${r.digest}`)).size === 1
  }

  before(async function () {
    tmp = await tempDir('replicas')
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 3, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '500ms', '--lease', '2s', '--join-secret', 'test-network-secret'] })
  })

  after(async function () {
    for (const c of clients) await c.close().catch(() => {})
    await cluster?.stop()
    await tmp?.remove()
  })

  it('forms one replica set with one leader, and every replica agrees', async function () {
    const c = await client('watcher', cluster.fats[1])
    await eventually('all three replicas agree', async () => agreed(await status(c)))
    const s = await status(c)
    assert.equal(s.replicas.length, 3)
    assert.equal(s.replicas.filter(r => r.leader).length, 1)
    assert.equal(new Set(s.replicas.map(r => r.term)).size, 1)
  })

  it('changes nothing on malformed sync messages, strangers and a join without the secret', async function () {
    const c = clients[0]
    const before = await status(c)
    const strangerKey = await generateKeyPair('Ed25519')
    const stranger: StorNode = await createNode({ privateKey: strangerKey, listen: [], dhtServer: false })
    try {
      const target = multiaddr(loopbackAddr(cluster.fats[1]))
      const ask = async (msg: object): Promise<unknown> => await call(stranger, target, FAT_SYNC_PROTOCOL, msg, { 'append-reply': S.AppendReply, 'vote-reply': S.VoteReply, 'join-reply': S.JoinReply }, { maxReply: 1 << 20, signal: AbortSignal.timeout(5000) })
      await assert.rejects(ask({ t: 'append', term: 1e9, prevIndex: 0, prevTerm: 0, entries: [{ index: 1, term: 1e9, at: 0, op: { op: 'noop' } }], commit: 1 }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'vote', term: 1e9, lastIndex: 1e9, lastTerm: 1e9 }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'join', addrs: [], proof: '' }), /join proof is wrong/)
      await assert.rejects(ask({ t: 'append', term: 'x' }), { name: 'MalformedMessageError' })
      await assert.rejects(ask({ t: 'append', term: 5, prevIndex: 0, prevTerm: 0, entries: [{ index: 1, term: 1, at: 0, op: { op: 'steal-everything' } }], commit: 1 }), { name: 'MalformedMessageError' })
      const stream = await stranger.dialProtocol(target, FAT_SYNC_PROTOCOL)
      stream.send(encode({ t: 'garbage' }).subarray(0, 5))
      await stream.close()
    } finally {
      await stranger.stop()
    }
    const after = await status(c)
    assert.deepEqual(after.replicas.map(r => [r.peer, r.term, r.applied, r.digest, r.leader]), before.replicas.map(r => [r.peer, r.term, r.applied, r.digest, r.leader]))
    assert.match(cluster.fats[1].stderr() + (await status(c)).fat, /./)
  })

  it('never grants the same bytes twice: four users, 200 allocations through three replicas', async function () {
    const users = await Promise.all([0, 1, 2, 3].map(async u => await client(`alloc-user-${u}`, cluster.fats[u % 3])))
    const grants: Array<M.Grant & { received: number }> = []
    let refused = 0
    await Promise.all(users.map(async u => {
      for (let i = 0; i < 50; i++) {
        try {
          const a = await u.allocate([3 * MiB], 2, MiB)
          const received = Date.now()
          grants.push(...a.candidates.map(c => ({ ...c.grant, received })))
        } catch (err: any) {
          assert.equal(err.name, 'NoSpaceError', err.message)
          refused++
        }
      }
    }))
    assert.ok(grants.length > 0, 'some allocations were granted')
    assert.ok(refused > 0, 'the vendors were filled up, so capacity was contended')
    const s = await status(users[0])
    const capacity = new Map(s.vendors.map(v => [v.vendor, v.capacity]))
    // leases are short, so space comes back during the run: at the moment each grant arrived, the
    // grants already issued and not yet expired on that vendor must fit in its capacity
    for (const g of grants) {
      const live = grants.filter(o => o.vendor === g.vendor && o.received <= g.received && o.expires > g.received)
      const bytes = live.reduce((n, o) => n + o.bytes, 0)
      assert.ok(bytes <= (capacity.get(g.vendor) ?? 0), `${bytes} bytes granted at once on ${g.vendor}, capacity ${capacity.get(g.vendor)}`)
    }
    assert.equal(new Set(grants.map(g => `${g.allocationId}/${g.vendor}`)).size, grants.length, 'no grant appears twice')
    for (const v of s.vendors) assert.ok(v.used + v.locked <= v.capacity)
  })

  it('serves the same authoritative table from every replica', async function () {
    const writer = await client('table-writer', cluster.fats[0])
    await eventually('the earlier allocations expired', async () => (await status(writer)).allocations === 0, 60_000)
    const src = await randomFile(join(tmp.dir, 'shared'), 3 * MiB + 1)
    const up = await writer.upload(src, { chunkSize: MiB })
    const tables = []
    for (const f of cluster.fats) {
      const reader = await openClient({ dataDir: join(tmp.dir, 'table-writer'), bootstrap: [loopbackAddr(f)] })
      try {
        const out = join(tmp.dir, `shared-from-${f.peerId.slice(-6)}`)
        await reader.download(up.fileId, out)
        assert.equal(await sha256File(out), await sha256File(src))
        tables.push((await reader.list()).find(x => x.fileId === up.fileId))
      } finally {
        await reader.close()
      }
    }
    assert.ok(tables.every(t => t != null))
    assert.deepEqual(tables[1], tables[0])
    assert.deepEqual(tables[2], tables[0])
  })
})
