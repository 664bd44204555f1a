import type { AbortOptions, Libp2p, Stream } from '@libp2p/interface'
import { describe, openStream, type Reuse, type Target } from './rpc.ts'
import { frames, type FrameStream } from './stream.ts'

/** A stream between requests, and how many requests it has carried. */
interface Kept { fs: FrameStream, uses: number, since: number }

/** Can the stream carry another request? Both ends open, nothing left unread from the last one. */
function usable (fs: FrameStream): boolean {
  const s: Stream = fs.stream
  return s.status === 'open' && s.writeStatus === 'writable' && s.remoteWriteStatus === 'writable' && fs.pending() === 0
}

/**
 * Streams kept open between requests to the same peer on a protocol served with `reuse` (see
 * rpc.ts `serve`), so that many chunks to one vendor share a few streams instead of opening one
 * each: a new stream costs both ends a muxer handshake, a protocol negotiation and their frames.
 * A stream goes back only after a request that ended cleanly; after any failure it is aborted.
 * It is retired before the server's request limit, and closed after `idleMs` unused, well before
 * the server gives up on it.
 */
export class StreamPool {
  private readonly idle = new Map<string, Kept[]>()
  private sweeper: NodeJS.Timeout | undefined

  /** `server` is what the serving side allows; this side closes idle streams at half its idle time. */
  constructor (private readonly node: Libp2p, private readonly server: Reuse, private readonly maxIdlePerPeer: number) {}

  /**
   * Runs one request on a kept stream to `target`, or a new one. `opts.signal` aborts the stream
   * while the request runs, and only then.
   */
  async use<T> (target: Target, protocol: string, maxFrame: number, maxBuffer: number, opts: AbortOptions, fn: (fs: FrameStream) => Promise<T>): Promise<T> {
    opts.signal?.throwIfAborted()
    const key = `${describe(target)}\n${protocol}`
    const kept = this.take(key) ?? { fs: frames(await openStream(this.node, target, protocol, opts), maxFrame, maxBuffer, { linkSignals: false }), uses: 0, since: 0 }
    const { stream } = kept.fs
    const signal = opts.signal
    const onAbort = (): void => { stream.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const result = await fn(kept.fs)
      kept.uses++
      this.give(key, kept)
      return result
    } catch (err: any) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Closes every kept stream (a graceful end: the server counts what it sent as delivered). */
  async close (): Promise<void> {
    const all = [...this.idle.values()].flat()
    this.idle.clear()
    clearInterval(this.sweeper)
    this.sweeper = undefined
    await Promise.all(all.map(async k => { await this.retire(k) }))
  }

  private take (key: string): Kept | undefined {
    const list = this.idle.get(key)
    while (list != null && list.length > 0) {
      const k = list.pop() as Kept
      if (usable(k.fs)) return k
      void this.retire(k)
    }
    return undefined
  }

  private give (key: string, kept: Kept): void {
    const list = this.idle.get(key) ?? []
    // one request short of the server's limit, so the server never closes a stream this side still offers
    if (kept.uses >= this.server.maxRequests - 1 || !usable(kept.fs) || list.length >= this.maxIdlePerPeer) {
      void this.retire(kept)
      return
    }
    kept.since = Date.now()
    list.push(kept)
    this.idle.set(key, list)
    this.sweeper ??= setInterval(() => { this.sweep() }, this.server.idleMs / 4).unref()
  }

  private sweep (): void {
    const old = Date.now() - this.server.idleMs / 2
    for (const [key, list] of this.idle) {
      const fresh = list.filter(k => k.since > old)
      for (const k of list) if (k.since <= old) void this.retire(k)
      if (fresh.length > 0) this.idle.set(key, fresh)
      else this.idle.delete(key)
    }
    if (this.idle.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }

  private async retire (k: Kept): Promise<void> {
    await k.fs.stream.close({ signal: AbortSignal.timeout(2000) }).catch(err => { k.fs.stream.abort(err) })
  }
}
