import { getMetricsFromIterator, type PromData, type PromHistogramData, type PromMetrics } from 'prom2javascript'

type Labels = Record<string, string>

const matches = (have: Labels, want: Labels): boolean => Object.entries(want).every(([k, v]) => have[k] === v)

/** One scrape of a daemon's /metrics, parsed by a Prometheus text-format parser (prom2javascript). */
export class Scrape {
  /** `metrics`: the parsed series; `nan`: names of samples whose value was NaN (see parseMetrics). */
  constructor (readonly metrics: PromMetrics, readonly nan: string[] = []) {}

  names (): string[] { return Object.keys(this.metrics) }

  private samples (name: string): Array<PromData | PromHistogramData> {
    const m = this.metrics[name]
    if (m == null) throw new Error(`no metric ${name} in the scrape`)
    return m.data as Array<PromData | PromHistogramData>
  }

  has (name: string, labels: Labels = {}): boolean {
    return this.metrics[name] != null && this.samples(name).some(s => matches(s.labels, labels))
  }

  /** The value of the counter or gauge sample whose labels include these; throws if none. */
  value (name: string, labels: Labels = {}): number {
    const s = this.samples(name).find(x => matches(x.labels, labels))
    if (s == null || !('value' in s)) throw new Error(`no sample of ${name} with ${JSON.stringify(labels)}`)
    return s.value
  }

  /** The sum of a counter's or gauge's samples whose labels include these. */
  sum (name: string, labels: Labels = {}): number {
    return this.samples(name).filter(s => matches(s.labels, labels)).reduce((n, s) => n + ('value' in s ? s.value : 0), 0)
  }

  /** A histogram's observation count with these labels (0 if it has no such series yet). */
  count (name: string, labels: Labels = {}): number {
    const s = this.metrics[name] == null ? undefined : this.samples(name).find(x => matches(x.labels, labels))
    if (s != null && !('count' in s)) throw new Error(`${name} is not a histogram`)
    return s?.count ?? 0
  }

  /** Every monotonic series (counters, histogram counts and sums), keyed by name and labels. */
  monotonic (): Map<string, number> {
    const out = new Map<string, number>()
    for (const [name, m] of Object.entries(this.metrics)) {
      for (const s of m.data as Array<PromData | PromHistogramData>) {
        const key = `${name}${JSON.stringify(s.labels)}`
        if (m.type === 'counter' && 'value' in s) out.set(key, s.value)
        if (m.type === 'histogram' && 'count' in s) { out.set(`${key}:count`, s.count); out.set(`${key}:sum`, s.sum ?? 0) }
      }
    }
    return out
  }
}

/**
 * Parses the text format. The parser's value pattern lacks NaN, which the format allows and which
 * prom-client writes for an event-loop lag with no samples yet; such samples are set aside by name
 * in `nan` (so a test can check that only those are NaN), and the rest is parsed strictly.
 */
export async function parseMetrics (text: string): Promise<Scrape> {
  const nan: string[] = []
  const lines = text.split('\n').filter(line => {
    if (line.startsWith('#') || !/\sNaN$/i.test(line)) return true
    nan.push(line.split(/[\s{]/)[0])
    return false
  })
  return new Scrape(await getMetricsFromIterator(lines[Symbol.iterator]()), nan)
}

export async function scrape (base: string): Promise<Scrape> {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) })
  if (res.status !== 200) throw new Error(`${base}/metrics answered ${res.status}`)
  const type = res.headers.get('content-type') ?? ''
  if (!type.startsWith('text/plain; version=0.0.4')) throw new Error(`${base}/metrics: content type ${type}`)
  return await parseMetrics(await res.text())
}

export async function health (base: string): Promise<{ status: number, ok: boolean, reason: string }> {
  const res = await fetch(`${base}/health?json`, { signal: AbortSignal.timeout(10_000) })
  const body = await res.json() as { ok: boolean, reason: string }
  return { status: res.status, ...body }
}

/** Every monotonic series that went down (or vanished) from `before` to `after`. */
export function wentDown (before: Scrape, after: Scrape): string[] {
  const now = after.monotonic()
  const down: string[] = []
  for (const [k, v] of before.monotonic()) {
    const w = now.get(k)
    if (w == null || w < v) down.push(`${k}: ${v} -> ${w ?? 'gone'}`)
  }
  return down
}
