import type { Progress } from '../src/index.ts'
import { formatSize } from '../src/index.ts'

function formatTime (s: number): string {
  if (!Number.isFinite(s)) return '--:--'
  const t = Math.max(0, Math.round(s))
  const h = Math.floor(t / 3600)
  const m = Math.floor((t % 3600) / 60)
  const sec = String(t % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`
}

/**
 * A one-line progress bar on a terminal's stderr: bytes done of total, rate (over the last few
 * seconds, bytes an earlier interrupted run already did not counted) and time left. Nothing at
 * all when stderr is not a terminal or `enabled` is false (--json).
 */
export function progressBar (enabled: boolean, out: NodeJS.WriteStream = process.stderr): { update: (p: Progress) => void, done: () => void } {
  if (!enabled || !out.isTTY) return { update: () => {}, done: () => {} }
  const history: Array<{ t: number, bytes: number }> = []
  let last = 0
  let shown = false
  return {
    update (p) {
      const now = Date.now()
      history.push({ t: now, bytes: p.bytes })
      while (history.length > 2 && now - history[0].t > 5000) history.shift()
      if (now - last < 100 && p.bytes < p.total) return
      last = now
      const frac = p.total === 0 ? 1 : p.bytes / p.total
      const width = Math.max(10, Math.min(30, (out.columns ?? 80) - 70))
      const fill = Math.round(frac * width)
      const first = history[0]
      const rate = now > first.t ? (p.bytes - first.bytes) / ((now - first.t) / 1000) : 0
      const left = rate > 0 ? (p.total - p.bytes) / rate : Number.POSITIVE_INFINITY
      const files = p.files > 1 ? ` ${p.files} files` : ''
      out.write(`\r${p.phase}${files} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatSize(p.bytes)}/${formatSize(p.total)} ${formatSize(rate)}/s ${formatTime(left)} left\x1b[K`)
      shown = true
    },
    done () { if (shown) out.write('\r\x1b[K') }
  }
}
