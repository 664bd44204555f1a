/**
 * Ctrl-C ends a command within about a second whatever the network does: here the only FAT named
 * is a socket that accepts connections and never answers, so the command would otherwise wait on
 * it for its whole failover time.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { binPath } from '../src/cluster.ts'
import { randomFile, tempDir } from './helpers.ts'

describe('Ctrl-C', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let server: Server
  const sockets: Socket[] = []

  before(async function () {
    tmp = await tempDir('interrupt')
    server = createServer(s => { sockets.push(s) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  })

  after(async function () {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
    await tmp.remove()
  })

  it('ends an upload stuck on a FAT that never answers within a second or so, exit code 130', async function () {
    const port = (server.address() as { port: number }).port
    const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const file = await randomFile(join(tmp.dir, 'f'), 1000)
    const child = spawn(process.execPath, [binPath(), 'upload', file, '--bootstrap', `/ip4/127.0.0.1/tcp/${port}/p2p/${peer}`, '--data-dir', join(tmp.dir, 'user')], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', d => { stderr += d })
    const exited = new Promise<number | null>(resolve => child.once('exit', code => { resolve(code) }))
    // the command is under way, its dial hanging on the silent socket
    await new Promise(resolve => setTimeout(resolve, 2000))
    assert.equal(child.exitCode, null, `the command ended by itself: ${stderr}`)
    const at = Date.now()
    child.kill('SIGINT')
    const code = await exited
    const took = Date.now() - at
    this.test!.title += ` [${took} ms]`
    assert.equal(code, 130, stderr)
    assert.match(stderr, /interrupted; run the same command again to resume/)
    assert.ok(took < 2500, `the command took ${took} ms to end after Ctrl-C`)
  })
})
