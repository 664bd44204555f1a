import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, Connection, Stream, AbortOptions } from '@libp2p/interface'
import { UnreachableError, StorError, codeOf, MalformedMessageError, LimitError } from '../errors.ts'
import { RateLimiter } from './rate.ts'
import type { Logger } from '../logger.ts'
import { decode, decodeReply, encode } from './codec.ts'
import type { Check } from './schema.ts'
import type { Message } from './messages.ts'
import { frames, type FrameStream } from './stream.ts'

/** Whom to dial: a full multiaddr (with /p2p/), or a peer id with the addresses it announced. */
export type Target = Multiaddr | { peer: string, addrs: string[] }

export function describe (target: Target): string {
  return 'peer' in target ? target.peer : target.toString()
}

export async function openStream (node: Libp2p, target: Target, protocol: string, opts: AbortOptions): Promise<Stream> {
  try {
    if ('peer' in target) {
      const id = peerIdFromString(target.peer)
      if (target.addrs.length > 0) {
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
}

export interface ServeOptions<C> {
  checks: Record<string, C>
  maxMessage: number
  maxBuffer?: number
  maxInboundStreams: number
  timeoutMs: number
  log: Logger
  /** Requests one peer may make per second on this protocol (with a burst of twice as many). */
  ratePerSecond?: number
  /** Peers the rate limit does not apply to (e.g. replicas relaying many users' requests). */
  unlimited?: (peer: string) => boolean
  /** Told of every request once answered: its type (or `malformed`), `ok` or the error code, and how long it took. */
  onServed?: Served
}

/** A served request, for metrics: protocol, request type, `ok` or the error code, seconds. */
export type Served = (protocol: string, request: string, outcome: string, seconds: number) => void

/**
 * Handles a protocol: reads one request, decodes it strictly, and sends the handler's reply, or an
 * error reply naming what was wrong. A bad peer never takes the node down.
 */
export async function serve<C extends Check<any>> (node: Libp2p, protocol: string, opts: ServeOptions<C>, handler: (req: Request<Message<C>>) => Promise<object | undefined>): Promise<void> {
  const rate = new RateLimiter(opts.ratePerSecond ?? 500, 2 * (opts.ratePerSecond ?? 500))
  await node.handle(protocol, async (stream, connection) => {
    const signal = AbortSignal.timeout(opts.timeoutMs)
    const started = performance.now()
    let request = 'malformed'
    let outcome = 'ok'
    const remotePeer = connection.remotePeer.toString()
    const fs = frames(stream, opts.maxMessage, opts.maxBuffer)
    let reply: object | undefined
    try {
      if (opts.unlimited?.(remotePeer) !== true && !rate.take(remotePeer)) throw new LimitError(`too many requests on ${protocol}; slow down and try again`)
      const msg = decode(await fs.read({ signal }), opts.checks, opts.maxMessage)
      request = msg.t
      reply = await handler({ msg, remotePeer, connection, fs, signal })
    } catch (err: any) {
      const code = codeOf(err)
      outcome = code
      if (code === 'ERR_INTERNAL' && !(err instanceof MalformedMessageError)) opts.log.error('%s from %s failed: %s', protocol, remotePeer, err.stack ?? err)
      else opts.log('%s from %s refused: %s', protocol, remotePeer, err.message)
      reply = { t: 'error', code: code === 'ERR_INTERNAL' ? 'ERR_INTERNAL' : code, message: code === 'ERR_INTERNAL' ? `internal error: ${String(err.message ?? err).slice(0, 900)}` : String(err.message).slice(0, 1000) }
    }
    try {
      if (reply != null) await fs.write(encode(reply), { signal })
      await stream.close({ signal })
    } catch (err: any) {
      opts.log('%s to %s: reply not delivered: %s', protocol, remotePeer, err.message)
      stream.abort(err)
    }
    opts.onServed?.(protocol, request, outcome, (performance.now() - started) / 1000)
  }, { maxInboundStreams: opts.maxInboundStreams, runOnLimitedConnection: false })
}
