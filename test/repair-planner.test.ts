import assert from 'node:assert/strict'
import { planRepair, DEFAULT_REPAIR_LIMITS, type RepairChunk, type RepairInput, type RepairTarget } from '../src/roles/fat/repair.ts'
import { judgeVendors, type VendorView } from '../src/roles/fat/liveness.ts'
import { distinctZones } from '../src/roles/user/upload.ts'

const MiB = 1024 * 1024
const chunk = (n: number, holders: string[], want = holders.length, size = MiB): RepairChunk => ({ fileId: 'f'.repeat(31) + (n % 10), chunkId: n.toString(16).padStart(64, '0'), size, want, holders })

/** A network of vendors a..e, `dead` of them dead; every live one may take `room` bytes. */
function input (chunks: RepairChunk[], opts: { dead?: string[], silent?: string[], room?: number, zones?: Record<string, string>, limits?: Partial<typeof DEFAULT_REPAIR_LIMITS>, moving?: string[], vendors?: string[] } = {}): RepairInput<RepairChunk> {
  const dead = new Set(opts.dead ?? [])
  const silent = new Set([...(opts.silent ?? []), ...dead])
  const vendors = opts.vendors ?? ['a', 'b', 'c', 'd', 'e']
  const targets: RepairTarget[] = vendors.filter(v => !silent.has(v)).map(v => ({ vendor: v, room: opts.room ?? 1000 * MiB, zone: opts.zones?.[v] }))
  return {
    chunks,
    healthy: v => !dead.has(v),
    canServe: v => !silent.has(v),
    targets,
    zoneOf: v => opts.zones?.[v],
    sourcing: new Map(),
    receiving: new Map(),
    moving: new Set(opts.moving ?? []),
    limits: { ...DEFAULT_REPAIR_LIMITS, ...opts.limits }
  }
}

describe('repair planner (pure)', function () {
  it('plans nothing when every chunk has its copies', function () {
    const plan = planRepair(input([chunk(1, ['a', 'b']), chunk(2, ['c', 'd'])]))
    assert.deepEqual(plan, { copies: [], under: 0, lost: 0, queued: 0 })
  })

  it('copies a dead vendor\'s chunk from a healthy replica to a vendor that holds none of it, replacing the dead copy', function () {
    const plan = planRepair(input([chunk(1, ['a', 'b'])], { dead: ['a'] }))
    assert.equal(plan.copies.length, 1)
    const [c] = plan.copies
    assert.equal(c.from, 'b')
    assert.equal(c.replaces, 'a')
    assert.ok(!['a', 'b'].includes(c.to))
    assert.equal(plan.under, 1)
    assert.equal(plan.queued, 0)
  })

  it('counts a chunk with no healthy copy as lost and plans nothing for it', function () {
    const plan = planRepair(input([chunk(1, ['a', 'b'])], { dead: ['a', 'b'] }))
    assert.deepEqual(plan, { copies: [], under: 0, lost: 1, queued: 0 })
  })

  it('repairs the most at risk first: one healthy copy left before two', function () {
    const chunks = [
      ...Array.from({ length: 10 }, (_, i) => chunk(100 + i, ['a', 'c', 'd'])), // 2 of 3 healthy
      chunk(7, ['a', 'e', 'b'], 3) // 1 of 3 healthy
    ]
    const plan = planRepair(input(chunks, { dead: ['a', 'b'], limits: { perRound: 1, perSource: 8, perTarget: 8 } }))
    assert.equal(plan.copies.length, 1)
    assert.equal(plan.copies[0].chunk.chunkId, chunk(7, []).chunkId)
    assert.equal(plan.under, 11)
    assert.equal(plan.queued, 10)
  })

  it('bounds copies per source, per target and per round', function () {
    const chunks = Array.from({ length: 200 }, (_, i) => chunk(i, ['a', 'b']))
    const plan = planRepair(input(chunks, { dead: ['a'] }))
    // one source (b) serves at most 2 at once
    assert.equal(plan.copies.length, 2)
    assert.ok(plan.copies.every(c => c.from === 'b'))

    const spread = Array.from({ length: 200 }, (_, i) => chunk(i, ['a', ['b', 'c', 'd', 'e'][i % 4]]))
    const wide = planRepair(input(spread, { dead: ['a'], limits: { perSource: 100, perTarget: 3, perRound: 1000 } }))
    const perTarget = new Map<string, number>()
    for (const c of wide.copies) perTarget.set(c.to, (perTarget.get(c.to) ?? 0) + 1)
    assert.ok([...perTarget.values()].every(n => n <= 3), JSON.stringify([...perTarget]))
    assert.equal(wide.copies.length, 12) // four targets, three each
    const capped = planRepair(input(spread, { dead: ['a'], limits: { perSource: 100, perTarget: 100, perRound: 5 } }))
    assert.equal(capped.copies.length, 5)
    assert.equal(capped.queued, 195)
  })

  it('counts copies under way against the limits and skips chunks already moving', function () {
    const chunks = Array.from({ length: 10 }, (_, i) => chunk(i, ['a', 'b']))
    const base = input(chunks, { dead: ['a'], moving: [`${chunks[0].fileId}/${chunks[0].chunkId}`] })
    const plan = planRepair({ ...base, sourcing: new Map([['b', 1]]) })
    assert.equal(plan.copies.length, 1)
    assert.notEqual(plan.copies[0].chunk, chunks[0])
    assert.equal(plan.under, 10)
    assert.equal(plan.queued, 8)
  })

  it('does not copy from a vendor that is silent, nor to one without room', function () {
    assert.equal(planRepair(input([chunk(1, ['a', 'b'])], { dead: ['a'], silent: ['b'] })).copies.length, 0)
    assert.equal(planRepair(input([chunk(1, ['a', 'b'], 2, 10 * MiB)], { dead: ['a'], room: MiB })).copies.length, 0)
    // room is used up within one round
    const two = planRepair(input([chunk(1, ['a', 'b']), chunk(2, ['a', 'b'])], { dead: ['a'], room: MiB, vendors: ['a', 'b', 'c'] }))
    assert.equal(two.copies.length, 1)
  })

  it('prefers a target in a zone the healthy copies are not in', function () {
    const zones = { a: 'z1', b: 'z2', c: 'z2', d: 'z2', e: 'z3' }
    const plan = planRepair(input([chunk(1, ['a', 'b'])], { dead: ['a'], zones }))
    assert.equal(plan.copies[0].to, 'e')
    // the dead vendor's own zone counts as free again: only healthy copies' zones are avoided
    const z1 = planRepair(input([chunk(1, ['a', 'b'])], { dead: ['a'], zones: { ...zones, e: 'z2', c: 'z1' } }))
    assert.equal(z1.copies[0].to, 'c')
  })

  it('a backlog of 50,000 chunks: counted whole, and only as many copies as the sources may serve', function () {
    const chunks = Array.from({ length: 50_000 }, (_, i) => chunk(i, ['a', ['b', 'c', 'd', 'e'][i % 4]]))
    const plan = planRepair(input(chunks, { dead: ['a'], limits: { perSource: 2, perTarget: 4, perRound: 64 } }))
    assert.equal(plan.under, 50_000)
    assert.equal(plan.copies.length, 8)
    assert.equal(plan.queued, 50_000 - 8)
    assert.equal(new Set(plan.copies.map(c => c.chunk)).size, 8)
  })
})

describe('vendor states (pure)', function () {
  const rules = { repairAfterMs: 10_000, minIn: 0.75 }
  const view = (peer: string, silentMs: number, more: Partial<VendorView> = {}): VendorView => ({ peer, silentMs, heard: silentMs < 5000, draining: false, holds: 10, ordersWaiting: 0, ...more })

  it('declares a vendor silent for repair-after dead, not one silent for less', function () {
    const v = judgeVendors([view('a', 10_000), view('b', 9000), view('c', 0), view('d', 0)], rules)
    assert.deepEqual(v, { dead: ['a'], back: [], in: [], held: [] })
  })

  it('the guard keeps three of four frozen vendors from being declared dead: at most one', function () {
    const v = judgeVendors([view('a', 60_000), view('b', 30_000), view('c', 20_000), view('d', 0)], rules)
    assert.deepEqual(v.dead, ['a'])
    assert.deepEqual(v.held, ['b', 'c'])
    // one dead already: nobody else goes while three of four must stay in
    const next = judgeVendors([view('a', 60_000, { state: 'dead' }), view('b', 30_000), view('c', 0), view('d', 0)], rules)
    assert.deepEqual(next.dead, [])
    assert.deepEqual(next.held, ['b'])
  })

  it('a dead vendor that holds nothing any more leaves the count, so the next death is repaired', function () {
    const v = judgeVendors([view('a', 600_000, { state: 'dead', holds: 0 }), view('b', 30_000), view('c', 0), view('d', 0), view('e', 0)], rules)
    assert.deepEqual(v.dead, ['b'])
  })

  it('a dead vendor heard again is back; a back one in again once its orders are taken', function () {
    const v = judgeVendors([view('a', 100, { state: 'dead' }), view('b', 100, { state: 'back', ordersWaiting: 3 }), view('c', 100, { state: 'back' }), view('d', 0)], rules)
    assert.deepEqual(v.back, ['a'])
    assert.deepEqual(v.in, ['c'])
    assert.deepEqual(v.dead, [])
  })

  it('a replica that just started does not take a dead vendor it has not heard for back', function () {
    // silence counts from the replica's start, so it is short; but no heartbeat arrived
    const v = judgeVendors([view('a', 100, { state: 'dead', heard: false }), view('b', 100), view('c', 100), view('d', 100)], rules)
    assert.deepEqual(v, { dead: [], back: [], in: [], held: [] })
  })

  it('never declares a draining vendor dead (its chunks move anyway)', function () {
    const v = judgeVendors([view('a', 60_000, { draining: true }), view('b', 0), view('c', 0), view('d', 0)], rules)
    assert.deepEqual(v.dead, [])
  })
})

describe('zones on upload (pure)', function () {
  it('picks replicas in distinct zones while another zone is left, then fills', function () {
    const zone: Record<string, string> = { a: 'r1', b: 'r1', c: 'r2', d: 'r3' }
    assert.deepEqual(distinctZones(['a', 'b', 'c', 'd'], 2, new Set(), v => zone[v]), ['a', 'c'])
    assert.deepEqual(distinctZones(['a', 'b', 'c'], 3, new Set(), v => zone[v]), ['a', 'c', 'b'])
    assert.deepEqual(distinctZones(['a', 'b', 'c', 'd'], 1, new Set(['c']), v => zone[v]), ['a'])
    assert.deepEqual(distinctZones(['b', 'c', 'd'], 1, new Set(['a']), v => zone[v]), ['c'])
  })
})
