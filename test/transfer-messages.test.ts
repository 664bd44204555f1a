import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Client } from '../src/index.ts'
import { createNode, type StorNode } from '../src/node/index.ts'
import { loadOrCreateKey } from '../src/node/identity.ts'
import { FAT_PROTOCOL, ORDER_PROTOCOL, FETCH_PROTOCOL } from '../src/protocol/ids.ts'
import type { Target } from '../src/protocol/rpc.ts'
import { decode, encode } from '../src/protocol/codec.ts'
import { sign } from '../src/protocol/sign.ts'
import { signRequest } from '../src/protocol/auth.ts'
import * as M from '../src/protocol/messages.ts'
import type { Check } from '../src/protocol/schema.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { randomFile, rawRequest, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024
const hex = (n: number): string => randomBytes(n).toString('hex')

/** Every way to spoil one field of a valid message: a wrong type, out of range, a wrong form, unknown or missing. */
function spoiled (valid: Record<string, unknown>): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [['not an object', 'x'], ['null', null], ['a list', [valid]], ['an unknown field', { ...valid, extra: 1 }]]
  for (const [k, v] of Object.entries(valid)) {
    if (k === 't') continue
    const { [k]: _gone, ...without } = valid
    if (k !== 'chunks') out.push([`${k} missing`, without])
    out.push([`${k} of the wrong type`, { ...valid, [k]: typeof v === 'string' ? 12 : 'x' }])
    if (typeof v === 'string') out.push([`${k} too long`, { ...valid, [k]: v + 'a'.repeat(5000) }])
    if (typeof v === 'number') out.push([`${k} negative`, { ...valid, [k]: -1 }], [`${k} fractional`, { ...valid, [k]: 1.5 }])
    if (Array.isArray(v)) out.push([`${k} far too long`, { ...valid, [k]: Array.from({ length: 20_001 }, () => v[0] ?? 'x') }])
  }
  return out
}

describe('new wire messages: transfer orders, copies, confirmations, drain, load reports', function () {
  let transfer: M.Transfer
  let key: PrivateKey
  let peers: string[]

  before(async function () {
    key = await generateKeyPair('Ed25519')
    peers = await Promise.all([0, 1, 2].map(async () => (await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], dhtServer: false }).then(async n => { const id = n.peerId.toString(); await n.stop(); return id }))))
    transfer = await sign<M.Transfer>(key, 'transfer', { id: hex(16), reason: 'repair', owner: peers[0], fileId: hex(16), chunkId: hex(32), size: 1000, from: peers[1], fromAddrs: ['/ip4/127.0.0.1/tcp/1'], to: peers[2], replaces: peers[1], expires: Date.now() + 60_000, fat: peers[0] })
  })

  it('decode every valid new message, and refuse each spoiled form with ERR_MALFORMED', async function () {
    const receipt = await sign<M.Receipt>(key, 'receipt', { vendor: peers[2], fileId: transfer.fileId, chunkId: transfer.chunkId, size: 1000 })
    const order = await sign<M.Order>(key, 'order', { id: hex(16), kind: 'erase-chunks', scope: hex(16), vendor: peers[1], keep: [], chunks: [hex(32)], issued: Date.now(), fat: peers[0] })
    const auth = { owner: peers[1], nonce: hex(16), time: Date.now(), sig: hex(64) }
    const cases: Array<[string, Record<string, Check<any>>, Record<string, unknown>]> = [
      ['transfer', { transfer: M.TransferMsg }, { t: 'transfer', transfer }],
      ['copy', { copy: M.Copy }, { t: 'copy', transfer }],
      ['copied', { copied: M.Copied }, { t: 'copied', transfer, receipt }],
      ['drain', { drain: M.Drain }, { t: 'drain', vendor: peers[1], auth }],
      ['draining', { draining: M.Draining }, { t: 'draining', vendor: peers[1], bytes: 5 }],
      ['order', { order: M.OrderMsg }, { t: 'order', order }],
      ['announce', { announce: M.Announce }, { t: 'announce', addrs: [], capacity: 10, free: 5, devices: [], inflight: 0, done: [], held: 3, room: 4, over: 0, lost: [{ fileId: hex(16), chunkId: hex(32) }] }],
      ['announced', { announced: M.Announced }, { t: 'announced', heartbeatMs: 1000, orders: [order], fats: [{ peer: peers[0], addrs: ['/ip4/127.0.0.1/tcp/1'] }], transfers: [transfer] }]
    ]
    for (const [name, checks, valid] of cases) {
      assert.deepEqual(decode(encode(valid), checks, 16 * MiB), valid, `${name} decodes`)
      for (const [how, bad] of spoiled(valid)) {
        assert.throws(() => decode(encode(bad as object), checks, 64 * MiB), (err: any) => err.name === 'MalformedMessageError', `${name}: ${how}`)
      }
      // nested records are strict too
      for (const field of ['transfer', 'receipt', 'order']) {
        if (!(field in valid)) continue
        const inner = valid[field] as Record<string, unknown>
        for (const [how, bad] of spoiled(inner).slice(0, 40)) {
          assert.throws(() => decode(encode({ ...valid, [field]: bad }), checks, 64 * MiB), (err: any) => err.name === 'MalformedMessageError', `${name}.${field}: ${how}`)
        }
      }
    }
    // a few values with the right type and the wrong form
    const wrong: Array<[string, unknown]> = [
      ['reason', 'steal'], ['from', 'not-a-peer-id'], ['fileId', 'ABCDEF'], ['chunkId', hex(31)], ['size', 17 * MiB + 29], ['fromAddrs', ['no-slash']], ['sig', hex(63)]
    ]
    for (const [k, v] of wrong) {
      assert.throws(() => decode(encode({ t: 'transfer', transfer: { ...transfer, [k]: v } }), { transfer: M.TransferMsg }, MiB), (err: any) => err.name === 'MalformedMessageError', `transfer.${k} = ${JSON.stringify(v)}`)
    }
    assert.throws(() => decode(encode({ t: 'order', order: { ...order, kind: 'erase-all' } }), { order: M.OrderMsg }, MiB), (err: any) => err.name === 'MalformedMessageError')
  })

  describe('on the wire', function () {
    const net = useCluster('xfer-msgs', { vendors: 2, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '500ms'] }, ['alice'])
    const alice = (): Client => net.user('alice')
    let mallory: StorNode
    let malloryKey: PrivateKey

    const raw = async (target: Target, protocol: string, msg: Uint8Array): Promise<any> => await rawRequest(mallory, target, protocol, msg)
    const vendor = (i: number): { peer: string, addrs: string[] } => ({ peer: net.cluster.vendors[i].peerId, addrs: net.cluster.vendors[i].addrs })

    before(async function () {
      malloryKey = await generateKeyPair('Ed25519')
      mallory = await createNode({ privateKey: malloryKey, listen: [], dhtServer: false })
    })

    after(async function () {
      await mallory?.stop()
    })

    it('refuses forged, misdirected and expired transfers, copies, confirmations and drains, and keeps serving', async function () {
      const src = await randomFile(join(net.dir, 'f'), MiB)
      const up = await alice().upload(src, { chunkSize: MiB })
      const c = up.placements[0]
      const me = mallory.peerId.toString()
      const [v0, v1] = net.cluster.vendors.map(v => v.peerId)
      // the FAT's real key, read from its data directory, to sign orders that differ in one respect
      const fatKey = await loadOrCreateKey(net.cluster.fat.dataDir)
      const base = { id: hex(16), reason: 'migrate' as const, owner: alice().peerId, fileId: up.fileId, chunkId: c.chunkId, size: (await alice().table(up.fileId)).table.chunks[0].size, from: v0, fromAddrs: net.cluster.vendors[0].addrs, to: me, replaces: v0, expires: Date.now() + 60_000, fat: net.cluster.fat.peerId }

      // garbage on the new message types
      for (const [target, protocol, t] of [[vendor(0), ORDER_PROTOCOL, 'transfer'], [vendor(0), FETCH_PROTOCOL, 'copy'], [net.cluster.bootstrap, FAT_PROTOCOL, 'copied'], [net.cluster.bootstrap, FAT_PROTOCOL, 'drain']] as const) {
        const tgt = typeof target === 'string' ? multiaddr(target) : target
        const r = await raw(tgt, protocol, encode({ t, transfer: { id: 'x' }, vendor: 7 }))
        assert.equal(r.code, 'ERR_MALFORMED', `${t}: ${JSON.stringify(r)}`)
      }

      // a copy with a transfer signed by a stranger, and one naming the real FAT but signed by the stranger
      for (const [fatId, why] of [[me, /not a FAT server/], [net.cluster.fat.peerId, /transfer signature/]] as const) {
        const forged = await sign<M.Transfer>(malloryKey, 'transfer', { ...base, fat: fatId })
        const r = await raw(vendor(0), FETCH_PROTOCOL, encode({ t: 'copy', transfer: forged }))
        assert.equal(r.code, 'ERR_ACCESS_DENIED', JSON.stringify(r))
        assert.match(r.message, why)
      }
      // a real FAT signature, but for another target, another source, or expired
      for (const [change, why] of [[{ to: v1 }, /another target/], [{ from: v1 }, /another source/], [{ expires: Date.now() - 1 }, /expired/]] as const) {
        const t = await sign<M.Transfer>(fatKey, 'transfer', { ...base, ...change })
        const r = await raw(vendor(0), FETCH_PROTOCOL, encode({ t: 'copy', transfer: t }))
        assert.equal(r.code, 'ERR_ACCESS_DENIED', JSON.stringify(r))
        assert.match(r.message, why)
      }
      // the same order sent to the vendor as a transfer to run: not its target
      const misdirected = await sign<M.Transfer>(fatKey, 'transfer', base)
      const r1 = await raw(vendor(1), ORDER_PROTOCOL, encode({ t: 'transfer', transfer: misdirected }))
      assert.equal(r1.code, 'ERR_ACCESS_DENIED')

      // a confirmation the FAT never ordered, and one from someone who is not the target
      const receipt = await sign<M.Receipt>(malloryKey, 'receipt', { vendor: me, fileId: up.fileId, chunkId: c.chunkId, size: base.size })
      const fat = multiaddr(net.cluster.bootstrap)
      const unknown = await raw(fat, FAT_PROTOCOL, encode({ t: 'copied', transfer: misdirected, receipt }))
      assert.equal(unknown.code, 'ERR_NOT_FOUND', JSON.stringify(unknown))
      const notTarget = await raw(fat, FAT_PROTOCOL, encode({ t: 'copied', transfer: { ...misdirected, to: v1 }, receipt }))
      assert.equal(notTarget.code, 'ERR_ACCESS_DENIED')
      const badReceipt = await raw(fat, FAT_PROTOCOL, encode({ t: 'copied', transfer: misdirected, receipt: { ...receipt, size: receipt.size + 1 } }))
      assert.equal(badReceipt.code, 'ERR_ACCESS_DENIED')

      // a drain of a vendor signed by someone else
      const drain = await raw(fat, FAT_PROTOCOL, encode(await signRequest(malloryKey, me, { t: 'drain', vendor: v0 })))
      assert.equal(drain.code, 'ERR_ACCESS_DENIED', JSON.stringify(drain))

      // nothing moved, and everyone is still served
      const s = await alice().status()
      assert.ok(s.vendors.every(v => !v.draining && v.transfers === 0))
      const { table } = await alice().table(up.fileId)
      assert.deepEqual(table.chunks[0].replicas.map(r => r.vendor).sort(), c.vendors.slice().sort())
      await alice().download(up.fileId, join(net.dir, 'f.out'))
      assert.equal(await sha256File(join(net.dir, 'f.out')), await sha256File(src))
    })
  })
})
