import type * as M from '../../protocol/messages.ts'

/** Bytes one segment of a ranged download holds at most (two are in memory: one sent, one fetched). */
export const SEGMENT_BYTES = 16 * 1024 * 1024

export interface Segment {
  /** byte range in the file, end exclusive */
  start: number
  end: number
  /** the chunks that cover it, `to` exclusive */
  from: number
  to: number
}

/** Cuts bytes [start, end) of a file of `chunkSize` chunks into segments of whole chunks' worth, at least one chunk each. */
export function planSegments (start: number, end: number, chunkSize: number, segmentBytes = SEGMENT_BYTES): Segment[] {
  const out: Segment[] = []
  const perSegment = Math.max(1, Math.floor(segmentBytes / chunkSize))
  let at = start
  while (at < end) {
    const from = Math.floor(at / chunkSize)
    const to = from + perSegment
    const segEnd = Math.min(end, to * chunkSize)
    out.push({ start: at, end: segEnd, from, to: Math.ceil(segEnd / chunkSize) })
    at = segEnd
  }
  return out
}

/** Copies the part of `bytes` (found at `offset` in the file) that falls in the segment into `into`. */
export function copyInto (into: Buffer, seg: Segment, bytes: Buffer, offset: number): void {
  const a = Math.max(seg.start, offset)
  const b = Math.min(seg.end, offset + bytes.byteLength)
  if (a < b) bytes.copy(into, a - seg.start, a - offset, b - offset)
}

/** Where a ranged download sends its bytes, in order; a slow writer slows the fetching. */
export interface RangeWriter { write: (bytes: Buffer) => Promise<void> }

/**
 * Streams bytes [start, end) of a file to `to`: segment by segment, the next one fetched while
 * the current one is written, so memory holds two segments whatever the file's size, and only
 * the chunks that cover the range are fetched.
 */
export async function streamRange (table: M.FileTable, start: number, end: number, to: RangeWriter, fetch: (seg: Segment, into: Buffer) => Promise<void>): Promise<void> {
  const segments = planSegments(start, end, table.chunkSize)
  const get = (seg: Segment): Promise<Buffer> => {
    const into = Buffer.allocUnsafe(seg.end - seg.start)
    return fetch(seg, into).then(() => into)
  }
  let next = segments.length > 0 ? get(segments[0]) : undefined
  try {
    for (let s = 0; s < segments.length; s++) {
      const bytes = await (next as Promise<Buffer>)
      next = s + 1 < segments.length ? get(segments[s + 1]) : undefined
      // a failure of the prefetch surfaces when it is awaited; until then it must not go unhandled
      next?.catch(() => {})
      await to.write(bytes)
    }
  } finally {
    // no fetch outlives the call
    await next?.catch(() => {})
  }
}
