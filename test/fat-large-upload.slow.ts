/**
 * A real upload whose table is larger than one message: 40,000 chunks of 16 bytes through real
 * vendor processes, so the client sends its commit in staged parts, and the download fetches the
 * table in pages. Byte for byte, both ways.
 *
 * Not in `npm test` (its spec takes only *.test.ts files): 80,000 chunk stores take about 5 minutes
 * on the shared 2-core machine (upload 221.6 s, download 63.9 s when it was written). Run it with
 *   npx mocha --no-config --node-option import=tsx --node-option import=./src/polyfill.ts --timeout 800000 test/fat-large-upload.slow.ts
 * test/fat-large-commit.test.ts checks the same path in the suite without moving the bytes.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { randomFile, sha256File, useCluster } from './helpers.ts'

const CHUNKS = 40_000
const CHUNK = 16

describe('an upload of more chunks than one message holds', function () {
  const net = useCluster('large-upload', { vendors: 3, fatArgs: ['--heartbeat', '1s'] }, ['alice'])

  it(`${CHUNKS.toLocaleString('en')} chunks of ${CHUNK} bytes: committed in parts, downloaded in pages, byte for byte`, async function () {
    const src = await randomFile(join(net.dir, 'many-chunks'), CHUNKS * CHUNK)
    const started = Date.now()
    const up = await net.user('alice').upload(src, { chunkSize: CHUNK })
    const upMs = Date.now() - started
    assert.equal(up.chunks, CHUNKS)
    const out = join(net.dir, 'many-chunks.out')
    const down = await net.user('alice').download(up.fileId, out)
    assert.equal(down.size, CHUNKS * CHUNK)
    assert.equal(await sha256File(out), await sha256File(src))
    this.test!.title += ` [upload ${(upMs / 1000).toFixed(1)} s, download ${((Date.now() - started - upMs) / 1000).toFixed(1)} s]`
  })
})
