import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, Connection, Stream, AbortOptions } from '@libp2p/interface'
import { UnreachableError, StorError, codeOf, MalformedMessageError, LimitError } from '../errors.ts'
import { RateLimiter } from './rate.ts'
import type { Logger } from '../logger.ts'
import { decode, decodeReply, encode } from './codec.ts'
import type { Check } from './schema.ts'
import type { Message } from './messages.ts'
import { frames, StreamEndedError, type FrameStream } from './stream.ts'

/** Whom to dial: a full multiaddr (with /p2p/), or a peer id with the addresses it announced. */
export type Target = Multiaddr | { peer: string, addrs: string[] }

export function describe (target: Target): string {
  return 'peer' in target ? target.peer : target.toString()
}

export async function openStream (node: Libp2p, target: Target, protocol: string, opts: AbortOptions): Promise<Stream> {
  try {
    if ('peer' in target) {
      const id = peerIdFromString(target.peer)
      // the addresses matter only for a new connection; recording them for every stream on an open
      // one was a peer-store write per chunk (7% of an upload's CPU with small chunks)
      if (target.addrs.length > 0 && node.getConnections(id).length === 0) {
        await node.peerStore.merge(id, { multiaddrs: target.addrs.map(a => multiaddr(a)) })
      }
      return await node.dialProtocol(id, protocol, opts)
    }
    return await node.dialProtocol(target, protocol, opts)
  } catch (err: any) {
    throw new UnreachableError(`cannot reach ${describe(target)} for ${protocol}: ${err.message ?? err}`)
  }
}

export interface CallOptions extends AbortOptions {
  maxReply: number
}

/** One request, one reply, on a fresh stream. */
export async function call<C extends Check<any>> (node: Libp2p, target: Target, protocol: string, msg: object, expected: Record<string, C>, opts: CallOptions): Promise<Message<C>> {
  const stream = await openStream(node, target, protocol, opts)
  try {
    const fs = frames(stream, opts.maxReply)
    await fs.write(encode(msg), opts)
    const reply = await fs.read(opts)
    await stream.close(opts).catch(() => {})
    return decodeReply(reply, expected, opts.maxReply)
  } catch (err: any) {
    stream.abort(err)
    if (err instanceof StorError) throw err
    throw new UnreachableError(`${describe(target)} did not answer on ${protocol}: ${err.message ?? err}`)
  }
}

export interface Request<M> {
  msg: M
  remotePeer: string
  connection: Connection
  fs: FrameStream
  signal: AbortSignal
  /**
   * Resolves true once the peer provably holds the whole reply (it sent its next request on the
   * stream, or closed the stream cleanly), false if that cannot be known (the stream failed or
   * went idle). Until then, bytes of the reply may still be queued below the stream.
   */
  delivered: Promise<boolean>
}

/** Many requests, one after the other, on one stream (see `serve`). */
export interface Reuse {
  /** Requests a stream may carry; then the server closes it (the client retires it first). */
  maxRequests: number
  /** How long the server waits for the next request before it closes the stream. */
  idleMs: number
}

export interface ServeOptions<C> {
  checks: Record<string, C>
  maxMessage: number
  maxBuffer?: number
  maxInboundStreams: number
  /** Time for one request and its reply. */
  timeoutMs: number
  log: Logger
  /** Requests one peer may make per second on this protocol (with a burst of twice as many). */
  ratePerSecond?: number
  /** Peers the rate limit does not apply to (e.g. replicas relaying many users' requests). */
  unlimited?: (peer: string) => boolean
  /** Keep the stream for further requests after a reply (default: one request per stream). */
  reuse?: Reuse
  /** Told of every request once answered: its type (or `malformed`), `ok` or the error code, and how long it took. */
  onServed?: Served
}

/** The error reply for a failed request: what went wrong, without internals for anything but an internal error. */
function errorReply (err: any): object {
  const code = codeOf(err)
  return { t: 'error', code: code === 'ERR_INTERNAL' ? 'ERR_INTERNAL' : code, message: code === 'ERR_INTERNAL' ? `internal error: ${String(err.message ?? err).slice(0, 900)}` : String(err.message).slice(0, 1000) }
}

/** A served request, for metrics: protocol, request type, `ok` or the error code, seconds. */
export type Served = (protocol: string, request: string, outcome: string, seconds: number) => void

/**
 * Handles a protocol: reads a request, decodes it strictly, and sends the handler's reply, or an
 * error reply naming what was wrong. A bad peer never takes the node down. With `reuse`, the
 * stream then waits for the peer's next request, up to `maxRequests`; after an error reply, a
 * clean end, or `idleMs` without a request, it is closed.
 */
export async function serve<C extends Check<any>> (node: Libp2p, protocol: string, opts: ServeOptions<C>, handler: (req: Request<Message<C>>) => Promise<object | undefined>): Promise<void> {
  const rate = new RateLimiter(opts.ratePerSecond ?? 500, 2 * (opts.ratePerSecond ?? 500))
  const maxRequests = opts.reuse?.maxRequests ?? 1
  await node.handle(protocol, async (stream, connection) => {
    const remotePeer = connection.remotePeer.toString()
    // a kept stream outlives each request's signal, which aborts it only while its request runs
    const fs = frames(stream, opts.maxMessage, opts.maxBuffer, { linkSignals: opts.reuse == null })
    // the last reply's delivery, settled when the next request arrives or the stream ends: a clean
    // close of both ends means the peer read everything
    let settle: (ok: boolean) => void = () => {}
    stream.addEventListener('close', (evt: any) => { settle(evt?.error == null) }, { once: true })
    try {
      for (let n = 0; n < maxRequests; n++) {
        let frame: Uint8Array
        if (n === 0) {
          frame = await fs.read({ signal: AbortSignal.timeout(opts.timeoutMs) }).catch(err => err)
        } else {
          // between requests: a clean end or a long silence closes the stream without a reply
          const next = await fs.read({ signal: AbortSignal.timeout((opts.reuse as Reuse).idleMs) }).catch(err => err)
          if (next instanceof Error) {
            const ended = next instanceof StreamEndedError && fs.pending() === 0
            settle(ended)
            if (ended) await stream.close().catch(() => {})
            else stream.abort(next)
            return
          }
          frame = next
        }
        settle(true)
        const started = performance.now()
        let request = 'malformed'
        let outcome = 'ok'
        const delivered = new Promise<boolean>(resolve => { settle = resolve })
        const signal = AbortSignal.timeout(opts.timeoutMs)
        const onTimeout = (): void => { stream.abort(new Error(`${protocol}: the request took longer than ${opts.timeoutMs} ms`)) }
        signal.addEventListener('abort', onTimeout, { once: true })
        let reply: object | undefined
        let failed = false
        try {
          if (frame instanceof Error) throw frame
          if (opts.unlimited?.(remotePeer) !== true && !rate.take(remotePeer)) throw new LimitError(`too many requests on ${protocol}; slow down and try again`)
          const msg = decode(frame, opts.checks, opts.maxMessage)
          request = msg.t
          reply = await handler({ msg, remotePeer, connection, fs, signal, delivered })
        } catch (err: any) {
          failed = true
          outcome = codeOf(err)
          if (outcome === 'ERR_INTERNAL' && !(err instanceof MalformedMessageError)) opts.log.error('%s from %s failed: %s', protocol, remotePeer, err.stack ?? err)
          else opts.log('%s from %s refused: %s', protocol, remotePeer, err.message)
          reply = errorReply(err)
        }
        try {
          if (reply != null) await fs.write(encode(reply), { signal })
        } finally {
          signal.removeEventListener('abort', onTimeout)
          opts.onServed?.(protocol, request, outcome, (performance.now() - started) / 1000)
        }
        // after an error the two ends may no longer agree where a frame starts: no further requests
        if (failed) break
      }
      await stream.close({ signal: AbortSignal.timeout(opts.timeoutMs) })
    } catch (err: any) {
      opts.log('%s to %s: reply not delivered: %s', protocol, remotePeer, err.message)
      settle(false)
      stream.abort(err)
    }
  }, { maxInboundStreams: opts.maxInboundStreams, runOnLimitedConnection: false })
}
