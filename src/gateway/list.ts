/** One page of a bucket listing, as S3 computes it. */
export interface ListPage<T> {
  contents: Array<{ key: string, value: T }>
  prefixes: string[]
  truncated: boolean
  /** the last key or common prefix of the page: where the next page starts after */
  last?: string
}

/**
 * S3's listing over keys sorted in byte order: those after `after` that start with `prefix`; with a
 * delimiter, the keys that hold it past the prefix are rolled up into one common prefix each.
 * Keys and common prefixes together count towards `maxKeys`.
 */
export function listKeys<T> (entries: Array<{ key: string, value: T }>, opts: { prefix?: string, delimiter?: string, after?: string, maxKeys: number }): ListPage<T> {
  const prefix = opts.prefix ?? ''
  const delimiter = opts.delimiter ?? ''
  const sorted = [...entries].sort((a, b) => compareKeys(a.key, b.key))
  const page: ListPage<T> = { contents: [], prefixes: [], truncated: false }
  // max-keys 0 asks for nothing, and S3 says nothing was left out
  if (opts.maxKeys === 0) return page
  for (const e of sorted) {
    if (opts.after != null && compareKeys(e.key, opts.after) <= 0) continue
    if (!e.key.startsWith(prefix)) continue
    let common: string | undefined
    if (delimiter !== '') {
      const i = e.key.indexOf(delimiter, prefix.length)
      if (i >= 0) common = e.key.slice(0, i + delimiter.length)
    }
    // a common prefix already given, or the one the previous page ended with, covers this key
    if (common != null && (common === page.prefixes[page.prefixes.length - 1] || common === opts.after)) continue
    if (page.contents.length + page.prefixes.length >= opts.maxKeys) { page.truncated = true; break }
    if (common != null) { page.prefixes.push(common); page.last = common } else { page.contents.push(e); page.last = e.key }
  }
  return page
}

/** S3 orders keys by their UTF-8 bytes. */
export function compareKeys (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}
