import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { logger } from '../src/logger.ts'
import { createRegistry, gatewayMetrics, healthRoute, parseHttpListen, probedHealth, startHttpServer, startMonitoring, type Health } from '../src/http/index.ts'
import { fatMetrics, shared } from '../src/http/fat.ts'
import { Ring, StatusTracker, changes } from '../src/http/status.ts'
import { chunkHealth, transferQueue, vendorState, type FatOverview, type VendorView } from '../src/roles/fat/overview.ts'
import type { FileTable } from '../src/protocol/messages.ts'
import { eventually } from './helpers.ts'
import { parseMetrics } from './scrape.ts'

const log = logger('stor:test:http')

describe('http: --http-listen, the server, health', function () {
  it('parses PORT, HOST:PORT and [IPv6]:PORT; a bare port is on 127.0.0.1', function () {
    assert.deepEqual(parseHttpListen('9100'), { host: '127.0.0.1', port: 9100 })
    assert.deepEqual(parseHttpListen('0'), { host: '127.0.0.1', port: 0 })
    assert.deepEqual(parseHttpListen('0.0.0.0:9100'), { host: '0.0.0.0', port: 9100 })
    assert.deepEqual(parseHttpListen('localhost:80'), { host: 'localhost', port: 80 })
    assert.deepEqual(parseHttpListen('[::1]:9100'), { host: '::1', port: 9100 })
    for (const bad of ['', 'abc', ':9100', '::1:9100', '127.0.0.1:', '127.0.0.1:http', '9100 9101', '[::1]']) {
      assert.throws(() => parseHttpListen(bad), (err: any) => err.name === 'InvalidArgumentError' && err.message.startsWith(`--http-listen: "${bad}" is not an address; write PORT, HOST:PORT`), bad)
    }
    assert.throws(() => parseHttpListen('70000'), /--http-listen: port 70000 is above 65535/)
  })

  it('answers GET and HEAD on its routes, 404 naming them, 405 for other methods, 500 for a route that throws, and goes on', async function () {
    const server = await startHttpServer({ host: '127.0.0.1', port: 0 }, {
      '/a': () => ({ status: 200, type: 'text/plain', body: 'hello' }),
      '/boom': () => { throw new Error('kaput') }
    }, log)
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      const a = await fetch(`${server.url}/a?x=1`)
      assert.equal(a.status, 200)
      assert.equal(await a.text(), 'hello')
      assert.equal(a.headers.get('cache-control'), 'no-store')
      const head = await fetch(`${server.url}/a`, { method: 'HEAD' })
      assert.equal(head.status, 200)
      assert.equal(await head.text(), '')
      const missing = await fetch(`${server.url}/nope`)
      assert.equal(missing.status, 404)
      assert.equal(await missing.text(), 'no page /nope; try /a, /boom\n')
      const post = await fetch(`${server.url}/a`, { method: 'POST', body: 'x' })
      assert.equal(post.status, 405)
      const boom = await fetch(`${server.url}/boom`)
      assert.equal(boom.status, 500)
      assert.equal(await boom.text(), 'internal error: kaput\n')
      assert.equal((await fetch(`${server.url}/a`)).status, 200, 'still serving')
    } finally {
      await server.close()
    }
  })

  it('refuses a port in use with a clear error', async function () {
    const blocker = createServer()
    await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
    const { port } = blocker.address() as AddressInfo
    try {
      await assert.rejects(startHttpServer({ host: '127.0.0.1', port }, {}, log), (err: any) => err.name === 'InvalidArgumentError' && err.message === `--http-listen: 127.0.0.1:${port} is in use by another program; choose another port (0 picks a free one)`)
    } finally {
      blocker.close()
    }
  })

  it('/health is 200 or 503 with the reason, as text or JSON', async function () {
    let ok = true
    const route = healthRoute(() => ({ ok, reason: ok ? 'fine' : 'no leader' }))
    const req = (url: string): any => ({ url })
    assert.deepEqual(await route(req('/health')), { status: 200, type: 'text/plain; charset=utf-8', body: 'ok: fine\n' })
    ok = false
    assert.deepEqual(await route(req('/health')), { status: 503, type: 'text/plain; charset=utf-8', body: 'unavailable: no leader\n' })
    assert.deepEqual(await route(req('/health?json')), { status: 503, type: 'application/json', body: '{"ok":false,"reason":"no leader"}' })
  })

  it('a probed health: one probe at a time, reused while fresh, unhealthy when slow or failing', async function () {
    let probes = 0
    let answer: () => Promise<Health> = async () => ({ ok: true, reason: 'fine' })
    const h = probedHealth(async () => { probes++; return await answer() }, { freshMs: 60_000, timeoutMs: 50, what: 'the FAT' })
    assert.deepEqual(await Promise.all([h(), h()]), [{ ok: true, reason: 'fine' }, { ok: true, reason: 'fine' }])
    assert.equal(probes, 1, 'two asks at once share one probe')
    assert.deepEqual(await h(), { ok: true, reason: 'fine' })
    assert.equal(probes, 1, 'a fresh answer is reused')

    let release: () => void = () => {}
    answer = async () => { await new Promise<void>(resolve => { release = resolve }); return { ok: true, reason: 'late' } }
    const slow = probedHealth(async () => { probes++; return await answer() }, { freshMs: 60_000, timeoutMs: 50, what: 'the FAT' })
    probes = 0
    assert.deepEqual(await slow(), { ok: false, reason: 'the FAT did not answer within 0.05 s' })
    assert.deepEqual(await slow(), { ok: false, reason: 'the FAT did not answer within 0.05 s' })
    assert.equal(probes, 1, 'a slow probe is not started again while it runs')
    release()
    await eventually('the slow probe\'s answer, once in, is the answer', async () => (await slow()).reason === 'late')
    assert.equal(probes, 1)
    answer = async () => { throw new Error('no FAT server answered: connection refused') }
    const failing = probedHealth(async () => await answer(), { freshMs: 0, timeoutMs: 5_000, what: 'the FAT' })
    assert.deepEqual(await failing(), { ok: false, reason: 'the FAT did not answer: no FAT server answered: connection refused' })
  })
})

const vendor = (peer: string, state: VendorView['state'], capacity: number, used: number): VendorView => ({
  peer, state, capacity, used, allocated: 10, available: capacity - used - 10, availability: 1, load: 0, chunks: 0, damaged: state === 'full' ? 2 : 0, transfers: 0, devices: 1, failedDevices: 0, lastSeen: 0
})

function overview (vendors: VendorView[], leader?: string): FatOverview {
  return {
    self: 'f1',
    replicas: [{ peer: 'f1', leader: leader === 'f1', self: true }, { peer: 'f2', leader: leader === 'f2', self: false }],
    ...(leader != null ? { leader } : {}),
    isLeader: leader === 'f1',
    term: 3,
    commit: 40,
    applied: 39,
    logEntries: 41,
    snapshotIndex: 20,
    snapshotAge: 75,
    vendors,
    files: 7,
    allocations: 1,
    chunks: { healthy: 5, underReplicated: 2, lost: 1 },
    transfers: transferQueue([
      { id: 'a'.repeat(32), reason: 'repair', owner: 'o', fileId: 'f', chunkId: 'c', size: 100, from: 'v1', to: 'v2', replaces: 'v3', issued: 0, expires: 1 },
      { id: 'b'.repeat(32), reason: 'repair', owner: 'o', fileId: 'f', chunkId: 'd', size: 50, from: 'v1', to: 'v2', replaces: 'v3', issued: 0, expires: 1 }
    ])
  }
}

describe('http: FAT overview, metrics and the status page\'s data', function () {
  const t = (fileId: string, replicas: number, chunks: Array<[string, string[]]>): FileTable => ({ fileId, replicas, chunks: chunks.map(([id, vendors], i) => ({ i, id, size: 1, replicas: vendors.map(v => ({ vendor: v, sig: '' })) })) } as unknown as FileTable)

  it('chunk health: every replica readable is healthy, some is under-replicated, none is lost', function () {
    const readable = (v: string, _f: string, c: string): boolean => v !== 'dead' && !(v === 'a' && c === 'bad')
    assert.deepEqual(chunkHealth([
      t('f1', 2, [['c1', ['a', 'b']], ['c2', ['a', 'dead']], ['c3', ['dead', 'dead2']]]),
      t('f2', 2, [['bad', ['a', 'b']], ['c4', ['dead', 'b']]]),
      t('f3', 1, [['c5', ['b']]]),
      t('f4', 3, [['c6', ['a', 'b']]])
    ], (v, f, c) => readable(v, f, c) && v !== 'dead2'), { healthy: 2, underReplicated: 4, lost: 1 })
    assert.deepEqual(chunkHealth([], () => true), { healthy: 0, underReplicated: 0, lost: 0 })
  })

  it('vendor state: dead before draining before suspect before back before full', function () {
    assert.equal(vendorState('dead', true, true, true), 'dead')
    assert.equal(vendorState(undefined, false, true, false), 'draining')
    assert.equal(vendorState(undefined, false, false, true), 'suspect')
    assert.equal(vendorState('back', false, false, true), 'suspect')
    assert.equal(vendorState('back', true, false, true), 'back')
    assert.equal(vendorState(undefined, true, true, false), 'draining')
    assert.equal(vendorState(undefined, true, false, false), 'full')
    assert.equal(vendorState(undefined, true, false, true), 'alive')
  })

  it('FAT metrics read the overview at scrape time: vendors per state, capacity of the vendors heard, chunk health, the repair queue', async function () {
    const registry = createRegistry()
    let o = overview([vendor('v1', 'alive', 1000, 100), vendor('v2', 'full', 500, 400), vendor('v3', 'suspect', 700, 300)], 'f1')
    let calls = 0
    const m = fatMetrics(registry, async () => { calls++; return o })
    m.committed(0.02)
    m.stored(300)
    m.transferred('repair', 150)
    const s = await parseMetrics(await registry.metrics())
    assert.equal(calls, 1, 'one overview serves the whole scrape')
    assert.equal(s.value('stor_fat_vendors', { state: 'alive' }), 1)
    assert.equal(s.value('stor_fat_vendors', { state: 'full' }), 1)
    assert.equal(s.value('stor_fat_vendors', { state: 'suspect' }), 1)
    assert.equal(s.value('stor_fat_vendors', { state: 'draining' }), 0)
    assert.equal(s.value('stor_fat_capacity_bytes'), 1500, 'a silent vendor\'s capacity is not counted')
    assert.equal(s.value('stor_fat_used_bytes'), 500)
    assert.equal(s.value('stor_fat_allocated_bytes'), 20)
    assert.equal(s.value('stor_fat_free_bytes'), 1500 - 500 - 20)
    assert.equal(s.value('stor_fat_vendor_up', { vendor: 'v3' }), 0)
    assert.equal(s.value('stor_fat_chunks', { health: 'under_replicated' }), 2)
    assert.equal(s.value('stor_fat_chunks', { health: 'lost' }), 1)
    assert.equal(s.value('stor_fat_transfers_pending', { reason: 'repair' }), 2)
    assert.equal(s.value('stor_fat_transfers_pending_bytes', { reason: 'repair' }), 150)
    assert.equal(s.value('stor_fat_transfers_pending', { reason: 'drain' }), 0)
    assert.equal(s.value('stor_fat_chunks_reported_damaged'), 2)
    assert.equal(s.value('stor_fat_transferred_bytes_total', { reason: 'repair' }), 150)
    assert.equal(s.value('stor_fat_transferred_bytes_total', { reason: 'migrate' }), 0, 'every reason is there from the start')
    assert.equal(s.value('stor_fat_committed_bytes_total'), 300)
    assert.equal(s.count('stor_fat_commit_duration_seconds'), 1)
    assert.equal(s.value('stor_fat_raft_log_entries'), 41)
    assert.equal(s.value('stor_fat_raft_snapshot_index'), 20)
    assert.equal(s.value('stor_fat_raft_snapshot_age_seconds'), 75)
    assert.equal(s.value('stor_fat_leader'), 1)
    assert.equal(s.value('stor_fat_raft_applied_index'), 39)
    // a vendor gone from the table is gone from the per-vendor series
    o = overview([vendor('v1', 'alive', 1000, 100)])
    await new Promise(resolve => setTimeout(resolve, 300))
    const again = await parseMetrics(await registry.metrics())
    assert.equal(again.has('stor_fat_vendor_up', { vendor: 'v3' }), false)
    assert.equal(again.value('stor_fat_leader_known'), 0)
  })

  it('shared: callers within the window share one call; a failed call is not kept', async function () {
    let n = 0
    let fail = true
    const f = shared(async () => { n++; if (fail) throw new Error('no'); return n }, 10_000)
    await assert.rejects(f(), /no/)
    fail = false
    assert.deepEqual(await Promise.all([f(), f(), f()]), [2, 2, 2])
  })

  it('events: a vendor going silent and coming back, a new vendor, a state change, the leader changing', function () {
    const before = { leader: 'f1', vendors: new Map<string, VendorView['state']>([['v1', 'alive'], ['v2', 'suspect'], ['v3', 'alive'], ['v5', 'suspect'], ['v6', 'dead']]) }
    const next = overview([vendor('v1', 'suspect', 1, 0), vendor('v2', 'alive', 1, 0), vendor('v3', 'full', 1, 0), vendor('v4', 'alive', 1, 0), vendor('v5', 'dead', 1, 0), vendor('v6', 'back', 1, 0)], 'f2')
    assert.deepEqual(changes(undefined, next, 5), [], 'nothing to compare the first overview with')
    assert.deepEqual(changes(before, next, 5).map(e => [e.kind, e.text]), [
      ['leader', 'replica …f2 orders writes (term 3)'],
      ['vendor-silent', 'vendor …v1 went silent (was alive)'],
      ['vendor-back', 'vendor …v2 is back (alive)'],
      ['vendor-state', 'vendor …v3: alive -> full'],
      ['vendor-new', 'vendor …v4 joined (alive)'],
      ['vendor-dead', 'vendor …v5 is dead: its chunks are copied elsewhere'],
      ['vendor-back', 'vendor …v6 is back (back)']
    ])
    assert.deepEqual(changes({ leader: 'f2', vendors: new Map() }, overview([]), 1).map(e => e.kind), ['no-leader'])
  })

  it('a ring keeps the newest items, oldest first', function () {
    const r = new Ring<number>(3)
    for (let i = 1; i <= 5; i++) r.push(i)
    assert.deepEqual(r.list(), [3, 4, 5])
  })

  it('the tracker samples traffic as rates and logs events and repairs; the JSON has no file names or keys', async function () {
    let o = overview([vendor('v1', 'alive', 1000, 0)], 'f1')
    const tracker = new StatusTracker({ overview: async () => o, sampleMs: 50, log })
    try {
      await eventually('a first sample', async () => ((await tracker.json()) as any).samples.length >= 1)
      tracker.served()
      tracker.committed(1_000_000)
      tracker.transferred('repair', 4096)
      o = overview([vendor('v1', 'suspect', 1000, 0)], 'f1')
      await eventually('the traffic and the silent vendor show', async () => {
        const j = await tracker.json() as any
        return j.samples.some((s: any) => s.written > 0 && s.requests > 0 && s.copied > 0) && j.events.some((e: any) => e.kind === 'vendor-silent')
      })
      const j = await tracker.json() as any
      assert.equal(j.repairedBytes, 4096)
      assert.equal(j.events.find((e: any) => e.kind === 'transfer-done').text, 'repair done: one chunk of 4096 bytes copied')
      assert.deepEqual(j.capacity, { total: 0, used: 0, allocated: 0, free: 0 }, 'a silent vendor\'s capacity is not counted')
      assert.deepEqual(Object.keys(j).sort(), ['allocations', 'applied', 'capacity', 'chunks', 'commit', 'events', 'files', 'isLeader', 'leader', 'repairedBytes', 'replicas', 'sampleMs', 'samples', 'self', 'term', 'time', 'transfers', 'vendors'])
    } finally {
      tracker.stop()
    }
  })

  it('a gateway mounts /metrics and /health with one call and counts requests per operation and status', async function () {
    const registry = createRegistry()
    const g = gatewayMetrics(registry)
    const server = await startMonitoring({ listen: { host: '127.0.0.1', port: 0 }, registry, health: () => ({ ok: true, reason: 'serving' }), log })
    try {
      g.request('PutObject', 200, 0.3, 5000, 0)
      g.request('GetObject', 200, 0.1, 0, 4000)
      g.request('GetObject', 404, 0.01, 0, 120)
      const res = await fetch(`${server.url}/metrics`)
      const s = await parseMetrics(await res.text())
      assert.equal(s.value('stor_gateway_requests_total', { operation: 'GetObject', status: '404' }), 1)
      assert.equal(s.value('stor_gateway_requests_total', { operation: 'GetObject', status: '200' }), 1)
      assert.equal(s.value('stor_gateway_received_bytes_total', { operation: 'PutObject' }), 5000)
      assert.equal(s.value('stor_gateway_sent_bytes_total', { operation: 'GetObject' }), 4120)
      assert.equal(s.count('stor_gateway_request_duration_seconds', { operation: 'GetObject' }), 2)
      assert.equal((await fetch(`${server.url}/health`)).status, 200)
    } finally {
      await server.close()
    }
  })
})
