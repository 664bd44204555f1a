/** Direct file I/O (store/direct.ts) and the page-aligned buffers it needs. */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createBufferPool, PAGE_ALIGN } from '../src/buffer-pool.ts'
import { DIRECT_ALIGN, openDirect, readAt, writeAt } from '../src/store/direct.ts'
import { Devices } from '../src/store/devices.ts'
import { IntegrityError } from '../src/errors.ts'
import { MiB } from '../src/protocol/ids.ts'
import { logger } from '../src/logger.ts'
import { tempDir } from './helpers.ts'

describe('direct file I/O', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  before(async function () { tmp = await tempDir('direct') })
  after(async function () { await tmp.remove() })

  it('an aligned pool hands out buffers that O_DIRECT accepts', async function () {
    const path = join(tmp.dir, 'aligned')
    await writeFile(path, '')
    const direct = await openDirect(path, 'write')
    // a platform or file system without O_DIRECT has nothing to check here
    if (direct == null) this.skip()
    try {
      const pool = createBufferPool(64 * MiB, { aligned: true })
      for (const size of [256 * 1024, 4 * MiB + 28, 3 * MiB]) {
        const buf = pool.take(size)
        assert.equal(PAGE_ALIGN, DIRECT_ALIGN)
        // a misaligned address makes the kernel refuse the write (EINVAL)
        const { bytesWritten }: { bytesWritten: number } = await direct.write(buf, 0, size - (size % DIRECT_ALIGN), 0)
        assert.equal(bytesWritten, size - (size % DIRECT_ALIGN))
        pool.give(buf)
      }
    } finally {
      await direct.close()
    }
  })

  it('writes and reads back the same bytes, aligned or not, at any position and length', async function () {
    const aligned = createBufferPool(64 * MiB, { aligned: true })
    let n = 0
    for (const size of [0, 1, 4095, 4096, 4097, 256 * 1024, 3 * MiB + 7]) {
      for (const position of [0, 4096, 5]) {
        for (const from of ['pool', 'plain', 'offset'] as const) {
          const data = randomBytes(size)
          // an aligned pool buffer, a plain Buffer, and a view one byte into an aligned buffer (never aligned)
          const buf = from === 'pool' && size >= 256 * 1024 ? aligned.take(size) : from === 'offset' ? aligned.take(size + 1 + 256 * 1024).subarray(1, size + 1) : Buffer.alloc(size)
          buf.set(data)
          const path = join(tmp.dir, `rw${n++}`)
          await writeFile(path, Buffer.alloc(position, 0xab))
          const fh = await open(path, 'r+')
          const direct = await openDirect(path, 'write')
          try {
            await writeAt(fh, direct, buf, position)
            await fh.sync()
          } finally {
            await direct?.close()
            await fh.close()
          }
          const onDisk = await readFile(path)
          assert.equal(onDisk.byteLength, position + size, `${from}, ${size} bytes at ${position}: file size`)
          assert.ok(onDisk.subarray(position).equals(data), `${from}, ${size} bytes at ${position}: the bytes on disk`)
          assert.ok(onDisk.subarray(0, position).equals(Buffer.alloc(position, 0xab)), 'the bytes before are untouched')

          const into = from === 'plain' ? Buffer.alloc(size) : aligned.take(Math.max(size, 256 * 1024)).subarray(0, size)
          const rh = await open(path, 'r')
          const rdirect = await openDirect(path, 'read')
          try {
            assert.equal(await readAt(rh, rdirect, into, position), size)
          } finally {
            await rdirect?.close()
            await rh.close()
          }
          assert.ok(Buffer.from(into).equals(data), `${from}, ${size} bytes at ${position}: read back`)
        }
      }
    }
  })

  it('reads fewer bytes from a file shorter than asked, direct or not', async function () {
    const path = join(tmp.dir, 'short')
    const data = randomBytes(3 * 4096 + 100)
    await writeFile(path, data)
    const into = createBufferPool(64 * MiB, { aligned: true }).take(MiB)
    const fh = await open(path, 'r')
    const direct = await openDirect(path, 'read')
    try {
      assert.equal(await readAt(fh, direct, into, 0), data.byteLength)
    } finally {
      await direct?.close()
      await fh.close()
    }
    assert.ok(into.subarray(0, data.byteLength).equals(data))
  })

  it('a vendor device refuses a piece whose file is shorter or longer than recorded', async function () {
    const devices = await Devices.open([{ path: join(tmp.dir, 'dev') }], logger('stor:test'), { owner: 'me', create: true })
    const bytes = randomBytes(300_000)
    const piece = await devices.write('p0', bytes, new Set())
    const into = Buffer.alloc(piece.size)
    await devices.readInto(piece, into)
    assert.ok(into.equals(bytes), 'a whole piece reads back')
    assert.equal(piece.crc32 != null && piece.sha256 == null, true, 'a piece that is not a whole chunk records a CRC-32')
    await assert.rejects(devices.readInto({ ...piece, size: piece.size + 1 }, Buffer.alloc(piece.size + 1)), IntegrityError)
    await assert.rejects(devices.readInto({ ...piece, size: piece.size - 1 }, Buffer.alloc(piece.size - 1)), IntegrityError)
    const flipped = Buffer.from(bytes)
    flipped[1234] ^= 1
    await writeFile(join(tmp.dir, 'dev', 'stor-pieces', 'p0'), flipped)
    await assert.rejects(devices.read(piece), IntegrityError, 'a flipped byte fails the CRC-32')
  })
})
