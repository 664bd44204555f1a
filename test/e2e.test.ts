import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Client, UploadResult } from '../src/index.ts'
import { diskUsage, eventually, filesUnder, randomFile, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024
const CHUNK = 1 * MiB

describe('end to end: one FAT and three vendors as processes, users as separate identities', function () {
  const net = useCluster('e2e', { vendors: 3, devicesPerVendor: 2, deviceSize: '1GiB', fatArgs: ['--lease', '6s', '--heartbeat', '500ms'] }, ['alice', 'bob'])
  const alice = (): Client => net.user('alice')
  const bob = (): Client => net.user('bob')

  /** Bytes of piece files (the device's index and owner marker are not pieces). */
  const allDisks = async (): Promise<number> => {
    let n = 0
    for (let v = 0; v < net.cluster.vendors.length; v++) for (const d of net.cluster.deviceDirs(v)) n += await diskUsage(join(d, 'stor-pieces'))
    return n
  }
  const fatTaken = async (): Promise<{ used: number, locked: number }> => {
    const s = await alice().status()
    return { used: s.vendors.reduce((n, v) => n + v.used, 0), locked: s.vendors.reduce((n, v) => n + v.locked, 0) }
  }
  /** Which vendors (by index) hold pieces of each chunk, read off their device folders. */
  const holders = async (up: UploadResult): Promise<Map<string, Set<number>>> => {
    const out = new Map<string, Set<number>>()
    for (let v = 0; v < net.cluster.vendors.length; v++) {
      for (const d of net.cluster.deviceDirs(v)) {
        for (const name of await filesUnder(d)) {
          const [fileId, chunkId] = name.split('.')
          if (fileId !== up.fileId) continue
          if (!out.has(chunkId)) out.set(chunkId, new Set())
          out.get(chunkId)?.add(v)
        }
      }
    }
    return out
  }

  for (const [label, size] of [['0 bytes', 0], ['1 byte', 1], ['chunk size - 1', CHUNK - 1], ['chunk size', CHUNK], ['chunk size + 1', CHUNK + 1], ['50 MiB', 50 * MiB]] as const) {
    it(`round-trips ${label} byte for byte, every chunk on two distinct vendors`, async function () {
      const src = await randomFile(join(net.dir, `in-${size}`), size)
      const up = await alice().upload(src, { chunkSize: CHUNK })
      assert.equal(up.chunks, Math.ceil(size / CHUNK))
      const index = new Map(net.cluster.vendors.map((v, i) => [v.peerId, i]))
      const onDisk = await holders(up)
      assert.equal(onDisk.size, up.chunks, 'every chunk has pieces on disk')
      for (const p of up.placements) {
        assert.equal(new Set(p.vendors).size, 2, `chunk ${p.chunk} is placed on two distinct vendors`)
        assert.deepEqual([...onDisk.get(p.chunkId) ?? []].sort(), p.vendors.map(v => index.get(v)).sort(), `chunk ${p.chunk} is on the disks of the vendors its table names`)
      }
      const out = join(net.dir, `out-${size}`)
      const down = await alice().download(up.fileId, out)
      assert.equal(down.size, size)
      assert.equal(await sha256File(out), await sha256File(src))
    })
  }

  it('lists a user\'s files, and only that user\'s', async function () {
    const src = await randomFile(join(net.dir, 'listed'), 1000)
    const up = await alice().upload(src, { chunkSize: CHUNK })
    assert.ok((await alice().list()).some(f => f.fileId === up.fileId && f.name === 'listed' && f.size === 1000))
    assert.ok(!(await bob().list()).some(f => f.fileId === up.fileId))
  })

  it('after release, the vendors\' disks and the FAT\'s free bytes are back where they started', async function () {
    await eventually('no allocation is open', async () => (await alice().status()).allocations === 0)
    const disksBefore = await allDisks()
    const fatBefore = await fatTaken()
    const src = await randomFile(join(net.dir, 'released'), 3 * MiB + 17)
    const up = await alice().upload(src, { chunkSize: CHUNK })
    assert.ok(await allDisks() > disksBefore)
    assert.ok((await fatTaken()).used > fatBefore.used)
    const r = await alice().release(up.fileId)
    assert.equal(r.freed, 2 * (3 * MiB + 17 + 4 * 28))
    assert.deepEqual(await fatTaken(), fatBefore)
    await eventually('the vendors erased the file', async () => await allDisks() === disksBefore)
    assert.equal((await holders(up)).size, 0)
  })

  it('releases an uncommitted allocation when its lease expires', async function () {
    const before = await fatTaken()
    const a = await alice().allocate([5 * MiB], 2, CHUNK)
    assert.ok(a.candidates.length >= 2)
    const locked = await fatTaken()
    assert.ok(locked.locked > before.locked, 'the allocation locks space')
    await eventually('the lease expired', async () => (await fatTaken()).locked === before.locked, 30_000)
    assert.equal((await alice().status()).allocations, 0)
  })

  it('refuses another user\'s download or release with a clear error, and the file stays', async function () {
    const src = await randomFile(join(net.dir, 'private'), 2 * MiB)
    const up = await alice().upload(src, { chunkSize: CHUNK })
    await assert.rejects(bob().download(up.fileId, join(net.dir, 'stolen')), (err: any) => err.name === 'AccessDeniedError' && /belongs to another user/.test(err.message))
    await assert.rejects(bob().release(up.fileId), (err: any) => err.name === 'AccessDeniedError')
    await assert.rejects(bob().download('0'.repeat(32), join(net.dir, 'nothing')), (err: any) => err.name === 'NotFoundError')
    const out = join(net.dir, 'private-out')
    await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(src))
  })

  it('a FAT restarted with kill -9 takes an upload at once: it waits for its vendors\' first heartbeats rather than say the network is full', async function () {
    await net.cluster.fat.kill('SIGKILL')
    const fat = await net.cluster.fat.restart()
    net.cluster.fats[0] = fat
    net.cluster.fat = fat
    const src = await randomFile(join(net.dir, 'after-restart'), 3 * MiB + 1)
    const up = await alice().upload(src, { chunkSize: CHUNK, replicas: 2 })
    const out = join(net.dir, 'after-restart-out')
    await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(src))
  })

  it('still gets the file after a vendor is killed between upload and download', async function () {
    const src = await randomFile(join(net.dir, 'survivor'), 6 * MiB + 5)
    const up = await alice().upload(src, { chunkSize: CHUNK })
    const victim = net.cluster.vendors[0]
    assert.ok(up.placements.some(p => p.vendors.includes(victim.peerId)), 'the victim holds chunks of the file')
    await victim.kill('SIGKILL')
    const out = join(net.dir, 'survivor-out')
    const down = await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(src))
    assert.ok(!down.sources.some(s => s.vendor === victim.peerId))
  })
})
