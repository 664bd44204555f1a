import { InvalidArgumentError } from './errors.ts'

const UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3, t: 1e12, tb: 1e12, tib: 1024 ** 4
}

/** Parses sizes like 4MiB, 500MB, 20GiB, 1024. `what` names the argument in the error. */
export function parseSize (text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = m != null ? UNITS[m[2].toLowerCase()] : undefined
  if (m == null || unit == null) {
    throw new InvalidArgumentError(`${what}: "${text}" is not a size; write a number with an optional unit, like 4MiB, 500MB or 20GiB`)
  }
  const bytes = Math.floor(Number(m[1]) * unit)
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError(`${what}: "${text}" is too large`)
  return bytes
}

export function formatSize (bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`
}

const MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Parses durations like 500ms, 30s, 10m, 2h; a bare number is seconds. */
export function parseDuration (text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (m == null) throw new InvalidArgumentError(`${what}: "${text}" is not a duration; write e.g. 500ms, 30s or 10m`)
  return Math.round(Number(m[1]) * MS[m[2] ?? 's'])
}
