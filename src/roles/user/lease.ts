import type * as M from '../../protocol/messages.ts'
import type { Logger } from '../../logger.ts'

export type Allocation = M.Message<typeof M.Allocated>

/** A renewal is tried again this soon after it failed, while the lease lasts. */
const RETRY_MS = 1000

/**
 * Keeps an allocation's lease alive while an upload runs: halfway to the end of the lease, it
 * asks the FAT for a renewal and hands the fresh grants on, so an upload slower than its lease
 * assumed (1 MiB/s) is not cut off. A failed renewal is tried again until the lease is over.
 */
export function keepLease (alloc: Allocation, renew: (allocationId: string) => Promise<Allocation>, onRenewed: (a: Allocation) => void, log: Logger): { stop: () => void } {
  let expires = alloc.expires
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const schedule = (ms: number): void => {
    if (stopped) return
    timer = setTimeout(() => { void run() }, Math.max(0, ms))
    // an upload that is over (or died) must not be held open by its lease
    timer.unref()
  }
  const run = async (): Promise<void> => {
    try {
      const renewed = await renew(alloc.allocationId)
      if (stopped) return
      expires = renewed.expires
      onRenewed(renewed)
      log('allocation %s renewed until %s', alloc.allocationId, new Date(expires).toISOString())
      schedule((expires - Date.now()) / 2)
    } catch (err: any) {
      log('allocation %s: renewal failed: %s', alloc.allocationId, err.message)
      if (expires > Date.now()) schedule(Math.min(RETRY_MS, (expires - Date.now()) / 2))
    }
  }
  schedule((expires - Date.now()) / 2)
  return { stop () { stopped = true; clearTimeout(timer) } }
}
