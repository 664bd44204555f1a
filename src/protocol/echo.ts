import type { Libp2p, Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { StorError, UnreachableError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { decode, decodeReply, encode } from './codec.ts'
import { ECHO_PROTOCOL, MAX_VENDOR_MESSAGE } from './ids.ts'
import * as M from './messages.ts'
import { RateLimiter } from './rate.ts'
import { openStream, describe, type Target } from './rpc.ts'
import { frames } from './stream.ts'

/** Echo messages are control messages of the vendor protocols. */
const MAX_ECHO_MESSAGE = MAX_VENDOR_MESSAGE

export interface EchoServeOptions {
  log: Logger
  /** Test only: every answer waits this long first, to play a slow or distant vendor. */
  delayMs?: number
}

/** Answers echoes on one stream, at most MAX_ECHOES of them, each after `delayMs`. */
export async function serveEcho (node: Libp2p, opts: EchoServeOptions): Promise<void> {
  const rate = new RateLimiter(50, 100)
  await node.handle(ECHO_PROTOCOL, async (stream, connection) => {
    const remotePeer = connection.remotePeer.toString()
    const fs = frames(stream, MAX_ECHO_MESSAGE, 4 * 1024)
    const signal = AbortSignal.timeout(30_000)
    try {
      if (!rate.take(remotePeer)) throw new Error('too many echo streams')
      for (let i = 0; i < M.MAX_ECHOES; i++) {
        let frame: Uint8Array
        try { frame = await fs.read({ signal }) } catch { break }
        const msg = decode(frame, { echo: M.Echo }, MAX_ECHO_MESSAGE)
        if ((opts.delayMs ?? 0) > 0) await new Promise(resolve => setTimeout(resolve, opts.delayMs))
        await fs.write(encode({ t: 'echo', seq: msg.seq }), { signal })
      }
      await stream.close({ signal })
    } catch (err: any) {
      opts.log('echo from %s: %s', remotePeer, err.message)
      stream.abort(err)
    }
  }, { maxInboundStreams: 8, runOnLimitedConnection: false })
}

export interface EchoResult {
  /** Round trips in milliseconds, in the order taken. */
  rtts: number[]
  /** 1 on a direct connection; each relay on the way adds one. */
  hops: number
}

/**
 * How many hops a connection takes: a direct one is 1; a relayed one (`direct` false or `limits`
 * set) is 1 plus the number of /p2p-circuit/ in its remote address (at least one relay).
 */
export function hopCount (conn: Pick<Connection, 'direct' | 'limits' | 'remoteAddr'>): number {
  if (conn.direct !== false && conn.limits == null) return 1
  const circuits = conn.remoteAddr.getComponents().filter(c => c.name === 'p2p-circuit').length
  return 1 + Math.max(1, circuits)
}

/** Sends `samples` echoes over one stream and times each round trip; the first opens the stream. */
export async function echo (node: Libp2p, target: Target, samples: number, signal: AbortSignal): Promise<EchoResult> {
  const stream = await openStream(node, target, ECHO_PROTOCOL, { signal })
  try {
    const fs = frames(stream, MAX_ECHO_MESSAGE, 4 * 1024)
    const rtts: number[] = []
    for (let seq = 0; seq < Math.min(samples, M.MAX_ECHOES); seq++) {
      const t0 = performance.now()
      await fs.write(encode({ t: 'echo', seq }), { signal })
      const reply = decodeReply(await fs.read({ signal }), { echo: M.Echo }, MAX_ECHO_MESSAGE)
      if (reply.seq !== seq) throw new UnreachableError(`echo ${seq} answered as ${reply.seq}`)
      rtts.push(performance.now() - t0)
    }
    await stream.close({ signal }).catch(() => {})
    const peer = 'peer' in target ? target.peer : target.getComponents().find(c => c.name === 'p2p')?.value ?? ''
    const conns = peer !== '' ? node.getConnections(peerIdFromString(peer)) : []
    const hops = conns.length === 0 ? 1 : Math.min(...conns.map(hopCount))
    return { rtts, hops }
  } catch (err: any) {
    stream.abort(err)
    if (err instanceof StorError) throw err
    throw new UnreachableError(`echo with ${describe(target)} failed: ${err.message ?? err}`)
  }
}
