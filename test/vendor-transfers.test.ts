import assert from 'node:assert/strict'
import { Transfers } from '../src/roles/vendor/transfers.ts'
import { logger } from '../src/logger.ts'
import type * as M from '../src/protocol/messages.ts'

const order = (id: string, expires = Date.now() + 60_000): M.Transfer => ({
  id, reason: 'migrate', owner: 'o', fileId: 'f', chunkId: 'c', size: 1, from: 'a', fromAddrs: [], to: 'b', replaces: 'a', expires, fat: 'x', sig: 's'
})

describe('vendor transfer orders (Transfers)', function () {
  it('runs an order once at a time, not again once confirmed, and again after a failure', async function () {
    const runs: string[] = []
    let fail = true
    let release: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    const transfers = new Transfers({
      log: logger('stor:test'),
      check: async () => {},
      copy: async t => { runs.push(t.id); if (t.id === 'slow') await gate },
      confirm: async t => { if (t.id === 'flaky' && fail) { fail = false; throw new Error('reply lost') } }
    })
    const idle = async (): Promise<void> => { while (transfers.running > 0) await new Promise(resolve => setTimeout(resolve, 5)) }

    // the same order accepted twice while it runs: one run
    await transfers.accept(order('slow'))
    await transfers.accept(order('slow'))
    release()
    await idle()
    // and once more after it was confirmed (a heartbeat reply sent before the confirmation): no run
    await transfers.accept(order('slow'))
    await idle()
    assert.deepEqual(runs, ['slow'])
    // a confirmation that failed is not remembered: the re-sent order runs again
    await transfers.accept(order('flaky'))
    await idle()
    await transfers.accept(order('flaky'))
    await idle()
    assert.deepEqual(runs, ['slow', 'flaky', 'flaky'])
    // an expired order does not run
    await transfers.accept(order('old', Date.now() - 1))
    await idle()
    assert.deepEqual(runs, ['slow', 'flaky', 'flaky'])
    transfers.stop()
  })
})
