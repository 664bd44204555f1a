import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { startCluster, openClient, type Cluster, type Client, type DaemonProcess, type StatusReport } from '../src/index.ts'
import { loopbackAddr } from '../src/cluster.ts'
import { createNode, type StorNode } from '../src/node/index.ts'
import { FAT_PROTOCOL, FAT_SYNC_PROTOCOL } from '../src/protocol/ids.ts'
import { signRequest } from '../src/protocol/auth.ts'
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
  /** Closes a client, so another with the same identity can connect (one peer id, one live node). */
  const close = async (c: Client): Promise<void> => {
    clients.splice(clients.indexOf(c), 1)
    await c.close()
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
    cluster = await startCluster({ dir: tmp.dir, fats: 3, vendors: 3, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '500ms', '--lease', '5s', '--join-secret', 'test-network-secret'] })
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
      const ask = async (msg: object): Promise<unknown> => await call(stranger, target, FAT_SYNC_PROTOCOL, msg, { 'raft-ack': S.RaftAck, 'join-reply': S.JoinReply }, { maxReply: 1 << 20, signal: AbortSignal.timeout(5000) })
      const app = { type: 'app', term: 1e9, prevIndex: 0, prevTerm: 0, entries: [{ index: 1, term: 1e9, at: 0, op: { op: 'noop' } }], commit: 1 }
      await assert.rejects(ask({ t: 'raft', msg: app }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'raft', msg: { type: 'vote', term: 1e9, lastIndex: 1e9, lastTerm: 1e9 } }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'raft', msg: { type: 'pre-vote', term: 1e9, lastIndex: 1e9, lastTerm: 1e9 } }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'snap-chunk', term: 1e9, id: 'ab'.repeat(16), seq: 0, records: [{ k: 'file/x', v: '{}' }], last: { index: 1e9, term: 1e9, members: [] } }), { name: 'AccessDeniedError' })
      await assert.rejects(ask({ t: 'join', addrs: [], proof: '' }), /join proof is wrong/)
      await assert.rejects(ask({ t: 'raft', msg: { type: 'app', term: 'x' } }), { name: 'MalformedMessageError' })
      await assert.rejects(ask({ t: 'raft', msg: { ...app, entries: [{ index: 1, term: 1, at: 0, op: { op: 'steal-everything' } }] } }), { name: 'MalformedMessageError' })
      await assert.rejects(ask({ t: 'raft', msg: { type: 'snap', term: 5 } }), { name: 'MalformedMessageError' })
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
          // a dozen of these fill every vendor, and each holds its space for 22 s: capacity is contended
          const a = await u.allocate([20 * MiB], 2, MiB)
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
    await close(writer)
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
  it('a replica stopped while 100 files are committed catches up on restart, and grants nothing meanwhile', async function () {
    const watcher = clients[0]
    const before = await status(watcher)
    const leader = leaderOf(before) as string
    const victimIndex = cluster.fats.findIndex(f => f.peerId !== leader)
    const victim = cluster.fats[victimIndex]
    await victim.kill()
    const writer = await client('bulk-writer', cluster.fats.find(f => f.peerId === leader) as DaemonProcess)
    const dir = join(tmp.dir, 'bulk')
    await (await import('node:fs/promises')).mkdir(dir)
    const paths = await Promise.all(Array.from({ length: 100 }, async (_, i) => await randomFile(join(dir, `f${i}`), 1000 + i)))
    for (let b = 0; b < 100; b += 20) await writer.uploadMany(paths.slice(b, b + 20), { chunkSize: MiB })
    assert.ok((await writer.list()).length >= 100)
    const behind = await status(writer)
    const restarted = await victim.restart()
    cluster.fats[victimIndex] = restarted
    // while it catches up it is a follower: nothing it holds can be granted from
    const early = await status(writer)
    const mine = early.replicas.find(r => r.peer === restarted.peerId)
    assert.ok(mine != null && !mine.leader)
    await eventually('the restarted replica caught up', async () => {
      const s = await status(writer)
      return agreed(s) && (s.replicas.find(r => r.peer === restarted.peerId)?.applied ?? 0) >= behind.position
    }, 60_000)
    const count = (await writer.list()).length
    await close(writer)
    const direct = await openClient({ dataDir: join(tmp.dir, 'bulk-writer'), bootstrap: [loopbackAddr(restarted)] })
    try {
      // retried: on loopback every peer is one host, and libp2p refuses more than 5 new inbound
      // connections a second per host, which a replica that has just restarted can exceed
      await eventually('the restarted replica lists every file', async () => (await direct.list()).length === count, 30_000)
    } finally {
      await direct.close()
    }
  })

  it('a frozen leader is deposed: the others go on granting, and after SIGCONT it grants nothing from its stale table', async function () {
    const watcher = clients[0]
    const old = fatNamed(leaderOf(await status(watcher)) as string)
    const other = cluster.fats.find(f => f !== old) as DaemonProcess
    const viaOther = await client('frozen-other', other)
    const userKey = await generateKeyPair('Ed25519')
    const user = await createNode({ privateKey: userKey, listen: [], dhtServer: false })
    const oldAddr = multiaddr(loopbackAddr(old))
    await user.dial(oldAddr)
    old.child.kill('SIGSTOP')
    try {
      // a request that reaches the frozen leader waits in its socket until it wakes; no failover here
      const request = await signRequest(userKey, user.peerId.toString(), { t: 'allocate', sizes: [MiB], replicas: 1, chunkSize: MiB })
      const stale = call(user, oldAddr, FAT_PROTOCOL, request, { allocated: M.Allocated }, { maxReply: 1 << 20, signal: AbortSignal.timeout(60_000) }).then(a => a, (err: Error) => err)
      await eventually('another replica leads', async () => {
        const s = await viaOther.status()
        const l = leaderOf(s)
        return l != null && l !== old.peerId
      }, 20_000)
      const granted = await viaOther.allocate([MiB], 2, MiB)
      assert.ok(granted.candidates.length >= 2)
      assert.ok(granted.candidates.every(c => c.grant.fat !== old.peerId), 'granted by the new leader')
      old.child.kill('SIGCONT')
      const result = await stale
      // woken, the old leader either refuses (it cannot reach a majority in its term; or the
      // connection was dropped while it was frozen) or, once it knows it was deposed, hands the
      // request to the new leader: it never grants on its own
      const grantedByOld = !(result instanceof Error) && result.candidates.some(c => c.grant.fat === old.peerId)
      assert.ok(!grantedByOld, 'a grant signed by the deposed leader')
    } finally {
      old.child.kill('SIGCONT')
      await user.stop()
    }
    await eventually('the old leader caught up as a follower', async () => {
      const s = await viaOther.status()
      return agreed(s) && leaderOf(s) !== old.peerId
    }, 30_000)
  })

  it('kill -9 of the leader while uploads run: every upload completes through another replica, every file downloads', async function () {
    const watcher = clients[0]
    await eventually('no allocation is open', async () => (await status(watcher)).allocations === 0, 60_000)
    const leader = fatNamed(leaderOf(await status(watcher)) as string)
    const users = await Promise.all([0, 1, 2].map(async u => await client(`survivor-${u}`, leader)))
    const files = await Promise.all(users.map(async (_, u) => await randomFile(join(tmp.dir, `during-${u}`), 12 * MiB + u)))
    let killedAt = 0
    const uploads = users.map(async (u, i) => {
      const r = await u.upload(files[i], {
        chunkSize: MiB,
        onProgress: p => {
          if (killedAt === 0 && p.bytes >= 2 * MiB) { killedAt = Date.now(); void leader.kill('SIGKILL') }
        }
      })
      return { r, done: Date.now() }
    })
    const results = await Promise.all(uploads)
    assert.ok(killedAt > 0, 'the leader was killed mid-upload')
    for (const { done } of results) assert.ok(done - killedAt < 10_000, `an upload finished ${done - killedAt} ms after the kill`)
    for (const [i, { r }] of results.entries()) {
      const out = join(tmp.dir, `during-${i}.out`)
      await users[i].download(r.fileId, out)
      assert.equal(await sha256File(out), await sha256File(files[i]))
    }
  })
})
