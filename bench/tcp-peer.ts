// The receiving end of the plain TCP benchmark, run as its own process by bench/index.ts: prints
// `port <n>` and `ready`; on each connection reads an 8-byte big-endian count, counts that many
// bytes and answers with the count (8 bytes). Exits when its stdin closes or on SIGTERM.
import { createServer } from 'node:net'

const server = createServer(socket => {
  let need = -1
  let got = 0
  let head = Buffer.alloc(0)
  socket.on('data', (d: Buffer) => {
    if (need < 0) {
      head = Buffer.concat([head, d])
      if (head.byteLength < 8) return
      need = Number(head.readBigUInt64BE(0))
      d = head.subarray(8)
    }
    got += d.byteLength
    if (got >= need) {
      const reply = Buffer.alloc(8)
      reply.writeBigUInt64BE(BigInt(got), 0)
      socket.end(reply)
    }
  })
  socket.on('error', () => {})
})
server.listen(0, '127.0.0.1', () => {
  const addr = server.address()
  process.stdout.write(`port ${typeof addr === 'object' && addr != null ? addr.port : 0}\nready\n`)
})
const stop = (): void => { server.close(); process.exit(0) }
process.on('SIGTERM', stop)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
