import type { Progress } from '../src/index.ts'
import { formatSize } from '../src/index.ts'

/** A one-line progress bar on a terminal's stderr; nothing at all when stderr is not a terminal. */
export function progressBar (enabled: boolean): { update: (p: Progress) => void, done: () => void } {
  const out = process.stderr
  if (!enabled || !out.isTTY) return { update: () => {}, done: () => {} }
  const started = Date.now()
  let last = 0
  let shown = false
  return {
    update (p) {
      const now = Date.now()
      if (now - last < 100 && p.bytes < p.total) return
      last = now
      const frac = p.total === 0 ? 1 : p.bytes / p.total
      const width = 24
      const fill = Math.round(frac * width)
      const rate = p.bytes / Math.max(0.001, (now - started) / 1000)
      const left = rate > 0 ? (p.total - p.bytes) / rate : 0
      out.write(`\r${p.phase} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatSize(p.bytes)}/${formatSize(p.total)} ${formatSize(rate)}/s ${left.toFixed(0)}s left \x1b[K`)
      shown = true
    },
    done () { if (shown) out.write('\r\x1b[K') }
  }
}
