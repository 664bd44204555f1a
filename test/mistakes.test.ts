import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Cluster, Client, UploadResult } from '../src/index.ts'
import { spawn } from 'node:child_process'
import { binPath, spawnDaemon, loopbackAddr } from '../src/cluster.ts'
import { assertOneLineError, cli, eventually, randomFile, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024

/** Name -> SHA-256 of every piece under a vendor's device folders. */
async function pieces (cluster: Cluster, v: number): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for (const d of cluster.deviceDirs(v)) {
    for (const name of await readdir(join(d, 'stor-pieces')).catch(() => [] as string[])) {
      const bytes = await readFile(join(d, 'stor-pieces', name)).catch(() => undefined)
      if (bytes != null) out.set(`${d}/${name}`, createHash('sha256').update(bytes).digest('hex'))
    }
  }
  return out
}

/** Do the pieces of `chunk` (FILE.CHUNK) on `device` join into bytes that hash to the chunk's id? */
async function wholeOn (device: string, chunk: string): Promise<boolean> {
  const prefix = `${chunk}.`
  const names = (await readdir(join(device, 'stor-pieces')).catch(() => [] as string[])).filter(n => n.startsWith(prefix))
  names.sort((a, b) => Number(a.slice(prefix.length)) - Number(b.slice(prefix.length)))
  const hash = createHash('sha256')
  for (const n of names) {
    const bytes = await readFile(join(device, 'stor-pieces', n)).catch(() => undefined)
    if (bytes == null) return false
    hash.update(bytes)
  }
  return names.length > 0 && hash.digest('hex') === chunk.slice(chunk.lastIndexOf('.') + 1)
}

async function sameFile (user: Client, fileId: string, src: string, out: string): Promise<void> {
  await user.download(fileId, out)
  assert.equal(await sha256File(out), await sha256File(src), `${fileId} downloads byte for byte`)
}

const vendorArgs = (cluster: Cluster, data: string, ...more: string[]): string[] =>
  ['--role', 'vendor', '--data-dir', data, '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', cluster.bootstrap, ...more]

describe('devices belong to one vendor, and their mistakes are errors', function () {
  const net = useCluster('own', { vendors: 2, devicesPerVendor: 2, deviceSize: '256MiB', fatArgs: ['--heartbeat', '300ms'] }, ['alice'])
  const alice = (): Client => net.user('alice')
  const files: Array<{ up: UploadResult, src: string }> = []

  it('a second vendor on a device another vendor uses is refused; the first vendor\'s pieces stay, every file downloads', async function () {
    for (const name of ['a', 'b']) {
      const src = await randomFile(join(net.dir, name), 2 * MiB + 7)
      files.push({ up: await alice().upload(src, { chunkSize: 256 * 1024 }), src })
    }
    const before = await pieces(net.cluster, 0)
    assert.ok(before.size > 0)
    const shared = net.cluster.deviceDirs(0)[0]
    const r = await cli(vendorArgs(net.cluster, join(net.dir, 'intruder'), '--device', shared), 60_000)
    assertOneLineError(r, new RegExp(`--device ${shared}: belongs to vendor ${net.cluster.vendors[0].peerId}.*--adopt-device`))
    assert.deepEqual(await pieces(net.cluster, 0), before, 'every piece is still there, unchanged')
    for (const [i, f] of files.entries()) await sameFile(alice(), f.up.fileId, f.src, join(net.dir, `a-${i}.out`))
  })

  it('a missing device folder, a malformed quota, a quota over the free space: one-line errors, nothing created', async function () {
    const missing = join(net.dir, 'not-mounted')
    assertOneLineError(await cli(vendorArgs(net.cluster, join(net.dir, 'v-missing'), '--device', missing)), /--device .*not-mounted: does not exist \(is its disk mounted\?\).*--create-device/)
    await assert.rejects(stat(missing), 'the missing folder was not created')
    const typo = join(net.dir, 'typo')
    await mkdir(typo)
    assertOneLineError(await cli(vendorArgs(net.cluster, join(net.dir, 'v-typo'), '--device', `${typo}:abc`)), /--device .*typo:abc: "abc" is not a size/)
    await assert.rejects(stat(`${typo}:abc`), 'no folder named after the typo')
    assertOneLineError(await cli(vendorArgs(net.cluster, join(net.dir, 'v-huge'), '--device', `${typo}:900TiB`)), /the quota is more than the .* free on that disk/)
    assert.deepEqual(await readdir(typo), [], 'a refused device is not marked')
    // asked for, a missing folder is created
    const created = join(net.dir, 'new-disk')
    const v = await spawnDaemon('vendor', join(net.dir, 'v-created'), ['--bootstrap', net.cluster.bootstrap, '--device', created, '--create-device'])
    try {
      assert.ok((await stat(join(created, 'stor-owner.json'))).isFile())
    } finally {
      await v.kill()
    }
  })

  it('a device whose owner marker is gone fails: its pieces move to the vendor\'s other device, no chunk is lost; with the marker back it returns', async function () {
    const v = 0
    const [keep, lose] = net.cluster.deviceDirs(v)
    const onLose = [...(await pieces(net.cluster, v)).keys()].filter(k => k.startsWith(`${lose}/`))
    assert.ok(onLose.length > 0, 'the device holds pieces')
    const marker = await readFile(join(lose, 'stor-owner.json'))
    await unlink(join(lose, 'stor-owner.json'))
    const vendorStatus = async (): Promise<any> => (await alice().status()).vendors.find(x => x.vendor === net.cluster.vendors[v].peerId)
    await eventually('the device is reported failed', async () => (await vendorStatus())?.devices.some((d: any) => d.path === lose && d.failed) === true)
    // plain status names the failed device
    const plain = await cli(['status', '--bootstrap', net.cluster.bootstrap])
    assert.equal(plain.code, 0, plain.stderr)
    assert.match(plain.stdout, new RegExp(`vendor ${net.cluster.vendors[v].peerId} alive .*1 failed: ${lose}`))
    await eventually('every piece moved to the other device', async () => {
      const now = [...(await pieces(net.cluster, v)).keys()]
      return now.every(k => k.startsWith(`${keep}/`)) && onLose.every(k => now.includes(k.replace(`${lose}/`, `${keep}/`)))
    })
    assert.equal((await vendorStatus()).lost, 0, 'no chunk needs another vendor')
    for (const [i, f] of files.entries()) {
      const { table } = await alice().table(f.up.fileId)
      assert.ok(table.chunks.every(c => c.replicas.some(r => r.vendor === net.cluster.vendors[v].peerId)), 'the FAT\'s table still places every chunk here')
      await sameFile(alice(), f.up.fileId, f.src, join(net.dir, `moved-${i}.out`))
    }
    await writeFile(join(lose, 'stor-owner.json'), marker)
    await eventually('the device returns by itself', async () => (await vendorStatus())?.devices.every((d: any) => !d.failed) === true, 60_000)
  })

  it('a device folder removed: its unreadable chunks are copied back from the other vendor onto this vendor\'s other device; put back, it returns within a minute', async function () {
    const v = 1
    const [dir, other] = net.cluster.deviceDirs(v)
    const self = net.cluster.vendors[v].peerId
    const lostPieces = [...(await pieces(net.cluster, v)).keys()].filter(k => k.startsWith(`${dir}/`)).map(k => k.slice(dir.length + 1))
    assert.ok(lostPieces.length > 0)
    // a piece is named FILE.CHUNK.INDEX; the copy made back may be cut into other pieces
    const lostChunks = [...new Set(lostPieces.map(n => n.slice(0, n.lastIndexOf('.'))))]
    const vendorStatus = async (): Promise<any> => (await alice().status()).vendors.find(x => x.vendor === self)
    await rename(dir, `${dir}.away`)
    await eventually('the device is reported failed', async () => (await vendorStatus())?.devices.some((d: any) => d.path === dir && d.failed) === true)
    await eventually('every chunk it lost is whole again on the other device, and nothing is reported lost', async () => {
      for (const chunk of lostChunks) if (!(await wholeOn(other, chunk))) return false
      return (await vendorStatus())?.lost === 0
    }, 60_000)
    for (const f of files) {
      const { table } = await alice().table(f.up.fileId)
      assert.ok(table.chunks.every(c => c.replicas.some(r => r.vendor === self)), 'the FAT\'s table still places every chunk on this vendor')
    }
    await rename(`${dir}.away`, dir)
    await eventually('the device is back', async () => (await vendorStatus())?.devices.every((d: any) => !d.failed) === true, 60_000)
    // the superseded copies on it are moved aside, not deleted
    await eventually('the stale pieces are in quarantine', async () => (await readdir(join(dir, 'stor-quarantine')).catch(() => [] as string[])).length === lostPieces.length)
    // both replicas serve: the other vendor stopped, every file comes from this one
    await net.cluster.vendors[0].kill()
    for (const [i, f] of files.entries()) await sameFile(alice(), f.up.fileId, f.src, join(net.dir, `back-${i}.out`))
  })
})

describe('adopting devices on purpose; unknown pieces quarantined, not deleted', function () {
  const net = useCluster('adopt', { vendors: 2, devicesPerVendor: 2, deviceSize: '256MiB', fatArgs: ['--heartbeat', '300ms'] }, ['alice'])
  const alice = (): Client => net.user('alice')

  it('a vendor whose table is lost is refused on its old disks; --adopt-device re-registers and verifies the pieces, which it serves', async function () {
    const files: Array<{ up: UploadResult, src: string }> = []
    for (const name of ['x', 'y']) {
      const src = await randomFile(join(net.dir, name), 3 * MiB + 1)
      files.push({ up: await alice().upload(src, { chunkSize: MiB }), src })
    }
    const victim = net.cluster.vendors[0]
    const disks = net.cluster.deviceDirs(0)
    const before = await pieces(net.cluster, 0)
    await victim.kill()
    // its table is gone (the identity is kept), and a stranger's file lies among its pieces
    await rm(join(victim.dataDir, 'db'), { recursive: true, force: true })
    await writeFile(join(disks[0], 'stor-pieces', 'not-ours.bin'), 'someone else\'s bytes')
    const args = ['--role', 'vendor', '--data-dir', victim.dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', net.cluster.bootstrap, ...disks.flatMap(d => ['--device', `${d}:256MiB`])]
    assertOneLineError(await cli(args), /this vendor's table is empty .*--adopt-device/)
    assert.deepEqual(new Set((await pieces(net.cluster, 0)).keys()), new Set([...before.keys(), `${disks[0]}/not-ours.bin`]), 'nothing was deleted')

    const adopted = await spawnDaemon('vendor', victim.dataDir, ['--bootstrap', net.cluster.bootstrap, ...disks.flatMap(d => ['--adopt-device', `${d}:256MiB`])])
    net.cluster.vendors[0] = adopted
    assert.match(adopted.stderr(), /adopted .*: \d+ chunks re-registered and verified/)
    assert.match(adopted.stderr(), /moved to quarantine \(not deleted\)/)
    const chunks = files.reduce((n, f) => n + f.up.placements.filter(p => p.vendors.includes(victim.peerId)).length, 0)
    await eventually('the vendor reports every chunk it held', async () => (await alice().status()).vendors.find(v => v.vendor === victim.peerId)?.held === chunks)
    assert.deepEqual(await pieces(net.cluster, 0), before, 'every piece is where it was, and the stranger\'s file is out of the piece folder')
    // the other vendor stops: every chunk now comes from the adopted disks
    await net.cluster.vendors[1].kill()
    for (const [i, f] of files.entries()) await sameFile(alice(), f.up.fileId, f.src, join(net.dir, `adopted-${i}.out`))

    // the quarantine is listed, and emptied only on request
    const listed = await cli(['quarantine', disks[0], '--json'])
    assert.equal(listed.code, 0, listed.stderr)
    assert.deepEqual(JSON.parse(listed.stdout).devices[0].files.map((f: any) => f.name), ['not-ours.bin'])
    assert.equal(await readFile(join(disks[0], 'stor-quarantine', 'not-ours.bin'), 'utf8'), 'someone else\'s bytes')
    const purged = await cli(['quarantine', disks[0], '--purge'])
    assert.equal(purged.code, 0, purged.stderr)
    assert.deepEqual(await readdir(join(disks[0], 'stor-quarantine')), [])
  })
})

describe('user mistakes: errors that tell the truth', function () {
  // slow vendors make an upload last long enough to change a file under it
  const net = useCluster('truth', { vendors: 2, devicesPerVendor: 1, deviceSize: '256MiB', vendorEnv: () => ({ STOR_TEST_DELAY_MS: '150' }) }, [])
  const user = (name = 'user'): string[] => ['--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, name)]

  /** Waits until the user's upload record lists a placed chunk. */
  const placedOne = async (name: string): Promise<void> => {
    await eventually('a chunk is placed', async () => {
      const dir = join(net.dir, name, 'uploads')
      for (const f of await readdir(dir).catch(() => [] as string[])) if ((await readFile(join(dir, f), 'utf8')).includes('"c":')) return true
      return false
    }, 60_000)
  }

  const overwrite = async (path: string): Promise<void> => {
    const fh = await open(path, 'r+')
    try { await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 0) } finally { await fh.close() }
  }

  it('a file overwritten in place during upload fails that file with one line; the other file lands', async function () {
    const folder = join(net.dir, 'changing')
    await mkdir(folder)
    const big = await randomFile(join(folder, 'big.bin'), 6 * MiB)
    const calm = await randomFile(join(folder, 'calm.bin'), 300_000)
    const run = cli(['upload', folder, ...user(), '--chunk-size', '256KiB', '--concurrency', '2'])
    await placedOne('user')
    await overwrite(big)
    const r = await run
    assertOneLineError(r, /FILE: .*big\.bin changed as we read it; not stored \(the other 1 files were\)/)
    const [line] = r.stdout.trim().split('\n')
    const [id, path] = line.split(/\s+/)
    assert.equal(path, calm)
    const out = join(net.dir, 'calm.out')
    const down = await cli(['download', id, out, ...user()])
    assert.equal(down.code, 0, down.stderr)
    assert.equal(await sha256File(out), await sha256File(calm))
    const ls = JSON.parse((await cli(['ls', ...user(), '--json'])).stdout)
    assert.deepEqual(ls.files.map((f: any) => f.name), ['calm.bin'], 'nothing torn was committed')
  })

  it('a resumed upload notices a file changed since the first attempt, even with its old size and mtime', async function () {
    const src = await randomFile(join(net.dir, 'resumed.bin'), 4 * MiB)
    const first = spawn(process.execPath, [binPath(), 'upload', src, ...user('resumer'), '--chunk-size', '256KiB', '--concurrency', '2'], { stdio: 'ignore' })
    const exited = new Promise(resolve => first.once('exit', resolve))
    await placedOne('resumer')
    // cut short, as by a crash
    first.kill('SIGKILL')
    await exited
    const { mtime, atime } = await stat(src)
    await overwrite(src)
    await utimes(src, atime, mtime)
    const again = await cli(['upload', src, ...user('resumer'), '--chunk-size', '256KiB', '--json'])
    assert.equal(again.code, 0, again.stderr)
    const up = JSON.parse(again.stdout)
    assert.equal(up.reused, 0, 'nothing from the first attempt was reused')
    const out = join(net.dir, 'resumed.out')
    assert.equal((await cli(['download', up.fileId, out, ...user('resumer')])).code, 0)
    assert.equal(await sha256File(out), await sha256File(src), 'the stored file is the file as it is now')
  })

  it('download into a folder saves under the recorded name; an existing file is refused without --force', async function () {
    const src = await randomFile(join(net.dir, 'report.pdf'), 100_000)
    const up = await cli(['upload', src, ...user()])
    assert.equal(up.code, 0, up.stderr)
    const id = up.stdout.trim()
    const folder = join(net.dir, 'downloads')
    await mkdir(folder)
    const first = await cli(['download', id, folder, ...user()])
    assert.equal(first.code, 0, first.stderr)
    assert.equal(await sha256File(join(folder, 'report.pdf')), await sha256File(src))
    assertOneLineError(await cli(['download', id, folder, ...user()]), /OUT: .*report\.pdf exists already; pass --force/)
    assertOneLineError(await cli(['download', id, join(folder, 'report.pdf'), ...user()]), /exists already; pass --force/)
    await writeFile(join(folder, 'report.pdf'), 'stale')
    const forced = await cli(['download', id, folder, ...user(), '--force'])
    assert.equal(forced.code, 0, forced.stderr)
    assert.equal(await sha256File(join(folder, 'report.pdf')), await sha256File(src))
    assert.deepEqual((await readdir(folder)).sort(), ['report.pdf'], 'no partial file left behind')
  })

  it('a full local disk is named as the local disk\'s fault, not the replicas\'', async function () {
    const src = await randomFile(join(net.dir, 'tofull.bin'), 600_000)
    const id = (await cli(['upload', src, ...user()])).stdout.trim()
    const out = join(net.dir, 'full.out')
    // the partial file is the kernel's always-full device: every write gets ENOSPC
    await symlink('/dev/full', `${out}.stor-part`)
    const r = await cli(['download', id, out, ...user()])
    assertOneLineError(r, /cannot write .*full\.out\.stor-part on the local disk: no space left on the device \(ENOSPC\)/)
    assert.doesNotMatch(r.stderr, /could not be fetched|replicas:/)
  })

  it('a missing identity is an error on every command but upload, saying how to restore it; status needs none', async function () {
    const gone = join(net.dir, 'lost-identity')
    const restore = /--data-dir: .*lost-identity holds no user identity .*stordaemon key import/
    assertOneLineError(await cli(['ls', '--bootstrap', net.cluster.bootstrap, '--data-dir', gone]), restore)
    assertOneLineError(await cli(['download', 'ab'.repeat(16), join(net.dir, 'nothing'), '--bootstrap', net.cluster.bootstrap, '--data-dir', gone]), restore)
    assertOneLineError(await cli(['release', 'ab'.repeat(16), '--bootstrap', net.cluster.bootstrap, '--data-dir', gone]), restore)
    assertOneLineError(await cli(['key', 'export', join(net.dir, 'k.json'), '--data-dir', gone]), /holds no user identity to export/)
    const s = await cli(['status', '--bootstrap', net.cluster.bootstrap, '--data-dir', gone, '--json'])
    assert.equal(s.code, 0, s.stderr)
    await assert.rejects(stat(gone), 'no identity was made on the way')
  })

  it('symlinks skipped in a folder are listed', async function () {
    const folder = join(net.dir, 'with-links')
    await mkdir(folder)
    await randomFile(join(folder, 'real.bin'), 1000)
    await symlink(join(folder, 'real.bin'), join(folder, 'link.bin'))
    const r = await cli(['upload', folder, ...user(), '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /warning: skipped 1 entries that are not regular files \(symlinks are not followed\): .*link\.bin/)
    assert.deepEqual(JSON.parse(r.stdout).skipped, [join(folder, 'link.bin')])
  })

  it('the vendor counts the space pieces take on disk, not their bytes', async function () {
    // 64 chunks of 1 KiB: on disk each piece takes a whole block
    const src = await randomFile(join(net.dir, 'tiny-chunks.bin'), 64 * 1024)
    const up = await cli(['upload', src, ...user(), '--chunk-size', '1KiB'])
    assert.equal(up.code, 0, up.stderr)
    const fileId = up.stdout.trim()
    let onDisk = 0
    let tinyOnDisk = 0
    let tinyBytes = 0
    const dir = join(net.cluster.deviceDirs(0)[0], 'stor-pieces')
    for (const name of await readdir(dir)) {
      const s = await stat(join(dir, name)).catch(() => undefined)
      if (s == null) continue
      onDisk += s.blocks * 512
      if (name.startsWith(fileId)) { tinyOnDisk += s.blocks * 512; tinyBytes += s.size }
    }
    await eventually('the vendor counts at least the space its pieces take on disk', async () => {
      const status = JSON.parse((await cli(['status', '--bootstrap', net.cluster.bootstrap, '--json'])).stdout)
      // the vendor's free bytes as of its last heartbeat, against its one device's quota
      const d = status.vendors.find((v: any) => v.vendor === net.cluster.vendors[0].peerId)
      if (d == null || d.capacity - d.free < onDisk) throw new Error(`the vendor counts ${d == null ? 'nothing' : d.capacity - d.free} bytes, the disk ${onDisk}`)
      return true
    })
    assert.ok(tinyOnDisk > tinyBytes * 2, `the tiny pieces take ${tinyOnDisk} bytes of disk for ${tinyBytes} bytes`)
  })
})

describe('a FAT restarted at a new address is found again', function () {
  const net = useCluster('moved', { vendors: 2, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '300ms'] }, [])
  const user = (): string[] => ['--data-dir', join(net.dir, 'user')]

  it('by its vendors and by a user holding only its old address', async function () {
    const src = await randomFile(join(net.dir, 'kept.bin'), 500_000)
    const old = net.cluster.bootstrap
    const up = await cli(['upload', src, '--bootstrap', old, ...user()])
    assert.equal(up.code, 0, up.stderr)
    const id = up.stdout.trim()
    const fat = net.cluster.fats[0]
    await fat.kill()
    const moved = await spawnDaemon('fat', fat.dataDir, ['--heartbeat', '300ms'])
    net.cluster.fats[0] = moved
    assert.notEqual(loopbackAddr(moved), old, 'the FAT listens elsewhere now')
    const status = async (): Promise<any> => JSON.parse((await cli(['status', '--bootstrap', loopbackAddr(moved), '--json'])).stdout)
    await eventually('both vendors report to the moved FAT', async () => (await status()).vendors.filter((v: any) => v.alive).length === 2, 60_000)
    const ls = await cli(['ls', '--bootstrap', old, ...user(), '--json'])
    assert.equal(ls.code, 0, ls.stderr)
    assert.deepEqual(JSON.parse(ls.stdout).files.map((f: any) => f.fileId), [id])
    const out = join(net.dir, 'kept.out')
    const down = await cli(['download', id, out, '--bootstrap', old, ...user()])
    assert.equal(down.code, 0, down.stderr)
    assert.equal(await sha256File(out), await sha256File(src))
  })

  it('a FAT that cannot be found is named in the error', async function () {
    const dead = net.cluster.bootstrap.replace(/\/tcp\/\d+\//, '/tcp/1/')
    const r = await cli(['status', '--bootstrap', dead, '--data-dir', join(net.dir, 'nobody')])
    assertOneLineError(r, /no FAT server answered: FAT replica 12D3\w+ did not answer at its known addresses and was not found through the other replicas or the DHT/)
  })
})
