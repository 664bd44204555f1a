import assert from 'node:assert/strict'
import { AccessDeniedError, NoQuorumError, UnavailableError, UnreachableError } from '../src/errors.ts'
import { hedged, roundVerdict } from '../src/roles/user/hedge.ts'

const never = async (signal: AbortSignal): Promise<never> => await new Promise((_resolve, reject) => { signal.addEventListener('abort', () => { reject(new Error('aborted')) }) })

describe('hedged requests (user client failover)', function () {
  it('asks only the first target when it answers in time', async function () {
    const asked: string[] = []
    const r = await hedged(['a', 'b', 'c'], 1000, async t => { asked.push(t); return `from ${t}` })
    assert.deepEqual(r, { value: 'from a', target: 'a' })
    assert.deepEqual(asked, ['a'])
  })

  it('asks the next one after the delay when the first hangs, takes its answer and aborts the first', async function () {
    let aborted = false
    const started = Date.now()
    const r = await hedged(['dead', 'b'], 50, async (t, signal) => {
      if (t === 'dead') { signal.addEventListener('abort', () => { aborted = true }); return await never(signal) }
      return t
    })
    assert.deepEqual(r, { value: 'b', target: 'b' })
    assert.ok(Date.now() - started < 1000)
    assert.ok(aborted, 'the hanging attempt was aborted')
  })

  it('asks the next one at once when one fails, without waiting for the delay', async function () {
    const started = Date.now()
    const r = await hedged(['refused', 'b'], 60_000, async t => { if (t === 'refused') throw new Error('refused'); return t })
    assert.deepEqual(r, { value: 'b', target: 'b' })
    assert.ok(Date.now() - started < 1000)
  })

  it('returns every error, in the order they came, when all fail; and nothing with no targets', async function () {
    const r = await hedged(['a', 'b', 'c'], 10, async t => { throw new Error(t) })
    assert.ok('errors' in r)
    assert.deepEqual(r.errors.map(e => (e as Error).message), ['a', 'b', 'c'])
    assert.deepEqual(await hedged([], 10, async () => 1), { errors: [] })
  })

  it('a late success of a slow first target still wins if the others failed', async function () {
    const r = await hedged(['slow', 'x'], 10, async t => {
      if (t === 'x') throw new Error('x')
      await new Promise(resolve => setTimeout(resolve, 50))
      return t
    })
    assert.deepEqual(r, { value: 'slow', target: 'slow' })
  })
})

describe('a round of FAT requests without an answer (user client failover)', function () {
  const cut = new NoQuorumError('FAT replica A cannot reach a majority of its replica set')
  const gone = new UnreachableError('cannot reach B')

  it('gives up at once when the replicas that answer are cut off and the rest are unreachable', function () {
    assert.deepEqual(roundVerdict([cut, gone, gone]), { verdict: 'cut-off', error: cut })
    assert.deepEqual(roundVerdict([gone, cut]), { verdict: 'cut-off', error: cut })
  })

  it('retries while an election may end it: another replica says unavailable, or none answered at all', function () {
    assert.deepEqual(roundVerdict([cut, new UnavailableError('no FAT replica orders writes right now'), gone]), { verdict: 'retry' })
    assert.deepEqual(roundVerdict([gone, gone]), { verdict: 'retry' })
    assert.deepEqual(roundVerdict([new AccessDeniedError('the request was replayed'), gone]), { verdict: 'retry' })
  })

  it('throws any other error as it is', function () {
    const denied = new AccessDeniedError('allocation x belongs to another user')
    assert.deepEqual(roundVerdict([cut, denied]), { verdict: 'final', error: denied })
  })
})
