import '/work/main/src/polyfill.ts'
import { streamPair } from '@libp2p/utils'
import { frames } from '/work/main/src/protocol/stream.ts'
const [a, b] = await streamPair()
const fa = frames(a, 1000), fb = frames(b, 100, 10)
await fa.write(new Uint8Array([1, 2, 3]))
console.log(await fb.read())
await fa.write(new Uint8Array(300_000))
try { console.log((await fb.read()).length) } catch (e: any) { console.log(e.name, e.constructor.name, e.message) }
const [c, d] = await streamPair()
const fc_ = frames(c, 1000), fd = frames(d, 1000)
await fc_.write(new Uint8Array(10))
try { console.log(await fd.readData(5)) } catch (e: any) { console.log(e.name, e.message) }
const [e1, e2] = await streamPair()
const x = frames(e1, 1000), y = frames(e2, 1000)
const data = new Uint8Array(600_000).map((_, i) => i & 255)
await Promise.all([x.writeData(data), y.readData(data.length).then(r => console.log('readData', r.length, r[599_999]))])
process.exit(0)
