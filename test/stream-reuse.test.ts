/**
 * Store and fetch 3.0.0 carry many requests on one stream: the serving side (rpc.ts `serve` with
 * `reuse`) and the client's StreamPool, between two real libp2p nodes over loopback TCP.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createNode, type StorNode } from '../src/node/index.ts'
import { encode } from '../src/protocol/codec.ts'
import * as M from '../src/protocol/messages.ts'
import { openStream, serve, type Request, type Target } from '../src/protocol/rpc.ts'
import { StreamPool } from '../src/protocol/stream-pool.ts'
import { frames, type FrameStream } from '../src/protocol/stream.ts'
import { logger } from '../src/logger.ts'
import { eventually } from './helpers.ts'

const PROTOCOL = '/stor/test/many/1.0.0'
const REUSE = { maxRequests: 3, idleMs: 1500 }
const text = (b: Uint8Array): any => JSON.parse(new TextDecoder().decode(b))

describe('many requests on one stream (store and fetch 3.0.0)', function () {
  let server: StorNode
  let client: StorNode
  let target: Target
  /** every request the server handled, with the stream it came on */
  let seen: Array<Request<M.Message<typeof M.Ok>>>

  before(async function () {
    server = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false })
    client = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], dhtServer: false })
    await serve(server, PROTOCOL, { checks: { ok: M.Ok }, maxMessage: 1024, maxInboundStreams: 16, timeoutMs: 10_000, log: logger('stor:test'), reuse: REUSE }, async req => {
      seen.push(req)
      return { t: 'ok' }
    })
    target = server.getMultiaddrs()[0]
  })
  after(async function () {
    await client?.stop()
    await server?.stop()
  })
  beforeEach(function () { seen = [] })

  const ask = async (fs: FrameStream): Promise<any> => {
    await fs.write(encode({ t: 'ok' }))
    return text(await fs.read({ signal: AbortSignal.timeout(10_000) }))
  }

  it('a pool sends requests on kept streams, retiring each one short of the server limit', async function () {
    const pool = new StreamPool(client, REUSE, 4)
    for (let i = 0; i < 7; i++) assert.deepEqual(await pool.use(target, PROTOCOL, 1024, 1024, {}, ask), { t: 'ok' })
    await pool.close()
    assert.equal(seen.length, 7)
    const streams = new Set(seen.map(r => r.fs))
    assert.equal(streams.size, 4, 'two requests per stream: 7 requests on 4 streams')
    // a reply counts as delivered once the next request came on its stream, or the stream closed cleanly
    assert.deepEqual(await Promise.all(seen.map(async r => await r.delivered)), seen.map(() => true))
  })

  it('a request aborted by its signal loses its stream, and its reply is not counted as delivered', async function () {
    const pool = new StreamPool(client, REUSE, 4)
    await pool.use(target, PROTOCOL, 1024, 1024, {}, ask)
    const ctrl = new AbortController()
    await assert.rejects(pool.use(target, PROTOCOL, 1024, 1024, { signal: ctrl.signal }, async fs => {
      await ask(fs)
      ctrl.abort(new Error('the caller gave up'))
      await new Promise(resolve => setTimeout(resolve, 50))
      throw ctrl.signal.reason
    }), /the caller gave up/)
    assert.equal(seen.length, 2)
    assert.equal(seen[0].fs, seen[1].fs, 'the second request went on the kept stream')
    assert.equal(await seen[0].delivered, true)
    assert.equal(await seen[1].delivered, false, 'the stream was aborted after the second reply')
    // the next request opens a new stream
    await pool.use(target, PROTOCOL, 1024, 1024, {}, ask)
    assert.notEqual(seen[2].fs, seen[1].fs)
    await pool.close()
  })

  it('the server answers at most maxRequests on one stream, then closes it', async function () {
    const fs = frames(await openStream(client, target, PROTOCOL, {}), 1024)
    for (let i = 0; i < REUSE.maxRequests; i++) assert.deepEqual(await ask(fs), { t: 'ok' })
    await fs.write(encode({ t: 'ok' })).catch(() => {})
    await assert.rejects(fs.read({ signal: AbortSignal.timeout(10_000) }), /ended|closed|reset/i)
    fs.stream.abort(new Error('done'))
  })

  it('garbage after a good request gets an error reply and ends the stream', async function () {
    const fs = frames(await openStream(client, target, PROTOCOL, {}), 1024)
    assert.deepEqual(await ask(fs), { t: 'ok' })
    await fs.write(new TextEncoder().encode('{"t":"ok","extra":1}'))
    const reply = text(await fs.read({ signal: AbortSignal.timeout(10_000) }))
    assert.equal(reply.t, 'error')
    assert.equal(reply.code, 'ERR_MALFORMED')
    await fs.write(encode({ t: 'ok' })).catch(() => {})
    await assert.rejects(fs.read({ signal: AbortSignal.timeout(10_000) }), /ended|closed|reset/i, 'no request is taken after an error')
    fs.stream.abort(new Error('done'))
  })

  it('the server closes a stream idle for idleMs', async function () {
    const fs = frames(await openStream(client, target, PROTOCOL, {}), 1024)
    assert.deepEqual(await ask(fs), { t: 'ok' })
    await eventually('the server closed the idle stream', async () => fs.stream.remoteWriteStatus !== 'writable', 10_000)
    assert.equal(await seen[0].delivered, false, 'an idle end does not prove the reply arrived')
    fs.stream.abort(new Error('done'))
  })
})
