import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Client } from '../src/index.ts'
import { createNode, type StorNode } from '../src/node/index.ts'
import { FAT_PROTOCOL } from '../src/protocol/ids.ts'
import { call } from '../src/protocol/rpc.ts'
import { signRequest } from '../src/protocol/auth.ts'
import * as M from '../src/protocol/messages.ts'
import type { PrivateKey } from '@libp2p/interface'
import { eventually, filesUnder, useCluster } from './helpers.ts'

const KiB = 1024
const CHUNK = 256 * KiB

describe('small files share packs', function () {
  const net = useCluster('packs', { vendors: 3, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '500ms'] }, ['user'])
  const user = (): Client => net.user('user')
  const inDir = (): string => join(net.dir, 'in')

  /** Pieces on every vendor's disks, as `fileId.chunkId` (one per chunk replica). */
  const chunksOnDisks = async (): Promise<string[]> => {
    const out: string[] = []
    for (let v = 0; v < net.cluster.vendors.length; v++) {
      const names = new Set<string>()
      for (const d of net.cluster.deviceDirs(v)) for (const n of await filesUnder(d)) if (/^[0-9a-f]{32}\.[0-9a-f]{64}\.\d+$/.test(n)) names.add(n.split('.').slice(0, 2).join('.'))
      out.push(...names)
    }
    return out
  }

  before(async function () {
    await mkdir(inDir(), { recursive: true })
  })

  it('stores the small files of one upload in one pack, one chunk per replica, and each comes back byte for byte', async function () {
    // 40 small files (one empty, one of the largest size packed: a sixteenth of a chunk), and one large file
    const paths: string[] = []
    for (let i = 0; i < 40; i++) {
      const p = join(inDir(), `small-${i}`)
      await writeFile(p, randomBytes(i === 7 ? 0 : i === 8 ? CHUNK / 16 : 1 + (i * 397) % 4096))
      paths.push(p)
    }
    const big = join(inDir(), 'big')
    await writeFile(big, randomBytes(2 * CHUNK + 1000))
    paths.push(big)
    const before = (await chunksOnDisks()).length

    const up = await user().uploadMany(paths, { chunkSize: CHUNK, replicas: 2 })
    const packs = new Set(up.filter(r => r.pack != null).map(r => r.pack))
    assert.equal(packs.size, 1, 'the 40 small files share one pack')
    assert.ok(up.slice(0, 40).every(r => r.pack != null && r.chunks === 0 && r.placements.length === 1))
    assert.equal(up.reduce((n, r) => n + r.sent, 0), 1 + 3, "the pack's chunk counts once, with its first file")
    assert.equal(up[40].pack, undefined)
    assert.equal(up[40].chunks, 3)
    const [pack] = packs as Set<string>
    // the pack's one chunk and the large file's three, each on two vendors; nothing for the small files themselves
    const onDisks = await chunksOnDisks()
    assert.equal(onDisks.length - before, 2 * (1 + 3))
    assert.equal(onDisks.filter(n => n.startsWith(`${pack}.`)).length, 2)
    for (const r of up.slice(0, 40)) assert.ok(!onDisks.some(n => n.startsWith(`${r.fileId}.`)))

    // ls shows the files, never the pack
    const listed = await user().list()
    assert.ok(!listed.some(f => f.fileId === pack))
    for (const r of up) assert.ok(listed.some(f => f.fileId === r.fileId && f.size === r.size))

    // all at once, then one small file alone
    const outDir = join(net.dir, 'out-all')
    await mkdir(outDir)
    const down = await user().downloadMany(up.map((r, i) => ({ fileId: r.fileId, out: join(outDir, `f${i}`) })))
    for (const [i, r] of up.entries()) {
      assert.deepEqual(await readFile(join(outDir, `f${i}`)), await readFile(paths[i]), `file ${i}`)
      if (i < 40) assert.equal(down[i].pack, pack)
    }
    assert.deepEqual((await readdir(outDir)).filter(n => n.startsWith('.stor')), [], 'no fetched pack or partial file is left behind')
    const one = join(net.dir, 'one')
    await user().download(up[5].fileId, one)
    assert.deepEqual(await readFile(one), await readFile(paths[5]))
  })

  it('keeps a pack while any of its files is left, refuses to release the pack itself, and erases it with its last file', async function () {
    const paths: string[] = []
    for (let i = 0; i < 5; i++) {
      const p = join(inDir(), `keep-${i}`)
      await writeFile(p, randomBytes(1000 + i))
      paths.push(p)
    }
    const up = await user().uploadMany(paths, { chunkSize: CHUNK })
    const pack = up[0].pack as string
    assert.ok(pack != null)
    await assert.rejects(user().release(pack), (err: any) => err.name === 'InvalidArgumentError' && /pack/.test(err.message))

    for (const r of up.slice(0, 4)) assert.equal((await user().release(r.fileId)).freed, 0)
    const last = join(net.dir, 'last')
    await user().download(up[4].fileId, last)
    assert.deepEqual(await readFile(last), await readFile(paths[4]))
    assert.equal((await chunksOnDisks()).filter(n => n.startsWith(`${pack}.`)).length, 2, 'the pack stays while one file is left')

    const freed = (await user().release(up[4].fileId)).freed
    assert.ok(freed >= 2 * 5000, `the last file frees the pack's replicas (${freed} bytes)`)
    await assert.rejects(user().table(pack), (err: any) => err.name === 'NotFoundError')
    await eventually('the vendors erased the pack', async () => !(await chunksOnDisks()).some(n => n.startsWith(`${pack}.`)))
  })

  describe('the FAT refuses tables that break the pack rules', function () {
    let key: PrivateKey
    let node: StorNode
    let me: string
    const ask = async (msg: object): Promise<any> => {
      try {
        return await call(node, multiaddr(net.cluster.bootstrap), FAT_PROTOCOL, await signRequest(key, me, msg), { allocated: M.Allocated, ok: M.Ok }, { maxReply: M.MAX_FILES * 1000, signal: AbortSignal.timeout(10_000) })
      } catch (err: any) {
        return err
      }
    }
    const table = (fileId: string, size: number, extra: Partial<M.FileTable> = {}): M.FileTable => ({
      fileId, owner: me, name: 'x', size, chunkSize: CHUNK, replicas: 1, created: Date.now(), cipher: { alg: 'aes-256-gcm', wrappedKey: '00'.repeat(60) }, chunks: [], ...extra
    })

    before(async function () {
      key = await generateKeyPair('Ed25519')
      me = peerIdFromPrivateKey(key).toString()
      node = await createNode({ privateKey: key, listen: [], dhtServer: false })
    })
    after(async function () { await node?.stop() })

    it('an allocation whose packed list names a file twice, a file it does not have, or every file', async function () {
      for (const packed of [[0, 0], [2], [0, 1]]) {
        const err = await ask({ t: 'allocate', sizes: [10, 20], replicas: 1, chunkSize: CHUNK, packed })
        assert.equal(err.name, 'InvalidArgumentError', JSON.stringify(packed))
      }
    })

    it('a commit whose packed files lack their pack, lie outside it, carry chunks, or whose pack holds nothing', async function () {
      const cases: Array<[string, (ids: string[]) => M.FileTable[]]> = [
        ['a packed file with no pack named', ids => [table(ids[0], 10), table(ids[1], 20), table(ids[2], 30, { kind: 'pack' })]],
        ['an unpacked file naming a pack', ids => [table(ids[0], 10, { packed: { pack: ids[2], offset: 0 } }), table(ids[1], 20, { packed: { pack: ids[2], offset: 10 } }), table(ids[2], 30, { kind: 'pack' })]],
        ['a pack not in the commit', ids => [table(ids[0], 10, { packed: { pack: ids[3], offset: 0 } }), table(ids[1], 20, { packed: { pack: ids[2], offset: 10 } }), table(ids[2], 30, { kind: 'pack' })]],
        ['a file past its pack\'s end', ids => [table(ids[0], 10, { packed: { pack: ids[2], offset: 0 } }), table(ids[1], 20, { packed: { pack: ids[2], offset: 11 } }), table(ids[2], 30, { kind: 'pack' })]],
        ['a packed file with chunks', ids => [table(ids[0], 10, { packed: { pack: ids[2], offset: 0 }, chunks: [{ i: 0, id: 'ab'.repeat(32), size: 38, replicas: [] }] }), table(ids[1], 20, { packed: { pack: ids[2], offset: 10 } }), table(ids[2], 30, { kind: 'pack' })]],
        ['a pack that holds no file', ids => [table(ids[0], 10, { packed: { pack: ids[2], offset: 0 } }), table(ids[1], 20, { packed: { pack: ids[2], offset: 10 } }), table(ids[2], 30, { kind: 'pack' }), table(ids[3], 40, { kind: 'pack' })]]
      ]
      for (const [what, tables] of cases) {
        const a = await ask({ t: 'allocate', sizes: [10, 20, 30, 40], replicas: 1, chunkSize: CHUNK, packed: [0, 1] })
        assert.equal(a.t, 'allocated', a.message)
        const err = await ask({ t: 'commit', allocationId: a.allocationId, tables: tables(a.fileIds) })
        assert.equal(err.name, 'InvalidArgumentError', what)
      }
    })
  })
})
