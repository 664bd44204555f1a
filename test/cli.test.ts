import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { assertOneLineError, cli, randomFile, sha256File, useCluster } from './helpers.ts'

describe('command line', function () {
  const net = useCluster('cli', { vendors: 2, devicesPerVendor: 1, deviceSize: '256MiB' }, [])
  const user = (): string[] => ['--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'user')]

  it('uploads, lists, shows status, downloads with --release, as plain text and --json', async function () {
    const src = await randomFile(join(net.dir, 'doc.bin'), 300_000)
    const up = await cli(['upload', src, ...user(), '--chunk-size', '64KiB'])
    assert.equal(up.code, 0, up.stderr)
    const id = up.stdout.trim()
    assert.match(id, /^[0-9a-f]{32}$/)
    assert.equal(up.stderr, '', 'no progress bar without a terminal')

    const ls = await cli(['ls', ...user(), '--json'])
    assert.equal(ls.code, 0, ls.stderr)
    const listed = JSON.parse(ls.stdout)
    assert.ok(listed.files.some((f: any) => f.fileId === id && f.name === 'doc.bin' && f.size === 300_000))

    const status = JSON.parse((await cli(['status', '--bootstrap', net.cluster.bootstrap, '--json'])).stdout)
    assert.equal(status.vendors.length, 2)
    assert.ok(status.vendors.every((v: any) => v.alive === true && v.used > 0))

    const out = join(net.dir, 'doc.out')
    const down = await cli(['download', id, out, ...user(), '--release', '--json'])
    assert.equal(down.code, 0, down.stderr)
    const result = JSON.parse(down.stdout)
    assert.equal(result.released, true)
    assert.equal(result.size, 300_000)
    assert.equal(await sha256File(out), await sha256File(src))
    assert.equal(JSON.parse((await cli(['ls', ...user(), '--json'])).stdout).files.length, 0, 'released files are gone')
  })

  it('prints its version', async function () {
    const r = await cli(['--version'])
    assert.equal(r.code, 0)
    assert.equal(r.stdout.trim(), JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')).version)
  })

  it('a missing file', async function () {
    assertOneLineError(await cli(['upload', join(net.dir, 'no-such-file'), ...user()]), /FILE: .*no-such-file does not exist/)
  })

  it('an unknown id, and a malformed one', async function () {
    assertOneLineError(await cli(['download', 'ab'.repeat(16), join(net.dir, 'x'), ...user()]), /no file abab/)
    assertOneLineError(await cli(['release', 'not-an-id', ...user()]), /ID: "not-an-id" is not a file id/)
  })

  it('a malformed multiaddr', async function () {
    assertOneLineError(await cli(['ls', '--bootstrap', '/ip4/999.1.1.1/tcp/x']), /--bootstrap: .* is not a multiaddr/)
    assertOneLineError(await cli(['ls', '--bootstrap', '/ip4/127.0.0.1/tcp/4001']), /--bootstrap: .*\/p2p\//)
  })

  it('an unreachable bootstrap peer', async function () {
    const dead = net.cluster.bootstrap.replace(/\/tcp\/\d+\//, '/tcp/1/')
    // a data dir that has met no replica yet (one that has would try the replicas it remembers)
    assertOneLineError(await cli(['status', '--bootstrap', dead, '--data-dir', join(net.dir, 'stranger')]), /no FAT server answered/)
  })

  it('a device path that is not a writable directory', async function () {
    const notDir = join(net.dir, 'a-file')
    await writeFile(notDir, 'x')
    const r = await cli(['--role', 'vendor', '--data-dir', join(net.dir, 'v'), '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', net.cluster.bootstrap, '--device', join(notDir, 'disk')])
    assertOneLineError(r, /--device .*a-file\/disk: not a writable directory/)
  })

  it('bad sizes and counts', async function () {
    const src = await randomFile(join(net.dir, 'small'), 10)
    assertOneLineError(await cli(['upload', src, ...user(), '--chunk-size', 'lots']), /--chunk-size: "lots" is not a size/)
    assertOneLineError(await cli(['upload', src, ...user(), '--replicas', 'two']), /--replicas: "two" is not a whole number/)
    assertOneLineError(await cli(['upload', src, ...user(), '--replicas', '3']), /3 replicas need 3 vendors/)
  })
})
