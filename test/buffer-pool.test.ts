/** The chunk-buffer pool and sealing into a caller's buffer (both on the transfer path). */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createBufferPool } from '../src/buffer-pool.ts'
import { decryptChunk, encryptChunk, nonceOf } from '../src/roles/user/cipher.ts'
import { CHUNK_OVERHEAD, MiB } from '../src/protocol/ids.ts'
import { IntegrityError } from '../src/errors.ts'

describe('buffer pool', function () {
  it('hands a given-back buffer out again, for any size of its class', function () {
    const pool = createBufferPool(64 * MiB)
    const a = pool.take(4 * MiB + CHUNK_OVERHEAD)
    assert.equal(a.byteLength, 4 * MiB + CHUNK_OVERHEAD)
    const backing = a.buffer
    pool.give(a)
    const b = pool.take(4 * MiB + 1)
    assert.equal(b.buffer, backing, 'the same memory is reused')
    assert.equal(b.byteLength, 4 * MiB + 1)
    const c = pool.take(4 * MiB + 2)
    assert.notEqual(c.buffer, backing, 'a buffer in use is not handed out twice')
  })

  it('keeps no more idle bytes than its bound, ignores a buffer given twice, and does not pool small ones', function () {
    const pool = createBufferPool(8 * MiB)
    const bufs = [pool.take(4 * MiB), pool.take(4 * MiB), pool.take(4 * MiB)]
    for (const b of bufs) pool.give(b)
    pool.give(bufs[0])
    const again = [pool.take(4 * MiB), pool.take(4 * MiB), pool.take(4 * MiB)]
    const reused = again.filter(b => bufs.some(x => x.buffer === b.buffer))
    assert.equal(reused.length, 2, 'two buffers fit under the 8 MiB bound')
    assert.equal(new Set(again.map(b => b.buffer)).size, 3, 'each taken buffer is its own')

    const small = pool.take(1000)
    assert.equal(small.byteLength, 1000)
    pool.give(small)
    const next = pool.take(1000)
    assert.ok(next.buffer !== small.buffer || next.byteOffset !== small.byteOffset, 'a small buffer is not handed out again')
  })
})

describe('sealing chunks into a given buffer', function () {
  const key = randomBytes(32)
  const fileId = 'ab'.repeat(16)

  it('gives the same bytes as sealing into a fresh buffer, and opens back into a given buffer', function () {
    for (const size of [0, 1, 255 * 1024, 256 * 1024, 256 * 1024 + 1, 3 * MiB + 7]) {
      const plain = randomBytes(size)
      const fresh = encryptChunk(key, fileId, 3, plain)
      const out = Buffer.alloc(size + CHUNK_OVERHEAD, 0xee)
      const into = encryptChunk(key, fileId, 3, plain, nonceOf(fresh), out)
      assert.equal(into, out)
      assert.ok(into.equals(fresh), `size ${size}: same ciphertext`)
      const back = Buffer.alloc(size, 0xee)
      assert.ok(decryptChunk(key, fileId, 3, into, back).equals(plain), `size ${size}: opens to the plaintext`)
      assert.ok(decryptChunk(key, fileId, 3, into).equals(plain))
    }
  })

  it('refuses an output of the wrong size, and a chunk opened at another position', function () {
    const plain = randomBytes(1000)
    assert.throws(() => encryptChunk(key, fileId, 0, plain, undefined, Buffer.alloc(1000)), RangeError)
    const sealed = encryptChunk(key, fileId, 0, plain)
    assert.throws(() => decryptChunk(key, fileId, 0, sealed, Buffer.alloc(1001)), RangeError)
    assert.throws(() => decryptChunk(key, fileId, 1, sealed, Buffer.alloc(1000)), IntegrityError)
    sealed[20] ^= 1
    assert.throws(() => decryptChunk(key, fileId, 0, sealed), IntegrityError)
  })
})
