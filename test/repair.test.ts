import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Client, StatusReport, UploadResult } from '../src/index.ts'
import type { ClusterFixture } from './helpers.ts'
import { spawnDaemon } from '../src/cluster.ts'
import { cli, diskUsage, eventually, randomFile, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024
const REPAIR_AFTER_S = 10
const FAT_ARGS = ['--heartbeat', '500ms', '--repair-after', `${REPAIR_AFTER_S}s`, '--lease', '30s']

interface Stored { src: string, result: UploadResult }

/** Uploads `n` random files of `size` bytes (chunks of 1 MiB) at replicas 2. */
async function store (net: ClusterFixture, user: Client, n: number, size: number): Promise<Stored[]> {
  const out: Stored[] = []
  for (let i = 0; i < n; i++) {
    const src = await randomFile(join(net.dir, `file${i}.bin`), size + i * 4096)
    out.push({ src, result: await user.upload(src, { replicas: 2, chunkSize: MiB }) })
  }
  return out
}

/** Every file downloads, byte for byte. */
async function allDownload (net: ClusterFixture, user: Client, files: Stored[], tag: string): Promise<void> {
  for (const f of files) {
    const out = join(net.dir, `${tag}-${f.result.fileId}.out`)
    await user.download(f.result.fileId, out, { resume: false })
    assert.equal(await sha256File(out), await sha256File(f.src), `${f.result.fileId} downloads byte for byte (${tag})`)
  }
}

const vendorIn = (s: StatusReport, peer: string): StatusReport['vendors'][number] => {
  const v = s.vendors.find(x => x.vendor === peer)
  assert.ok(v != null, `status lists vendor ${peer}`)
  return v
}
const repairOf = (s: StatusReport): NonNullable<StatusReport['repair']> => {
  assert.ok(s.repair != null, 'status carries the repair counts')
  return s.repair
}

/** Waits (60 s at most) until the vendor is declared dead and every chunk has its copies again. */
async function deadAndRepaired (user: Client, peer: string): Promise<void> {
  await eventually(`vendor ${peer} is dead and its chunks repaired`, async () => {
    const s = await user.status()
    return vendorIn(s, peer).state === 'dead' && repairOf(s).under === 0 && repairOf(s).copies > 0
  }, 60_000)
}

/** Chunk copies the vendors hold by their own heartbeats: R per chunk once every surplus is erased. */
const heldCopies = (s: StatusReport): number => s.vendors.reduce((n, v) => n + v.held, 0)

describe('repair: dead vendors are found and every chunk gets back to its replica count', function () {
  const net = useCluster('repair', { vendors: 4, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: FAT_ARGS }, ['alice'])
  let files: Stored[] = []

  it('stores files of several chunks at replicas 2; check and ls say healthy', async function () {
    const alice = net.user('alice')
    files = await store(net, alice, 6, 3 * MiB)
    const s = await alice.status()
    assert.equal(repairOf(s).under, 0)
    assert.equal(repairOf(s).chunks, files.reduce((n, f) => n + f.result.chunks, 0))
    assert.ok(s.vendors.every(v => v.state === 'alive'))
    const r = await cli(['check', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice'), '--json'])
    assert.equal(r.code, 0, r.stderr)
    const checked = JSON.parse(r.stdout)
    assert.equal(checked.healthy, files.length)
    assert.ok(checked.files.every((f: any) => f.health.copies === 2 && f.health.degraded === 0))
    const ls = await cli(['ls', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice')])
    assert.equal(ls.code, 0, ls.stderr)
    assert.match(ls.stdout, /healthy x2/)
    assert.match(ls.stdout, /6 files, .* on vendors with replicas/)
  })

  it('a vendor killed and restarted within repair-after: nothing is copied', async function () {
    const alice = net.user('alice')
    const v = net.cluster.vendors[3]
    await v.kill('SIGKILL')
    await eventually('the FAT finds vendor 3 suspect', async () => vendorIn(await alice.status(), v.peerId).state === 'suspect')
    await net.cluster.restartVendor(3)
    await eventually('vendor 3 is alive again', async () => vendorIn(await alice.status(), v.peerId).state === 'alive')
    // watch past repair-after since it went silent: it is never declared dead and nothing moves
    const until = Date.now() + (REPAIR_AFTER_S + 3) * 1000
    while (Date.now() < until) {
      const s = await alice.status()
      assert.ok(s.vendors.every(x => x.state !== 'dead'), 'no vendor is declared dead')
      assert.equal(repairOf(s).copies, 0, 'nothing was copied')
      assert.ok(s.vendors.every(x => x.transfers === 0), 'no transfer is under way')
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  })

  it('a vendor restarted on a new address is known by its peer id and keeps its chunks', async function () {
    const alice = net.user('alice')
    const old = net.cluster.vendors[2]
    const before = vendorIn(await alice.status(), old.peerId)
    await old.kill('SIGKILL')
    // same identity and disks, another port: a home host whose address changed
    const moved = await spawnDaemon('vendor', old.dataDir, ['--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', net.cluster.bootstrap, '--device', `${net.cluster.deviceDirs(2)[0]}:256MiB`])
    net.cluster.vendors[2] = moved
    assert.equal(moved.peerId, old.peerId)
    assert.notDeepEqual(moved.addrs, old.addrs)
    await eventually('the FAT holds its new address and it is alive', async () => {
      const v = vendorIn(await alice.status(), moved.peerId)
      return v.state === 'alive' && v.addrs.some(a => moved.addrs.includes(a)) && !v.addrs.some(a => old.addrs.includes(a))
    })
    const s = await alice.status()
    assert.equal(vendorIn(s, moved.peerId).held, before.held, 'it keeps every chunk')
    assert.equal(vendorIn(s, moved.peerId).used, before.used)
    assert.equal(repairOf(s).copies, 0, 'nothing was copied')
    await allDownload(net, alice, files.slice(0, 2), 'moved')
  })

  it('a vendor killed for good: declared dead, and within 60 s no chunk is under-replicated', async function () {
    const alice = net.user('alice')
    const dead = net.cluster.vendors[0]
    const held = vendorIn(await alice.status(), dead.peerId).held
    assert.ok(held > 0, 'vendor 0 holds chunks')
    await dead.kill('SIGKILL')
    const killed = Date.now()
    await eventually('vendor 0 is dead and every chunk has its two copies again', async () => {
      const s = await alice.status()
      return vendorIn(s, dead.peerId).state === 'dead' && repairOf(s).under === 0 && repairOf(s).copies >= held
    }, 60_000)
    const took = (Date.now() - killed) / 1000
    const s = await alice.status()
    assert.equal(repairOf(s).lost, 0)
    assert.equal(repairOf(s).copies, held, 'one copy per chunk the dead vendor held, no more')
    assert.ok(repairOf(s).bytes > (held - files.length) * MiB, 'bytes repaired counted (whole chunks but for each file\'s last)')
    assert.equal(vendorIn(s, dead.peerId).used, 0, 'the tables place nothing on the dead vendor any more')
    const r = await cli(['status', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice')])
    assert.match(r.stdout, /vendors: 3 alive, 1 dead/)
    assert.match(r.stdout, /0 under-replicated, 0 lost/)
    console.log(`      repaired ${held} chunks in ${took.toFixed(1)} s after the kill (repair-after ${REPAIR_AFTER_S} s)`)
  })

  it('the dead vendor restarted: its surplus copies are erased and its space is free again', async function () {
    const alice = net.user('alice')
    const peer = net.cluster.vendors[0].peerId
    const diskBefore = await diskUsage(net.cluster.deviceDirs(0)[0])
    assert.ok(diskBefore > 0)
    await net.cluster.restartVendor(0)
    await eventually('vendor 0 is back, took its erase orders, and is in service again holding nothing', async () => {
      const v = vendorIn(await alice.status(), peer)
      return v.state === 'alive' && v.held === 0 && v.used === 0
    }, 60_000)
    const v = vendorIn(await alice.status(), peer)
    assert.ok(v.free >= v.capacity - MiB, `its free space (${v.free}) is its capacity (${v.capacity}) again`)
    assert.ok(await diskUsage(net.cluster.deviceDirs(0)[0]) < diskBefore / 4, 'the chunk files are gone from its disk')
    const s = await alice.status()
    assert.equal(repairOf(s).under, 0)
    assert.equal(heldCopies(s), repairOf(s).chunks * 2, 'every chunk on exactly two vendors')
  })

  it('a second vendor killed: every file downloads byte for byte, and is repaired again', async function () {
    const alice = net.user('alice')
    const dead = net.cluster.vendors[1]
    await dead.kill('SIGKILL')
    await allDownload(net, alice, files, 'second-death')
    await eventually('vendor 1 is dead and repaired', async () => {
      const s = await alice.status()
      return vendorIn(s, dead.peerId).state === 'dead' && repairOf(s).under === 0
    }, 60_000)
    await allDownload(net, alice, files, 'after-repair')
    const r = await cli(['check', ...files.map(f => f.result.fileId), '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice')])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /6 healthy, 0 degraded, 0 lost/)
  })
})

describe('repair across a change of FAT leader', function () {
  const net = useCluster('repair-raft', { fats: 3, vendors: 4, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: [...FAT_ARGS, '--join-secret', 'repair-secret'] }, [])
  let alice: Client
  let files: Stored[] = []

  after(async function () { await alice?.close() })

  it('repairs a dead vendor, survives the leader\'s death, then a second vendor death: every file downloads', async function () {
    const { openClient } = await import('../src/index.ts')
    const { loopbackAddr } = await import('../src/cluster.ts')
    alice = await openClient({ dataDir: join(net.dir, 'alice'), bootstrap: net.cluster.fats.map(loopbackAddr) })
    files = await store(net, alice, 4, 3 * MiB)
    const first = net.cluster.vendors[0]
    await first.kill('SIGKILL')
    await deadAndRepaired(alice, first.peerId)
    const leader = (await alice.status()).replicas.find(r => r.leader)?.peer
    const fat = net.cluster.fats.find(f => f.peerId === leader)
    assert.ok(fat != null, 'a replica leads')
    await fat.kill('SIGKILL')
    // the next leader has the verdict from the log: vendor 0 stays dead, nothing is copied again
    await eventually('another replica leads and still holds vendor 0 dead', async () => {
      const s = await alice.status()
      const now = s.replicas.find(r => r.leader && r.reachable)?.peer
      return now != null && now !== leader && vendorIn(s, first.peerId).state === 'dead' && repairOf(s).under === 0
    }, 60_000)
    const second = net.cluster.vendors[1]
    await second.kill('SIGKILL')
    await allDownload(net, alice, files, 'leader-gone')
  })
})

describe('repair: the guard against a frozen majority', function () {
  const net = useCluster('repair-guard', { vendors: 4, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: FAT_ARGS }, ['alice'])

  it('3 of 4 vendors frozen: at most one is declared dead; after SIGCONT nothing is lost and no surplus copy stays', async function () {
    const alice = net.user('alice')
    const files = await store(net, alice, 4, 3 * MiB)
    const chunks = files.reduce((n, f) => n + f.result.chunks, 0)
    const frozen = net.cluster.vendors.slice(0, 3)
    for (const v of frozen) v.child.kill('SIGSTOP')
    try {
      await eventually('one frozen vendor is dead and the guard holds the other two', async () => {
        const s = await alice.status()
        return s.vendors.filter(v => v.state === 'dead').length === 1 && repairOf(s).held.length === 2
      }, 60_000)
      const r = await cli(['status', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice')])
      assert.match(r.stdout, /guard: 2 silent vendors are not declared dead/)
      // it stays that way: the guard does not give in over time
      const until = Date.now() + 5000
      while (Date.now() < until) {
        assert.equal((await alice.status()).vendors.filter(v => v.state === 'dead').length, 1)
        await new Promise(resolve => setTimeout(resolve, 500))
      }
    } finally {
      for (const v of frozen) v.child.kill('SIGCONT')
    }
    await eventually('every vendor is in service again, every chunk on exactly two vendors', async () => {
      const s = await alice.status()
      return s.vendors.every(v => v.state === 'alive') && repairOf(s).under === 0 && repairOf(s).lost === 0 && heldCopies(s) === chunks * 2
    }, 90_000)
    await allDownload(net, alice, files, 'thawed')
  })
})

describe('repair: the FAT stays responsive under a backlog of tens of thousands of chunks', function () {
  const net = useCluster('repair-backlog', { vendors: 4, devicesPerVendor: 1, deviceSize: '512MiB', fatArgs: ['--heartbeat', '500ms', '--repair-after', '3s', '--lease', '60s'] }, ['alice'])

  it('with ~10,000 of 20,480 chunks to repair, after a FAT restart too, uploads are answered within a few seconds', async function () {
    // 20,480 chunks take two to three minutes to upload on a busy machine
    this.timeout(600_000)
    const alice = net.user('alice')
    // two files of 10,240 chunks of 1 KiB each: the "file of 10,240 small chunks", twice
    // one after the other: two at once, on a busy machine, time out on the vendors
    const big: UploadResult[] = []
    for (const i of [0, 1]) big.push(await alice.upload(await randomFile(join(net.dir, `many${i}.bin`), 10 * MiB), { replicas: 2, chunkSize: 1024 }))
    assert.equal(big.reduce((n, r) => n + r.chunks, 0), 20_480)
    // the vendor holding the most: at least the average of 40,960 copies over 4 vendors, however the
    // uploads ranked them
    const before = await alice.status()
    const victim = net.cluster.vendors.reduce((a, b) => vendorIn(before, b.peerId).held > vendorIn(before, a.peerId).held ? b : a)
    const backlog = vendorIn(before, victim.peerId).held
    assert.ok(backlog > 8000, `the victim holds ${backlog} chunks`)
    await victim.kill('SIGKILL')
    await eventually('the victim is dead and its repair under way', async () => {
      const s = await alice.status()
      return vendorIn(s, victim.peerId).state === 'dead' && repairOf(s).copies > 0
    }, 60_000)

    /** Uploads a small file and a release; both must be answered within a few seconds. */
    const timed = async (tag: string): Promise<number> => {
      const src = await randomFile(join(net.dir, `small-${tag}.bin`), 64 * 1024)
      const started = Date.now()
      const r = await alice.upload(src, { replicas: 2 })
      await alice.release(r.fileId)
      return Date.now() - started
    }
    const times: number[] = []
    for (let i = 0; i < 5; i++) times.push(await timed(`a${i}`))
    // a FAT restart with the backlog in its table: it loads, takes up the repair, and still answers
    await net.cluster.fat.kill('SIGKILL')
    const fat = await net.cluster.fat.restart()
    net.cluster.fats[0] = fat
    net.cluster.fat = fat
    // a FAT that just started offers no vendor until it hears from them (their next heartbeat)
    await eventually('the restarted FAT hears the three live vendors', async () => (await alice.status()).vendors.filter(v => v.state === 'alive').length === 3, 60_000)
    for (let i = 0; i < 5; i++) times.push(await timed(`b${i}`))
    const s = await alice.status()
    assert.ok(repairOf(s).under > 1000, `the repair is still running (${JSON.stringify(s.repair)}, victim ${vendorIn(s, victim.peerId).state}): the uploads were timed under load`)
    assert.ok(repairOf(s).copies > 0)
    console.log(`      upload + release during repair: ${times.join(', ')} ms; ${repairOf(s).copies} copies made, ${repairOf(s).under} to go`)
    assert.ok(Math.max(...times) < 5000, `every upload and release answered within 5 s: ${times.join(', ')} ms`)
  })
})

describe('repair options: bad input gets a clear error', function () {
  it('names the option and what to write, for --repair-after, --repair-min-in, --repair-per-*, --zone and check IDs', async function () {
    const { tempDir } = await import('./helpers.ts')
    const tmp = await tempDir('repair-args')
    try {
      const fat = (args: string[]): string[] => ['--role', 'fat', '--data-dir', join(tmp.dir, 'fat'), '--listen', '/ip4/127.0.0.1/tcp/0', ...args]
      const cases: Array<[string[], RegExp]> = [
        [fat(['--repair-after', 'soon']), /--repair-after: "soon" is not a duration/],
        [fat(['--repair-after', '10ms']), /--repair-after: must be at least 1s/],
        [fat(['--repair-min-in', '150%']), /--repair-min-in: "150%" is not a share/],
        [fat(['--repair-per-source', '0']), /--repair-per-source: "0" is not a whole number from 1 to 256/],
        [fat(['--repair-per-round', 'many']), /--repair-per-round: "many" is not a whole number/],
        [['--role', 'vendor', '--data-dir', join(tmp.dir, 'v'), '--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWAtfLqN4QmgjrJfRJTrTxe8Yu5RgcaGgHcbiCxENf8Vmf', '--zone', 'rack 2'], /--zone: "rack 2" is not a zone name/],
        [['check', 'nothex', '--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWAtfLqN4QmgjrJfRJTrTxe8Yu5RgcaGgHcbiCxENf8Vmf', '--data-dir', join(tmp.dir, 'u')], /"nothex" is not a file id/]
      ]
      for (const [args, re] of cases) {
        const r = await cli(args, 60_000)
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, re)
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace')
      }
    } finally {
      await tmp.remove()
    }
  })
})

describe('repair: failure domains (--zone)', function () {
  const zoneOf = (v: number): string => v < 2 ? 'rack-a' : 'rack-b'
  const net = useCluster('repair-zones', { vendors: 4, devicesPerVendor: 1, deviceSize: '256MiB', fatArgs: ['--heartbeat', '500ms', '--repair-after', '3s'], vendorArgsFor: v => ['--zone', zoneOf(v)] }, ['alice'])

  /** Every chunk of every file has one copy in each zone. */
  const spread = async (alice: Client, files: Stored[]): Promise<boolean> => {
    const zones = new Map((await alice.status()).vendors.map(v => [v.vendor, v.zone]))
    for (const f of files) {
      const { table } = await alice.table(f.result.fileId)
      for (const c of table.chunks) {
        if (new Set(c.replicas.map(r => zones.get(r.vendor))).size !== 2) return false
      }
    }
    return true
  }

  it('places the replicas of each chunk in distinct zones, and repair keeps them so', async function () {
    const alice = net.user('alice')
    await eventually('every vendor reported its zone', async () => (await alice.status()).vendors.every((v, _i, all) => v.zone != null && all.length === 4))
    const files = await store(net, alice, 4, 3 * MiB)
    assert.ok(await spread(alice, files), 'each chunk has a copy in rack-a and one in rack-b')
    const r = await cli(['status', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'alice')])
    assert.match(r.stdout, /zone rack-a/)
    // rack-a loses a vendor: its chunks go to the other rack-a vendor, never a second copy in rack-b
    const dead = net.cluster.vendors[0]
    await dead.kill('SIGKILL')
    await deadAndRepaired(alice, dead.peerId)
    assert.ok(await spread(alice, files), 'after repair, still one copy per zone')
    await allDownload(net, alice, files, 'zones')
  })
})
