import type { Logger } from '../../logger.ts'
import type * as M from '../../protocol/messages.ts'

export interface TransferSteps {
  log: Logger
  /** Throws unless the order is valid for this vendor. */
  check: (t: M.Transfer) => Promise<void>
  /** Copies the chunk from the order's source and stores it (a no-op if it is here already). */
  copy: (t: M.Transfer) => Promise<void>
  /** Sends the signed receipt to the FAT. */
  confirm: (t: M.Transfer) => Promise<void>
}

/** Copies running at once on this vendor; more wait their turn. */
const CONCURRENCY = 4

/**
 * The target side of FAT transfer orders: each order runs once at a time, and not again once
 * confirmed (the FAT re-sends it on every heartbeat until then), a few at once. A failed copy is only logged: the FAT lets
 * the order expire and plans another.
 */
export class Transfers {
  private readonly active = new Set<string>()
  /** Confirmed orders, until they expire: a heartbeat reply sent before the confirmation may carry one again. */
  private readonly confirmed = new Map<string, number>()
  private readonly queue: M.Transfer[] = []
  private stopped = false
  running = 0

  constructor (private readonly steps: TransferSteps) {}

  /** Checks the order and queues it, unless it is queued or running already. */
  async accept (t: M.Transfer): Promise<void> {
    await this.steps.check(t)
    const now = Date.now()
    for (const [id, expires] of this.confirmed) if (expires < now) this.confirmed.delete(id)
    if (this.stopped || this.active.has(t.id) || this.confirmed.has(t.id)) return
    this.active.add(t.id)
    this.queue.push(t)
    this.next()
  }

  stop (): void { this.stopped = true; this.queue.length = 0 }

  private next (): void {
    while (!this.stopped && this.running < CONCURRENCY && this.queue.length > 0) {
      const t = this.queue.shift() as M.Transfer
      this.running++
      void this.run(t).finally(() => {
        this.running--
        this.active.delete(t.id)
        this.next()
      })
    }
  }

  private async run (t: M.Transfer): Promise<void> {
    try {
      if (t.expires < Date.now()) return
      await this.steps.copy(t)
      await this.steps.confirm(t)
      this.confirmed.set(t.id, t.expires)
      this.steps.log('transfer %s (%s): chunk %s of %s copied from %s', t.id, t.reason, t.chunkId, t.fileId, t.from)
    } catch (err: any) {
      this.steps.log.error('transfer %s (%s) of chunk %s from %s failed: %s', t.id, t.reason, t.chunkId, t.from, err.message)
    }
  }
}
