// The receiving end of the raw libp2p stream benchmark, run as its own process by bench/index.ts.
// Prints `listen <multiaddr>` lines and `ready`, then on RAW_PROTOCOL reads an 8-byte big-endian
// byte count, counts that many bytes, and replies with 16 bytes: the bytes received and the
// microseconds between the first and last data byte. Exits when its stdin closes (the parent is
// gone) or on SIGTERM/SIGINT.
import '../src/polyfill.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { byteStream } from '@libp2p/utils'
import { createNode } from '../src/node/index.ts'
import { RAW_PROTOCOL } from './raw-protocol.ts'

const MiB = 1024 * 1024

async function main (): Promise<void> {
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false })

  await node.handle(RAW_PROTOCOL, async (stream) => {
    // byteStream attaches its 'message' listener now, before any data can be missed
    const bytes = byteStream(stream, { maxBufferSize: 64 * MiB })
    try {
      const head = await bytes.read({ bytes: 8, signal: AbortSignal.timeout(60_000) })
      const total = Number(Buffer.from(head.subarray()).readBigUInt64BE(0))
      let got = 0
      let first = 0
      const signal = AbortSignal.timeout(600_000)
      while (got < total) {
        const part = await bytes.read({ signal })
        if (part == null) throw new Error(`stream ended after ${got} of ${total} bytes`)
        if (first === 0) first = performance.now()
        got += part.byteLength
      }
      const micros = Math.round((performance.now() - first) * 1000)
      const reply = Buffer.alloc(16)
      reply.writeBigUInt64BE(BigInt(got), 0)
      reply.writeBigUInt64BE(BigInt(micros), 8)
      await bytes.write(reply)
      await stream.close()
    } catch (err: any) {
      process.stderr.write(`raw-peer: ${err.stack ?? err}\n`)
      stream.abort(err)
    }
  }, { maxInboundStreams: 4 })

  process.stdout.write(`peer ${node.peerId.toString()}\n${node.getMultiaddrs().map(a => `listen ${a.toString()}\n`).join('')}ready\n`)

  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    const t = setTimeout(() => process.exit(0), 3000)
    t.unref()
    Promise.resolve(node.stop()).finally(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  // the parent holds our stdin open; when it dies, so do we
  process.stdin.on('end', stop)
  process.stdin.on('close', stop)
  process.stdin.resume()
}

main().catch(err => {
  process.stderr.write(`raw-peer: ${err.stack ?? err}\n`)
  process.exit(1)
})
