import type { Logger } from '../../logger.ts'
import type { Devices } from '../../store/devices.ts'
import type { ChunkStore } from './chunks.ts'

export interface ScrubOptions {
  /** Bytes read per second at most. */
  rate: number
  /** Time from the start of one full pass to the start of the next. */
  intervalMs: number
  log: Logger
  metrics?: ScrubMetrics
}

/** What the scrubber reports as it reads, for metrics. */
export interface ScrubMetrics {
  /** bytes of pieces read back and checked */
  checked: (bytes: number) => void
  /** a chunk found corrupt or missing */
  damaged: () => void
  /** a full pass finished */
  passed: () => void
}

export interface Scrubber {
  /** Full passes finished since start. */
  readonly passes: number
  /** Share of the stored bytes the pass under way has checked (1 between passes). */
  readonly progress: number
  stop: () => Promise<void>
}

/**
 * Re-reads every stored piece in the background at a bounded rate and checks its hash. A piece
 * that is corrupt or gone marks its chunk damaged, which the heartbeat reports to the FAT.
 */
export function startScrubber (store: ChunkStore, devices: Devices, opts: ScrubOptions): Scrubber {
  const stopper = new AbortController()
  let passes = 0
  let progress = 1
  let timer: NodeJS.Timeout | undefined

  const pause = async (ms: number): Promise<void> => {
    if (ms <= 0) return
    await new Promise<void>(resolve => {
      const t = setTimeout(resolve, ms)
      stopper.signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
  }

  const pass = async (): Promise<void> => {
    const started = Date.now()
    let bytes = 0
    let found = 0
    const chunks = await store.list()
    const total = chunks.reduce((n, c) => n + (c.damaged != null ? 0 : c.pieces.reduce((m, p) => m + p.size, 0)), 0)
    progress = total === 0 ? 1 : 0
    for (const c of chunks) {
      if (stopper.signal.aborted) return
      if (c.damaged != null) continue
      for (const p of c.pieces) {
        let problem: string | undefined
        try {
          await devices.read(p)
        } catch (err: any) {
          problem = err.code === 'ENOENT' ? `piece ${p.name} is gone from ${p.device}` : err.message
        }
        bytes += p.size
        progress = Math.min(1, bytes / total)
        opts.metrics?.checked(p.size)
        if (problem != null) {
          // a piece gone with its whole device is the device's failure, not this chunk's: the probe
          // marks the device failed, and its chunks are restored here (Store.deviceFailed)
          if (!devices.isFailed(p.device)) await devices.probe()
          if (devices.isFailed(p.device)) break
          // an erase or a replacement that ran meanwhile is not damage
          const marked = await store.markDamaged(c.fileId, c.chunkId, `scrub: ${problem}`, now => now.stored !== c.stored)
          if (marked) { found++; opts.metrics?.damaged(); opts.log.error('scrub: chunk %s of file %s is damaged: %s', c.chunkId, c.fileId, problem) }
          break
        }
        // stay under the rate: bytes read so far may take no less than bytes / rate seconds
        await pause(bytes / opts.rate * 1000 - (Date.now() - started))
      }
    }
    passes++
    progress = 1
    opts.metrics?.passed()
    opts.log('scrub pass %d: %d bytes checked in %d ms, %d damaged chunks found', passes, bytes, Date.now() - started, found)
  }

  let running: Promise<void> = Promise.resolve()
  const loop = (): void => {
    if (stopper.signal.aborted) return
    const started = Date.now()
    running = pass().catch(err => { opts.log.error('scrub: %s', err.message) }).finally(() => {
      if (!stopper.signal.aborted) timer = setTimeout(loop, Math.max(0, opts.intervalMs - (Date.now() - started)))
    })
  }
  timer = setTimeout(loop, opts.intervalMs)

  return {
    get passes () { return passes },
    get progress () { return progress },
    async stop () {
      stopper.abort()
      clearTimeout(timer)
      await running
    }
  }
}
