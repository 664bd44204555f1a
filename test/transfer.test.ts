import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdir, readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Client } from '../src/index.ts'
import { binPath } from '../src/cluster.ts'
import { cli, randomFile, sha256File, useCluster } from './helpers.ts'

const MiB = 1024 * 1024

/** Lines of the upload journals in a folder: the header and one per placed chunk (intents not counted). */
async function linesIn (dir: string, suffix: string): Promise<number> {
  let n = 0
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith(suffix)) continue
    const lines = (await readFile(join(dir, name), 'utf8').catch(() => '')).split('\n')
    n += lines.filter(l => l.startsWith('{"allocation"') || l.includes('"c":{')).length
  }
  return n
}

/** Runs the CLI and kills it with SIGKILL once `ready()` says so; resolves with what `ready` saw. */
async function killWhen (args: string[], ready: () => Promise<boolean>, timeoutMs = 120_000): Promise<{ killed: boolean, stderr: string }> {
  const child = spawn(process.execPath, [binPath(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', d => { stderr += d })
  let exited = false
  const done = new Promise<void>(resolve => { child.on('exit', () => { exited = true; resolve() }) })
  const until = Date.now() + timeoutMs
  let killed = false
  while (!exited && Date.now() < until) {
    if (await ready()) { child.kill('SIGKILL'); killed = true; break }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  if (!exited && !killed) child.kill('SIGKILL')
  await done
  return { killed, stderr }
}

describe('transfers: ranked paths, speed-proportional downloads, resume', function () {
  describe('one slow vendor', function () {
    const SLOW = 3
    const net = useCluster('slow', { vendors: 4, devicesPerVendor: 1, deviceSize: '512MiB', fatArgs: ['--heartbeat', '500ms'], vendorEnv: i => i === SLOW ? { STOR_TEST_DELAY_MS: '150' } : {} }, ['user'])
    const user = (): Client => net.user('user')

    it('ranks the slow vendor last, with every measure and a score (library and `paths --json`)', async function () {
      const paths = await user().paths({ fresh: true })
      assert.equal(paths.length, 4)
      const slow = net.cluster.vendors[SLOW].peerId
      assert.equal(paths[paths.length - 1].vendor, slow, `slow vendor last: ${JSON.stringify(paths.map(p => [p.vendor.slice(-6), p.rttMs, p.score]))}`)
      assert.ok(paths[paths.length - 1].rttMs >= 140, 'its round trip shows the delay')
      for (const p of paths) {
        assert.equal(p.reachable, true)
        assert.equal(p.hops, 1, 'loopback connections are direct')
        assert.ok(p.availability > 0 && p.availability <= 1)
        assert.ok(p.available > 0 && p.free > 0)
        assert.ok(p.score > 0)
      }
      const r = await cli(['paths', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'cli-user'), '--json'])
      assert.equal(r.code, 0, r.stderr)
      const rows = JSON.parse(r.stdout).paths
      assert.equal(rows.length, 4)
      assert.equal(rows[3].vendor, slow)
      for (const key of ['rttMs', 'hops', 'availability', 'available', 'free', 'inflight', 'ageMs', 'score']) assert.equal(typeof rows[0][key], 'number', key)
      const text = await cli(['paths', '--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'cli-user')])
      assert.equal(text.code, 0, text.stderr)
      assert.match(text.stdout, /rtt ms .* score/)
    })

    it('a download with every chunk on every vendor takes the fewest chunks from the slow one', async function () {
      const src = await randomFile(join(net.dir, 'spread'), 24 * MiB)
      const up = await user().upload(src, { replicas: 4, chunkSize: 512 * 1024 })
      const out = join(net.dir, 'spread-out')
      const t0 = performance.now()
      const down = await user().download(up.fileId, out)
      const seconds = (performance.now() - t0) / 1000
      assert.equal(await sha256File(out), await sha256File(src))
      const count = new Map<string, number>(net.cluster.vendors.map(v => [v.peerId, 0]))
      for (const s of down.sources) count.set(s.vendor, (count.get(s.vendor) ?? 0) + 1)
      const slow = count.get(net.cluster.vendors[SLOW].peerId) ?? 0
      const others = net.cluster.vendors.filter((_, i) => i !== SLOW).map(v => count.get(v.peerId) ?? 0)
      const line = `chunks per vendor ${JSON.stringify(others)} fast, ${slow} slow, in ${seconds.toFixed(2)} s`
      this.test!.title += ` (${line})`
      assert.ok(slow < down.chunks / 8, `the slow vendor served less than half its fair share: ${line}`)
      for (const n of others) assert.ok(n > slow, line)
    })

    it('an upload places fewer chunks on the slow vendor', async function () {
      const src = await randomFile(join(net.dir, 'placed'), 16 * MiB)
      const up = await user().upload(src, { replicas: 1, chunkSize: 512 * 1024 })
      const count = new Map<string, number>()
      for (const p of up.placements) for (const v of p.vendors) count.set(v, (count.get(v) ?? 0) + 1)
      const slow = count.get(net.cluster.vendors[SLOW].peerId) ?? 0
      assert.ok(slow < up.chunks / 4, `slow vendor took ${slow} of ${up.chunks}`)
    })

    it('an aborted upload stops, and a rerun sends only the rest', async function () {
      const src = await randomFile(join(net.dir, 'aborted'), 8 * MiB)
      const ctrl = new AbortController()
      let seen = 0
      await assert.rejects(user().upload(src, { replicas: 2, chunkSize: 256 * 1024, concurrency: 2, signal: ctrl.signal, onProgress: p => { seen = p.chunks; if (p.chunks >= 8) ctrl.abort(new Error('stop here')) } }), /stop here/)
      assert.ok(seen >= 8)
      const again = await user().upload(src, { replicas: 2, chunkSize: 256 * 1024 })
      assert.ok(again.reused >= 8, `reused ${again.reused}`)
      assert.equal(again.sent + again.reused, again.chunks)
      const out = join(net.dir, 'aborted-out')
      await user().download(again.fileId, out)
      assert.equal(await sha256File(out), await sha256File(src))
    })
  })

  describe('kill -9 and run again', function () {
    // every vendor answers a little late, so a transfer takes long enough to be cut in the middle
    const net = useCluster('resume', { vendors: 3, devicesPerVendor: 1, deviceSize: '512MiB', vendorEnv: () => ({ STOR_TEST_DELAY_MS: '20' }) }, [])
    const user = (): string[] => ['--bootstrap', net.cluster.bootstrap, '--data-dir', join(net.dir, 'user')]

    it('an upload killed halfway sends only the missing chunks when run again, and the file comes back byte for byte; so does a download', async function () {
      const src = await randomFile(join(net.dir, 'big.bin'), 32 * MiB)
      const chunks = 128
      const args = ['upload', src, ...user(), '--chunk-size', '256KiB', '--json']
      const uploads = join(net.dir, 'user', 'uploads')
      // the journal: one header line, then one line per placed chunk
      const cut = await killWhen([...args, '--concurrency', '2'], async () => await linesIn(uploads, '.jsonl') >= 1 + 30)
      assert.ok(cut.killed, `the upload ended before it could be killed: ${cut.stderr}`)
      const recorded = await linesIn(uploads, '.jsonl') - 1
      assert.ok(recorded >= 30 && recorded < chunks, `${recorded} chunks recorded before the kill`)

      const again = await cli(args)
      assert.equal(again.code, 0, again.stderr)
      const r = JSON.parse(again.stdout)
      assert.equal(r.chunks, chunks)
      assert.ok(r.reused >= recorded, `reused ${r.reused}, recorded ${recorded}`)
      assert.equal(r.sent, chunks - r.reused, 'only the missing chunks were sent')
      assert.ok(r.sent > 0 && r.sent < chunks)
      assert.equal(await linesIn(uploads, '.jsonl'), 0, 'the record is gone once committed')

      // the same for a download
      const out = join(net.dir, 'big.out')
      const dArgs = ['download', r.fileId, out, ...user(), '--json']
      const state = `${out}.stor-part.state`
      const lines = async (): Promise<number> => (await readFile(state, 'utf8').catch(() => '')).split('\n').filter(l => l !== '').length
      const dcut = await killWhen([...dArgs, '--concurrency', '2'], async () => await lines() >= 1 + 30)
      assert.ok(dcut.killed, `the download ended before it could be killed: ${dcut.stderr}`)
      const verified = await lines() - 1
      assert.ok((await stat(`${out}.stor-part`)).size > 0)
      const d = await cli(dArgs)
      assert.equal(d.code, 0, d.stderr)
      const dr = JSON.parse(d.stdout)
      assert.ok(dr.reused >= verified, `reused ${dr.reused} of ${verified} verified`)
      assert.equal(dr.fetched, chunks - dr.reused, 'only the missing chunks were fetched')
      assert.equal(await sha256File(out), await sha256File(src))
      await assert.rejects(stat(state), 'the record is gone once the file is whole')
    })

    it('many small files go up in one command and come down in one command', async function () {
      const dir = join(net.dir, 'small')
      await mkdir(dir, { recursive: true })
      const files = await Promise.all(Array.from({ length: 100 }, async (_, i) => await randomFile(join(dir, `f${String(i).padStart(3, '0')}`), 4096)))
      const up = await cli(['upload', dir, ...user(), '--json'])
      assert.equal(up.code, 0, up.stderr)
      const r = JSON.parse(up.stdout)
      assert.equal(r.files.length, 100)
      const outDir = join(net.dir, 'small-out')
      const down = await cli(['download', ...r.files.map((f: any) => f.fileId), outDir, ...user(), '--json'])
      assert.equal(down.code, 0, down.stderr)
      assert.equal(JSON.parse(down.stdout).files.length, 100)
      for (const f of files) assert.equal(await sha256File(join(outDir, f.split('/').pop() as string)), await sha256File(f))
    })
  })
})
