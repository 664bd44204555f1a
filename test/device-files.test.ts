import assert from 'node:assert/strict'
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { logger } from '../src/logger.ts'
import { Devices, PIECE_OVERHEAD, parseDeviceSpec } from '../src/store/devices.ts'
import { IndexRewrite, IndexWriter, MARKER_FILE, inspectQuarantine, quarantine, readIndex, readMarker, writeMarker, type IndexLine } from '../src/store/device-files.ts'
import { PeerBook } from '../src/roles/user/peer-book.ts'
import { stampOf, unchanged } from '../src/roles/user/changes.ts'
import { tempDir } from './helpers.ts'

const log = logger('stor:test')
const line = (i: number, k = false): IndexLine => ({ o: 'owner', a: 'a'.repeat(32), f: 'f'.repeat(32), c: 'c'.repeat(64), s: 100, n: 2, i, z: 50, h: 'h'.repeat(64), k })

describe('device files and parsing (pure, no daemons)', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  beforeEach(async function () { tmp = await tempDir('devfiles') })
  afterEach(async function () { await tmp.remove() })

  it('parseDeviceSpec: a quota after the last colon, a colon in a path, and a malformed quota is an error', function () {
    assert.deepEqual(parseDeviceSpec('/mnt/d1:20GiB'), { path: '/mnt/d1', quota: 20 * 1024 ** 3 })
    assert.deepEqual(parseDeviceSpec('/mnt/d1'), { path: '/mnt/d1', quota: undefined })
    assert.deepEqual(parseDeviceSpec('/mnt/a:b/c'), { path: '/mnt/a:b/c', quota: undefined })
    assert.deepEqual(parseDeviceSpec('/mnt/a:b:1MiB'), { path: '/mnt/a:b', quota: 1024 * 1024 })
    assert.equal(parseDeviceSpec('rel').path, resolve('rel'))
    assert.throws(() => parseDeviceSpec('d1:abc'), /--device d1:abc: "abc" is not a size/)
    assert.throws(() => parseDeviceSpec('d1:0'), /more than 0 bytes/)
    assert.throws(() => parseDeviceSpec(':5MiB'), /is not PATH or PATH:SIZE/)
  })

  it('the owner marker round-trips, and a damaged one is reported, not taken for none', async function () {
    assert.equal(await readMarker(tmp.dir), undefined)
    await writeMarker(tmp.dir, 'vendor-a')
    assert.equal((await readMarker(tmp.dir))?.vendor, 'vendor-a')
    assert.deepEqual(await readdir(tmp.dir), [MARKER_FILE], 'no temporary file is left')
    await writeFile(join(tmp.dir, MARKER_FILE), '{"format":"other"}')
    await assert.rejects(readMarker(tmp.dir), /is not a stordaemon-device\/1 marker/)
  })

  it('the piece index: appended lines read back, a torn last line is skipped, a rewrite replaces it', async function () {
    const w = new IndexWriter(tmp.dir)
    w.write(line(0))
    w.write(line(1, true))
    await w.close()
    await writeFile(join(tmp.dir, 'stor-index.jsonl'), (await readFile(join(tmp.dir, 'stor-index.jsonl'), 'utf8')) + '{"o":"cut sh')
    assert.deepEqual(await readIndex(tmp.dir), [line(0), line(1, true)])
    const rewrite = new IndexRewrite(tmp.dir)
    await rewrite.add(line(1))
    assert.deepEqual(await readIndex(tmp.dir), [line(0), line(1, true)], 'the old index stands until the new one is finished')
    await rewrite.finish()
    assert.deepEqual(await readIndex(tmp.dir), [line(1)])
    assert.ok(!(await readdir(tmp.dir)).some(n => n.endsWith('.tmp')))
    assert.deepEqual(await readIndex(join(tmp.dir, 'none')), [])
  })

  it('quarantine moves a file aside under a free name; only an explicit purge deletes', async function () {
    await mkdir(join(tmp.dir, 'stor-pieces'))
    for (let n = 0; n < 2; n++) {
      await writeFile(join(tmp.dir, 'stor-pieces', 'x'), `copy ${n}`)
      await quarantine(tmp.dir, 'x')
    }
    const listed = await inspectQuarantine(tmp.dir, false)
    assert.deepEqual(listed.files.map(f => f.name), ['x', 'x.1'])
    assert.equal(listed.bytes, 12)
    assert.equal(await readFile(join(tmp.dir, 'stor-quarantine', 'x.1'), 'utf8'), 'copy 1')
    const purged = await inspectQuarantine(tmp.dir, true)
    assert.equal(purged.removed, true)
    assert.deepEqual(await readdir(join(tmp.dir, 'stor-quarantine')), [])
  })

  it('Devices.open: a missing folder, a foreign owner and an oversized quota on a new device are refused; adoption takes the device', async function () {
    const d = join(tmp.dir, 'disk')
    await assert.rejects(Devices.open([{ path: d }], log, { owner: 'me' }), /does not exist .*--create-device/)
    await assert.rejects(stat(d))
    const made = await Devices.open([{ path: d }], log, { owner: 'me', create: true })
    await made.close()
    assert.equal((await readMarker(d))?.vendor, 'me')
    await assert.rejects(Devices.open([{ path: d }], log, { owner: 'you' }), /belongs to vendor me, not this one \(you\).*--adopt-device/)
    const taken = await Devices.open([{ path: d }], log, { owner: 'you', adopt: new Set([d]) })
    assert.deepEqual(taken.adopted(), [d])
    await taken.close()
    assert.equal((await readMarker(d))?.vendor, 'you')
    const fresh = join(tmp.dir, 'fresh')
    await mkdir(fresh)
    await assert.rejects(Devices.open([{ path: fresh, quota: 2 ** 52 }], log, { owner: 'me' }), /the quota is more than .* free on that disk/)
    assert.deepEqual(await readdir(fresh), [], 'a refused device is left untouched')
  })

  it('a piece counts whole blocks and its overhead; a device used before caps an oversized quota with a warning', async function () {
    const d = join(tmp.dir, 'disk')
    await mkdir(d)
    const devices = await Devices.open([{ path: d, quota: 1024 * 1024 }], log, { owner: 'me' })
    const ref = await devices.write('p.0', Buffer.alloc(100), new Set())
    const bs = (await stat(join(d, 'stor-pieces', 'p.0'))).blksize
    assert.equal(devices.footprint(d, 100), bs + PIECE_OVERHEAD)
    assert.equal(devices.info()[0].used, bs + PIECE_OVERHEAD)
    await devices.remove(ref)
    assert.equal(devices.info()[0].used, 0)
    await devices.close()
    const warnings: string[] = []
    const again = await Devices.open([{ path: d, quota: 2 ** 52 }], log, { owner: 'me', warn: m => warnings.push(m) })
    again.checkQuotas()
    assert.match(warnings[0], /the quota of .* is more than the disk holds/)
    assert.ok(again.capacity() < 2 ** 52)
    await again.close()
  })

  it('PeerBook keeps replicas and the latest few vendors, and writes only when something changed', async function () {
    const book = await PeerBook.load(tmp.dir)
    book.noteReplica('fat1', ['/ip4/127.0.0.1/tcp/1/p2p/fat1'])
    for (let v = 0; v < 20; v++) book.harvest({ candidates: [{ vendor: `v${v}`, addrs: [`/ip4/127.0.0.1/tcp/${v}`] }] })
    book.harvest({ vendors: [{ vendor: 'v3', addrs: ['/ip4/127.0.0.1/tcp/3'] }, { vendor: 'bad', addrs: [] }] })
    await book.save()
    const again = await PeerBook.load(tmp.dir)
    assert.deepEqual(again.replicas(), [{ peer: 'fat1', addrs: ['/ip4/127.0.0.1/tcp/1/p2p/fat1'] }])
    assert.equal(again.entry().length, 16)
    assert.equal(again.entry().at(-1)?.peer, 'v3', 'the vendor seen last is kept last')
    assert.ok(!again.entry().some(e => e.peer === 'bad' || e.peer === 'v0'))
  })

  it('a file is unchanged only with the same size, times and inode', async function () {
    const f = join(tmp.dir, 'f')
    await writeFile(f, 'one')
    const stamp = stampOf(await stat(f))
    assert.equal(await unchanged(f, stamp), true)
    // (times are only as fine as the kernel's clock tick: a test of them alone would race it)
    await writeFile(f, 'longer')
    assert.equal(await unchanged(f, stamp), false, 'another size')
    await writeFile(join(tmp.dir, 'g'), 'one')
    await rename(join(tmp.dir, 'g'), f)
    assert.equal(await unchanged(f, { ...stamp, ...(({ mtimeMs, ctimeMs }) => ({ mtimeMs, ctimeMs }))(stampOf(await stat(f))) }), false, 'another file put in its place')
    assert.equal(await unchanged(join(tmp.dir, 'gone'), stamp), false)
  })
})
