// The sending end of the raw libp2p stream benchmark: one stream, the product's libp2p config
// (TCP + noise + yamux), to a receiver in another process (bench/raw-peer.ts).
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { byteStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode, type StorNode } from '../src/node/index.ts'
import { drained } from '../src/protocol/stream.ts'
import { RAW_PROTOCOL } from './raw-protocol.ts'

export interface RawPeer {
  readonly addr: string
  readonly child: ChildProcess
  stderr: () => string
  stop: () => Promise<void>
}

/** Starts bench/raw-peer.js (next to this module, compiled) and waits for its address. */
export async function startRawPeer (timeoutMs = 30_000): Promise<RawPeer> {
  const here = dirname(fileURLToPath(import.meta.url))
  const script = join(here, 'raw-peer.js')
  if (!existsSync(script)) throw new Error(`${script} is missing: build first (npx tsc -p tsconfig.json)`)
  // stdin stays a pipe: the peer exits when it closes, so it cannot outlive this process
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } })
  let err = ''
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  const stop = async (): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(t)
  }
  const addrs: string[] = []
  const lines = createInterface({ input: child.stdout! })
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`raw-peer did not start within ${timeoutMs} ms: ${err}`)) }, timeoutMs)
      lines.on('line', line => {
        const [word, value] = line.split(' ')
        if (word === 'listen') addrs.push(value)
        if (word === 'ready') { clearTimeout(timer); resolve() }
      })
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`raw-peer exited with ${code} before it was ready: ${err}`)) })
    })
  } catch (e) {
    child.kill('SIGKILL')
    await exited
    throw e
  }
  const addr = addrs.find(a => a.includes('/127.0.0.1/')) ?? addrs[0]
  if (addr == null) { await stop(); throw new Error('raw-peer printed no address') }
  return { addr, child, stderr: () => err, stop }
}

export interface RawResult {
  writeSize: number
  bytes: number
  seconds: number
  MBs: number
  /** Throughput as the receiver saw it, first to last data byte. */
  receiverMBs: number
  /** Largest number of bytes the sender's stream held queued: stays small if back-pressure works. */
  maxQueued: number
  drains: number
  /** Largest resident set of the sending process during the run. */
  maxRss: number
}

/** Sends `total` bytes in `writeSize` writes on one new stream and waits for the receiver's count. */
export async function sendRaw (node: StorNode, addr: string, total: number, writeSize: number, signal: AbortSignal): Promise<RawResult> {
  const stream = await node.dialProtocol(multiaddr(addr), RAW_PROTOCOL, { signal })
  try {
    // attach the reader before anything is sent, so the reply cannot be missed
    const bytes = byteStream(stream)
    const block = randomBytes(writeSize)
    const head = Buffer.alloc(8)
    head.writeBigUInt64BE(BigInt(total), 0)
    let maxQueued = 0
    let drains = 0
    let maxRss = process.memoryUsage.rss()
    const start = performance.now()
    if (!stream.send(head)) { drains++; await drained(stream, signal) }
    for (let sent = 0; sent < total;) {
      const n = Math.min(writeSize, total - sent)
      const ok = stream.send(n === writeSize ? block : block.subarray(0, n))
      sent += n
      if (stream.writeBufferLength > maxQueued) maxQueued = stream.writeBufferLength
      const rss = process.memoryUsage.rss()
      if (rss > maxRss) maxRss = rss
      if (!ok) { drains++; await drained(stream, signal) }
    }
    const reply = await bytes.read({ bytes: 16, signal })
    const seconds = (performance.now() - start) / 1000
    const r = Buffer.from(reply.subarray())
    const got = Number(r.readBigUInt64BE(0))
    const micros = Number(r.readBigUInt64BE(8))
    if (got !== total) throw new Error(`receiver counted ${got} of ${total} bytes`)
    await stream.close({ signal }).catch(() => {})
    return { writeSize, bytes: total, seconds, MBs: total / 1e6 / seconds, receiverMBs: micros > 0 ? total / micros : 0, maxQueued, drains, maxRss }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** A sender node with the product's libp2p config, connected to `addr`. */
export async function rawSender (addr: string, signal: AbortSignal): Promise<StorNode> {
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], dhtServer: false })
  try {
    await node.dial(multiaddr(addr), { signal })
    return node
  } catch (err) {
    await node.stop()
    throw err
  }
}
