import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { PrivateKey } from '@libp2p/interface'
import type { Client } from '../src/index.ts'
import { createNode, type StorNode } from '../src/node/index.ts'
import { loadOrCreateKey } from '../src/node/identity.ts'
import { FAT_PROTOCOL, ORDER_PROTOCOL, STORE_PROTOCOL, FETCH_PROTOCOL } from '../src/protocol/ids.ts'
import { encode } from '../src/protocol/codec.ts'
import { sign } from '../src/protocol/sign.ts'
import { signRequest } from '../src/protocol/auth.ts'
import { sha256 } from '../src/store/devices.ts'
import type * as M from '../src/protocol/messages.ts'
import { cli, diskUsage, eventually, filesUnder, randomFile, rawRequest, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024

describe('trust no one: encryption, owners, signed grants and orders, garbage', function () {
  const net = useCluster('security', { vendors: 3, devicesPerVendor: 2, deviceSize: '512MiB', fatArgs: ['--lease', '5s', '--heartbeat', '500ms'] }, ['alice'])
  const alice = (): Client => net.user('alice')
  let mallory: StorNode
  let malloryKey: PrivateKey
  let carolKey: PrivateKey
  let carol: StorNode

  const fat = (): ReturnType<typeof multiaddr> => multiaddr(net.cluster.bootstrap)
  const vendorTarget = (i: number): { peer: string, addrs: string[] } => ({ peer: net.cluster.vendors[i].peerId, addrs: net.cluster.vendors[i].addrs })
  const vendorDisks = async (): Promise<number> => {
    let n = 0
    for (let v = 0; v < net.cluster.vendors.length; v++) for (const d of net.cluster.deviceDirs(v)) n += await diskUsage(d)
    return n
  }
  const fatState = async (): Promise<string> => {
    const s = await alice().status()
    return JSON.stringify({ files: s.files, allocations: s.allocations, vendors: s.vendors.map(v => [v.vendor, v.used, v.locked]) })
  }

  before(async function () {
    malloryKey = await generateKeyPair('Ed25519')
    mallory = await createNode({ privateKey: malloryKey, listen: [], dhtServer: false })
    carolKey = await loadOrCreateKey(join(net.dir, 'carol'))
    carol = await createNode({ privateKey: carolKey, listen: [], dhtServer: false })
  })

  after(async function () {
    await mallory?.stop()
    await carol?.stop()
  })

  it('vendors store no plaintext of the uploaded files', async function () {
    const marker = 'STORDAEMON-PLAINTEXT-MARKER-'
    const text = Buffer.from(Array.from({ length: 40_000 }, (_, i) => `${marker}${i}\n`).join(''))
    const src = join(net.dir, 'plain.txt')
    await (await import('node:fs/promises')).writeFile(src, text)
    const up = await alice().upload(src, { chunkSize: 256 * 1024 })
    let scanned = 0
    for (let v = 0; v < net.cluster.vendors.length; v++) {
      const root = join(net.dir, `vendor${v}`)
      for (const name of await filesUnder(root)) scanned += name.length
      for (const e of await (await import('node:fs/promises')).readdir(root, { recursive: true, withFileTypes: true })) {
        if (!e.isFile()) continue
        const bytes = await readFile(join(e.parentPath, e.name)).catch(() => Buffer.alloc(0))
        assert.ok(!bytes.includes(marker), `${e.name} holds plaintext`)
        assert.ok(!bytes.includes(text.subarray(1000, 1032)), `${e.name} holds plaintext`)
      }
    }
    assert.ok(scanned > 0)
    const out = join(net.dir, 'plain.out')
    await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(src))
  })

  it('a user whose keys were exported and imported into a fresh data dir downloads its file', async function () {
    const src = await randomFile(join(net.dir, 'moved'), 1 * MiB + 3)
    const up = await alice().upload(src)
    const keyFile = join(net.dir, 'alice.keys')
    const ex = await cli(['key', 'export', keyFile, '--data-dir', join(net.dir, 'alice')])
    assert.equal(ex.code, 0, ex.stderr)
    const fresh = join(net.dir, 'alice-on-another-machine')
    const im = await cli(['key', 'import', keyFile, '--data-dir', fresh, '--json'])
    assert.equal(im.code, 0, im.stderr)
    assert.equal(JSON.parse(im.stdout).peerId, alice().peerId)
    const out = join(net.dir, 'moved.out')
    const down = await cli(['download', up.fileId, out, '--bootstrap', net.cluster.bootstrap, '--data-dir', fresh])
    assert.equal(down.code, 0, down.stderr)
    assert.equal(await sha256File(out), await sha256File(src))
    const clash = await cli(['key', 'import', keyFile, '--data-dir', join(net.dir, 'carol')])
    assert.equal(clash.code, 1)
    assert.match(clash.stderr, /already holds identity/)
  })

  it('refuses garbage, oversized frames, forgeries, expired grants, replays and strangers\' orders, changing nothing', async function () {
    const src = await randomFile(join(net.dir, 'target'), 2 * MiB)
    const up = await alice().upload(src, { chunkSize: MiB })
    await eventually('the lease timer settled', async () => (await alice().status()).allocations === 0)
    const disks = await vendorDisks()
    const state = await fatState()
    const chunk = up.placements[0]
    const holder = net.cluster.vendors.findIndex(v => v.peerId === chunk.vendors[0])

    // garbage on every protocol: a clear error, never a crash
    for (const [target, protocol] of [[fat(), FAT_PROTOCOL], [vendorTarget(0), STORE_PROTOCOL], [vendorTarget(0), FETCH_PROTOCOL], [vendorTarget(0), ORDER_PROTOCOL]] as const) {
      const r = await rawRequest(mallory, target, protocol, randomBytes(500))
      assert.equal(r.t, 'error', `${protocol}: ${JSON.stringify(r)}`)
      assert.equal(r.code, 'ERR_MALFORMED')
      const wrongType = await rawRequest(mallory, target, protocol, encode({ t: 'release', fileId: up.fileId }))
      assert.equal(wrongType.t, 'error')
    }

    // an oversized frame is refused before it is read
    const huge = await rawRequest(mallory, vendorTarget(0), STORE_PROTOCOL, new Uint8Array(200 * 1024))
    assert.equal(huge.code, 'ERR_LIMIT', JSON.stringify(huge))
    const hugeFat = await rawRequest(mallory, fat(), FAT_PROTOCOL, new Uint8Array(17 * MiB))
    assert.equal(hugeFat.code, 'ERR_LIMIT', JSON.stringify(hugeFat))

    // a grant the adversary signed itself, and one claiming to be the FAT's
    const bytes = randomBytes(1000)
    const chunkId = sha256(bytes)
    const me = mallory.peerId.toString()
    const v0 = net.cluster.vendors[0].peerId
    for (const [fatId, why] of [[me, /not a FAT server of this network/], [net.cluster.fat.peerId, /grant signature/]] as const) {
      const grant = await sign<M.Grant>(malloryKey, 'grant', { allocationId: randomBytes(16).toString('hex'), owner: me, vendor: v0, bytes: 10 * MiB, expires: Date.now() + 60_000, fat: fatId })
      const header = await sign<M.ChunkHeader>(malloryKey, 'header', { owner: me, allocationId: grant.allocationId, fileId: randomBytes(16).toString('hex'), chunkId, size: bytes.byteLength, pieces: 1, route: [{ vendor: v0, addrs: [], grant }] })
      const r = await rawRequest(mallory, vendorTarget(0), STORE_PROTOCOL, encode({ t: 'store', header, hop: 0 }), bytes)
      assert.equal(r.code, 'ERR_ACCESS_DENIED', JSON.stringify(r))
      assert.match(r.message, why)
    }

    // an expired grant, used by its rightful owner
    const carolId = carol.peerId.toString()
    const alloc = await rawRequest(carol, fat(), FAT_PROTOCOL, encode(await signRequest(carolKey, carolId, { t: 'allocate', sizes: [1000], replicas: 1, chunkSize: MiB })))
    assert.equal(alloc.t, 'allocated', JSON.stringify(alloc))
    const hop = alloc.candidates[0] as M.Hop
    await eventually('the grant expired', async () => Date.now() > hop.grant.expires + 100)
    const sealed = randomBytes(1028)
    const expiredHeader = await sign<M.ChunkHeader>(carolKey, 'header', { owner: carolId, allocationId: alloc.allocationId, fileId: alloc.fileIds[0], chunkId: sha256(sealed), size: sealed.byteLength, pieces: 1, route: [hop] })
    const target = net.cluster.vendors.findIndex(v => v.peerId === hop.vendor)
    const expired = await rawRequest(carol, vendorTarget(target), STORE_PROTOCOL, encode({ t: 'store', header: expiredHeader, hop: 0 }), sealed)
    assert.equal(expired.code, 'ERR_ACCESS_DENIED')
    assert.match(expired.message, /expired/)

    // a replayed request
    await eventually('the lease timer settled', async () => (await alice().status()).allocations === 0)
    const request = encode(await signRequest(carolKey, carolId, { t: 'list' }))
    assert.equal((await rawRequest(carol, fat(), FAT_PROTOCOL, request)).t, 'files')
    const replay = await rawRequest(carol, fat(), FAT_PROTOCOL, request)
    assert.equal(replay.code, 'ERR_ACCESS_DENIED')
    assert.match(replay.message, /replayed/)

    // another user's release: mallory signs as herself, then pretends to be alice()
    const steal = await rawRequest(mallory, fat(), FAT_PROTOCOL, encode(await signRequest(await generateKeyPair('Ed25519'), me, { t: 'release', fileId: up.fileId })))
    assert.equal(steal.code, 'ERR_ACCESS_DENIED')
    const own = await rawRequest(carol, fat(), FAT_PROTOCOL, encode(await signRequest(carolKey, carolId, { t: 'release', fileId: up.fileId })))
    assert.equal(own.code, 'ERR_ACCESS_DENIED')
    assert.match(own.message, /another user/)
    const forged = await rawRequest(mallory, fat(), FAT_PROTOCOL, encode(await signRequest(carolKey, alice().peerId, { t: 'release', fileId: up.fileId })))
    assert.equal(forged.code, 'ERR_ACCESS_DENIED')

    // a fetch by someone else
    const theft = await rawRequest(carol, vendorTarget(holder), FETCH_PROTOCOL, encode(await signRequest(carolKey, carolId, { t: 'fetch', fileId: up.fileId, chunkId: chunk.chunkId })))
    assert.equal(theft.code, 'ERR_ACCESS_DENIED')

    // an erase order signed by a stranger, and one naming the real FAT but signed by the stranger
    for (const [fatId, why] of [[me, /not a FAT server of this network/], [net.cluster.fat.peerId, /order signature/]] as const) {
      const order = await sign<M.Order>(malloryKey, 'order', { id: randomBytes(16).toString('hex'), kind: 'erase', scope: up.fileId, vendor: chunk.vendors[0], keep: [], issued: Date.now(), fat: fatId })
      const r = await rawRequest(mallory, vendorTarget(holder), ORDER_PROTOCOL, encode({ t: 'order', order }))
      assert.equal(r.code, 'ERR_ACCESS_DENIED', JSON.stringify(r))
      assert.match(r.message, why)
    }

    assert.equal(await vendorDisks(), disks, 'nothing changed on the vendors\' disks')
    assert.equal(await fatState(), state, 'nothing changed in the FAT\'s table')

    // and everyone else is still served
    const out = join(net.dir, 'target.out')
    await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(src))
    const again = await randomFile(join(net.dir, 'after'), MiB + 1)
    const up2 = await alice().upload(again)
    await alice().download(up2.fileId, join(net.dir, 'after.out'))
    assert.equal(await sha256File(join(net.dir, 'after.out')), await sha256File(again))
  })
})
