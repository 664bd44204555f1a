import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Client } from '../src/index.ts'
import { useCluster } from './helpers.ts'

const KiB = 1024

describe('leases: an upload slower than its lease renews it', function () {
  // a 2 s lease (plus 1 s per MiB), and vendors that wait 300 ms before taking each chunk
  const net = useCluster('lease', { vendors: 2, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--lease', '2s', '--heartbeat', '500ms'], vendorEnv: () => ({ STOR_TEST_DELAY_MS: '300' }) }, ['alice', 'bob'])
  const alice = (): Client => net.user('alice')

  it('keeps the allocation alive past its first lease, and the file comes back byte for byte', async function () {
    this.timeout(60_000)
    const src = join(net.dir, 'slow.bin')
    await writeFile(src, randomBytes(1024 * KiB))
    const t0 = Date.now()
    // 32 chunks, two at a time, each held 300 ms by its vendor: about 5 s, where the lease is 3 s
    const up = await alice().upload(src, { chunkSize: 32 * KiB, replicas: 1, concurrency: 2 })
    const took = Date.now() - t0
    assert.ok(took > 3500, `the upload outlasted its first lease (${took} ms)`)
    assert.equal(up.sent, 32)
    assert.equal((await alice().status()).allocations, 0, 'the renewed allocation was committed')
    const out = join(net.dir, 'slow.out')
    await alice().download(up.fileId, out)
    assert.deepEqual(await readFile(out), await readFile(src))
  })

  it('renews only an open allocation of the one who asks', async function () {
    const a = await alice().allocate([1000], 1)
    const renewed = await alice().renew(a.allocationId)
    assert.equal(renewed.allocationId, a.allocationId)
    assert.deepEqual(renewed.fileIds, a.fileIds)
    assert.ok(renewed.expires >= a.expires)
    assert.ok(renewed.candidates.every(c => c.grant.expires === renewed.expires && c.grant.allocationId === a.allocationId))
    await assert.rejects(net.user('bob').renew(a.allocationId), (err: any) => err.name === 'AccessDeniedError')
    await assert.rejects(alice().renew(randomBytes(16).toString('hex')), (err: any) => err.name === 'NotFoundError')
    await assert.rejects(alice().renew('not an id'), (err: any) => err.name === 'InvalidArgumentError')
  })
})
