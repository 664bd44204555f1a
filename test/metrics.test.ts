import assert from 'node:assert/strict'
import { readdir, rename, rm, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import type { Client, UploadResult } from '../src/index.ts'
import { CHUNK_OVERHEAD, FAT_SYNC_PROTOCOL } from '../src/protocol/ids.ts'
import { PIECE_OVERHEAD } from '../src/store/devices.ts'
import { DEFAULT_PIECES } from '../src/roles/user/index.ts'
import { MIN_PIECE } from '../src/roles/user/upload.ts'
import { pieceCut } from '../src/roles/vendor/chunks.ts'
import { cli, eventually, randomFile, sha256File, useCluster } from './helpers.ts'
import { health, scrape, wentDown, type Scrape } from './scrape.ts'

const KiB = 1024
const MiB = 1024 * KiB
const CHUNK = 256 * KiB
const FAT = '/stor/fat/1.0.0'

describe('metrics and health: /metrics of a FAT and of vendors, scraped and parsed as Prometheus text', function () {
  const net = useCluster('metrics', {
    vendors: 3,
    devicesPerVendor: 2,
    deviceSize: '64MiB',
    fatArgs: ['--heartbeat', '500ms', '--http-listen', '127.0.0.1:0'],
    vendorArgs: ['--http-listen', '0', '--scrub-interval', '1s', '--scrub-rate', '64MiB']
  }, ['alice'])
  const alice = (): Client => net.user('alice')
  const fatUrl = (): string => net.cluster.fat.http as string
  const vendorUrl = (i: number): string => net.cluster.vendors[i].http as string
  const all = async (): Promise<Scrape[]> => await Promise.all([fatUrl(), ...net.cluster.vendors.map((_, i) => vendorUrl(i))].map(scrape))
  const sizes = [600 * KiB, 100 * KiB, 1 * MiB + 5]
  /** The bytes of each chunk of a file of `size`, as vendors store them. */
  const chunkBytes = (size: number): number[] => Array.from({ length: Math.ceil(size / CHUNK) }, (_, i) => Math.min(CHUNK, size - i * CHUNK) + CHUNK_OVERHEAD)
  const uploads: UploadResult[] = []
  let first: Scrape[] = []

  it('every daemon prints its HTTP address, serves /metrics with the stor_ prefix, and is healthy', async function () {
    assert.match(fatUrl(), /^http:\/\/127\.0\.0\.1:\d+$/)
    for (let i = 0; i < 3; i++) assert.match(vendorUrl(i), /^http:\/\/127\.0\.0\.1:\d+$/, 'a bare port binds to 127.0.0.1')
    first = await all()
    const [fat] = first
    assert.equal(fat.value('stor_fat_replicas'), 1)
    assert.equal(fat.value('stor_fat_leader'), 1)
    assert.equal(fat.value('stor_fat_vendors', { state: 'alive' }), 3)
    assert.equal(fat.value('stor_fat_vendors', { state: 'suspect' }) + fat.value('stor_fat_vendors', { state: 'dead' }), 0)
    assert.equal(fat.value('stor_fat_capacity_bytes'), 3 * 2 * 64 * MiB)
    assert.equal(fat.value('stor_fat_files'), 0)
    assert.ok(fat.value('stor_fat_raft_commit_index') >= 1)
    assert.equal(fat.value('stor_fat_raft_applied_index'), fat.value('stor_fat_raft_commit_index'))
    assert.ok(fat.value('stor_process_resident_memory_bytes') > 0, 'the process metrics carry the prefix too')
    for (const s of first) {
      for (const name of s.nan) assert.match(name, /^stor_nodejs_eventloop_lag_/, 'only the event-loop lag (with no samples yet) may be NaN')
      for (const name of s.names()) assert.ok(name.startsWith('stor_'), `${name} has the stor_ prefix`)
      for (const [name, m] of Object.entries(s.metrics)) if (m.type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`)
      for (const [name, m] of Object.entries(s.metrics)) if (m.type === 'histogram') assert.ok(name.endsWith('_seconds'), `histogram ${name} is in seconds`)
    }
    for (let i = 0; i < 3; i++) {
      assert.equal(first[i + 1].sum('stor_vendor_device_capacity_bytes'), 2 * 64 * MiB)
      assert.equal(first[i + 1].sum('stor_vendor_device_failed'), 0)
    }
    for (const url of [fatUrl(), vendorUrl(0), vendorUrl(1), vendorUrl(2)]) {
      const h = await health(url)
      assert.equal(h.status, 200, h.reason)
      assert.equal(h.ok, true)
    }
    const plain = await fetch(`${fatUrl()}/health`)
    assert.equal(plain.status, 200)
    assert.match(await plain.text(), /^ok: this replica orders writes/)
  })

  it('N uploads show as N files, their chunks as healthy, their bytes on the vendors that hold them', async function () {
    for (const [i, size] of sizes.entries()) uploads.push(await alice().upload(await randomFile(join(net.dir, `up${i}`), size), { chunkSize: CHUNK, replicas: 2 }))
    const chunks = uploads.reduce((n, u) => n + u.chunks, 0)
    const stored = sizes.reduce((n, s) => n + chunkBytes(s).reduce((a, b) => a + b, 0), 0)
    const [fat, ...vendors] = await all()
    assert.equal(fat.value('stor_fat_files'), 3)
    assert.equal(fat.value('stor_fat_chunks', { health: 'healthy' }), chunks)
    assert.equal(fat.value('stor_fat_chunks', { health: 'under_replicated' }), 0)
    assert.equal(fat.value('stor_fat_chunks', { health: 'lost' }), 0)
    assert.equal(fat.value('stor_fat_committed_bytes_total'), 2 * stored)
    assert.equal(fat.value('stor_fat_used_bytes'), 2 * stored)
    assert.equal(fat.value('stor_fat_allocations_open'), 0)
    assert.equal(fat.count('stor_fat_allocation_duration_seconds'), 3)
    assert.equal(fat.count('stor_fat_commit_duration_seconds'), 3)
    assert.equal(fat.value('stor_requests_total', { protocol: FAT, request: 'commit', outcome: 'ok' }), 3)
    assert.equal(fat.value('stor_requests_total', { protocol: FAT, request: 'allocate', outcome: 'ok' }), 3)
    // each vendor's own count agrees with where the tables put each chunk
    for (const [i, v] of net.cluster.vendors.entries()) {
      const held = uploads.flatMap(u => u.placements.filter(p => p.vendors.includes(v.peerId)))
      assert.equal(vendors[i].value('stor_vendor_chunks'), held.length, `vendor ${i} chunks`)
      assert.equal(fat.value('stor_fat_vendor_used_bytes', { vendor: v.peerId }), vendors[i].sum('stor_vendor_received_bytes_total', { kind: 'store' }), `vendor ${i}: the FAT's and the vendor's bytes agree`)
      assert.equal(vendors[i].count('stor_vendor_store_duration_seconds', { kind: 'store' }), held.length)
    }
    assert.equal(vendors.reduce((n, v) => n + v.value('stor_vendor_received_bytes_total', { kind: 'store' }), 0), 2 * stored)
    // on the devices, a piece takes whole blocks and its overhead (src/store/devices.ts footprint)
    const bs = (await statfs(net.cluster.deviceDirs(0)[0])).bsize
    const onDisk = sizes.reduce((n, s) => n + chunkBytes(s).reduce((a, c) => {
      const { pieceSize, count } = pieceCut(c, Math.max(1, Math.min(DEFAULT_PIECES, Math.ceil(c / MIN_PIECE))))
      const pieces = Array.from({ length: count }, (_, i) => Math.min(pieceSize, c - i * pieceSize))
      return a + pieces.reduce((m, p) => m + Math.ceil(p / bs) * bs + PIECE_OVERHEAD, 0)
    }, 0), 0)
    assert.equal(vendors.reduce((n, v) => n + v.sum('stor_vendor_device_used_bytes'), 0), 2 * onDisk)
    // the pipeline: each chunk goes user -> first vendor -> second vendor
    assert.equal(vendors.reduce((n, v) => n + v.value('stor_vendor_sent_bytes_total', { kind: 'relay' }), 0), stored)
  })

  it('a download shows as chunk bytes sent to a user, one copy of each chunk', async function () {
    const up = uploads[2]
    const out = join(net.dir, 'down2')
    const before = await Promise.all(net.cluster.vendors.map(async (_, i) => await scrape(vendorUrl(i))))
    const down = await alice().download(up.fileId, out)
    assert.equal(await sha256File(out), await sha256File(join(net.dir, 'up2')))
    const after = await Promise.all(net.cluster.vendors.map(async (_, i) => await scrape(vendorUrl(i))))
    const sent = after.reduce((n, s, i) => n + s.value('stor_vendor_sent_bytes_total', { kind: 'fetch' }) - before[i].value('stor_vendor_sent_bytes_total', { kind: 'fetch' }), 0)
    const fetches = after.reduce((n, s, i) => n + s.count('stor_vendor_fetch_duration_seconds', { kind: 'fetch' }) - before[i].count('stor_vendor_fetch_duration_seconds', { kind: 'fetch' }), 0)
    // a chunk late on a loaded machine is asked of its other replica too (tail cutting): each such
    // duplicate may add up to one chunk, sent whole or in part
    const once = up.size + up.chunks * CHUNK_OVERHEAD
    if (down.duplicates === 0) {
      assert.equal(sent, once)
      assert.equal(fetches, up.chunks)
    } else {
      assert.ok(sent >= once && sent <= once + down.duplicates * (CHUNK + CHUNK_OVERHEAD), `${sent} bytes sent, ${down.duplicates} duplicates`)
      assert.ok(fetches >= up.chunks && fetches <= up.chunks + down.duplicates, `${fetches} fetches, ${down.duplicates} duplicates`)
    }
  })

  it('the scrub\'s progress and passes are counted', async function () {
    await eventually('every vendor finished a scrub pass over its chunks', async () => {
      const vendors = await Promise.all(net.cluster.vendors.map(async (_, i) => await scrape(vendorUrl(i))))
      return vendors.every(v => v.value('stor_vendor_scrub_passes_total') >= 1 && v.value('stor_vendor_scrub_checked_bytes_total') >= v.sum('stor_vendor_device_used_bytes'))
    })
  })

  it('a failed device turns the vendor unhealthy (503 naming the device); its chunks are restored onto its other device and the bytes counted', async function () {
    const v2 = net.cluster.vendors[2].peerId
    const usedOnV2 = (await scrape(fatUrl())).value('stor_fat_vendor_used_bytes', { vendor: v2 })
    // the chunks with a piece on the device that fails (a small chunk is one piece, on one device
    // only); the other device has room, so each is copied back there from another replica (the
    // tables stay)
    const [disk] = net.cluster.deviceDirs(2)
    const onDisk = new Set((await readdir(join(disk, 'stor-pieces'))).filter(n => !n.endsWith('.tmp')).map(n => n.split('.').slice(0, 2).join('.')))
    const lost = uploads.flatMap((u, f) => u.placements.filter(p => p.vendors.includes(v2) && onDisk.has(`${u.fileId}.${p.chunkId}`)).map(p => chunkBytes(sizes[f])[p.chunk]))
    assert.ok(lost.length > 0, 'the device holds pieces of chunks')
    const lostBytes = lost.reduce((n, b) => n + b, 0)
    // at once: a vendor that notices the failure while `rm -r` is still deleting would rightly move
    // the pieces it can still read to its other device, and nothing would need repair
    await rename(disk, `${disk}.gone`)
    await rm(`${disk}.gone`, { recursive: true, force: true })
    await eventually('vendor 2 reports the device failed', async () => (await scrape(vendorUrl(2))).value('stor_vendor_device_failed', { device: disk }) === 1)
    const h = await health(vendorUrl(2))
    assert.equal(h.status, 503)
    assert.ok(h.reason.includes(disk), h.reason)
    const plain = await fetch(`${vendorUrl(2)}/health`)
    assert.equal(plain.status, 503)
    assert.match(await plain.text(), /^unavailable: device /)
    await eventually('the FAT repaired every chunk vendor 2 lost, and counted it', async () => {
      const fat = await scrape(fatUrl())
      const now = { done: fat.value('stor_fat_transfers_done_total', { reason: 'repair' }), pending: fat.value('stor_fat_transfers_pending', { reason: 'repair' }), healthy: fat.value('stor_fat_chunks', { health: 'healthy' }) }
      const want = { done: lost.length, pending: 0, healthy: uploads.reduce((n, u) => n + u.chunks, 0) }
      if (JSON.stringify(now) !== JSON.stringify(want)) throw new Error(`now ${JSON.stringify(now)}, expected ${JSON.stringify(want)}`)
      return true
    }, 120_000)
    const fat = await scrape(fatUrl())
    assert.equal(fat.value('stor_fat_transferred_bytes_total', { reason: 'repair' }), lostBytes, 'bytes repaired: every byte lost with the device')
    assert.equal(fat.value('stor_fat_vendor_capacity_bytes', { vendor: v2 }), 64 * MiB, 'the FAT counts only its healthy device')
    assert.equal(fat.value('stor_fat_vendor_used_bytes', { vendor: v2 }), usedOnV2, 'vendor 2 still holds every chunk it held')
    const copied = await Promise.all([0, 1, 2].map(async i => (await scrape(vendorUrl(i))).value('stor_vendor_received_bytes_total', { kind: 'copy' })))
    assert.deepEqual(copied, [0, 0, lostBytes], 'vendor 2 itself received those bytes')
  })

  it('a killed vendor turns suspect, its copies still counted until --repair-after; no counter ever went down', async function () {
    const killed = net.cluster.vendors[0]
    const onKilled = (await scrape(vendorUrl(0))).value('stor_vendor_chunks')
    assert.ok(onKilled > 0, 'the killed vendor holds chunks')
    const before = await scrape(fatUrl())
    await killed.kill('SIGKILL')
    await eventually('the FAT counts the vendor suspect', async () => {
      const fat = await scrape(fatUrl())
      return fat.value('stor_fat_vendors', { state: 'suspect' }) === 1 && fat.value('stor_fat_vendor_up', { vendor: killed.peerId }) === 0
    }, 60_000)
    const fat = await scrape(fatUrl())
    assert.equal(fat.value('stor_fat_vendors', { state: 'alive' }) + fat.value('stor_fat_vendors', { state: 'full' }), 2)
    // a suspect vendor may come back (a restart, a short network fault): its copies count as they
    // do in `stordaemon status` and for repair, until --repair-after declares it dead
    for (const health of ['healthy', 'under_replicated', 'lost']) assert.equal(fat.value('stor_fat_chunks', { health }), before.value('stor_fat_chunks', { health }), health)
    assert.equal(fat.value('stor_fat_capacity_bytes'), 2 * 64 * MiB + 64 * MiB, 'capacity counts the vendors heard: vendor 1 whole, vendor 2 without its failed device')
    assert.deepEqual(wentDown(first[0], fat), [], 'FAT counters only go up')
    for (const i of [1, 2]) assert.deepEqual(wentDown(first[i + 1], await scrape(vendorUrl(i))), [], `vendor ${i} counters only go up`)
  })

  it('--http-listen refuses a bad address and a port in use with a clear error', async function () {
    const bad = await cli(['--role', 'fat', '--data-dir', join(net.dir, 'badhttp'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http-listen', 'localhost:http'])
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /^stordaemon: --http-listen: "localhost:http" is not an address; write PORT, HOST:PORT/)
    const port = new URL(fatUrl()).port
    const taken = await cli(['--role', 'fat', '--data-dir', join(net.dir, 'takenhttp'), '--listen', '/ip4/127.0.0.1/tcp/0', '--http-listen', `127.0.0.1:${port}`])
    assert.equal(taken.code, 1)
    assert.match(taken.stderr, new RegExp(`^stordaemon: --http-listen: 127\\.0\\.0\\.1:${port} is in use by another program`))
  })

  it('a vendor no FAT answers turns unhealthy', async function () {
    await net.cluster.fat.kill()
    await eventually('vendor 1 says no FAT answered', async () => {
      const h = await health(vendorUrl(1))
      return h.status === 503 && /^no FAT replica answered for \d+ s$/.test(h.reason)
    }, 60_000)
  })
})

describe('two FAT replicas: the same counts on both; 503 when no leader is known', function () {
  const net = useCluster('metrics-fats', { fats: 2, vendors: 2, devicesPerVendor: 1, deviceSize: '64MiB', fatArgs: ['--heartbeat', '500ms', '--http-listen', '127.0.0.1:0'] }, ['bob'])
  const urls = (): string[] => net.cluster.fats.map(f => f.http as string)

  it('both replicas count the files and the bytes committed, whichever one ordered the writes', async function () {
    const leaders = await Promise.all(urls().map(async u => (await scrape(u)).value('stor_fat_leader')))
    assert.equal(leaders.reduce((a, b) => a + b, 0), 1, 'one replica leads')
    const up = await net.user('bob').upload(await randomFile(join(net.dir, 'b'), 300 * KiB), { chunkSize: CHUNK, replicas: 2 })
    const stored = 2 * (300 * KiB + up.chunks * CHUNK_OVERHEAD)
    await eventually('both replicas applied the commit', async () => {
      const scrapes = await Promise.all(urls().map(scrape))
      return scrapes.every(s => s.value('stor_fat_files') === 1 && s.value('stor_fat_committed_bytes_total') === stored && s.value('stor_fat_chunks', { health: 'healthy' }) === up.chunks)
    })
    const leader = await scrape(urls()[leaders.indexOf(1)])
    assert.equal(leader.count('stor_fat_commit_duration_seconds'), 1, 'the commit\'s latency is timed where it was ordered')
    // the follower serves the leader's Raft messages: they are counted under the replica protocol
    const follower = await scrape(urls()[leaders.indexOf(0)])
    assert.ok(follower.value('stor_requests_total', { protocol: FAT_SYNC_PROTOCOL, request: 'raft', outcome: 'ok' }) > 0, 'Raft messages counted on the follower')
  })

  it('a replica that cannot reach a majority answers 503 with the reason, and shows it in /metrics', async function () {
    const leaders = await Promise.all(urls().map(async u => (await scrape(u)).value('stor_fat_leader')))
    for (const u of urls()) assert.equal((await health(u)).status, 200)
    const leader = net.cluster.fats[leaders.indexOf(1)]
    await net.cluster.fats[leaders.indexOf(0)].kill()
    await eventually('the leader alone steps down and says so', async () => {
      const h = await health(leader.http as string)
      return h.status === 503 && /no replica orders writes/.test(h.reason)
    }, 60_000)
    const s = await scrape(leader.http as string)
    assert.equal(s.value('stor_fat_leader_known'), 0)
    assert.equal(s.value('stor_fat_replicas'), 2)
  })
})
