/**
 * A table larger than one message, in parts: the user's split of a commit into commit-parts, the
 * FAT's pages of a table and the user's reassembly of them, and a snapshot record in pieces.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { IntegrityError, InvalidArgumentError } from '../src/errors.ts'
import { encode } from '../src/protocol/codec.ts'
import * as M from '../src/protocol/messages.ts'
import { cutLines, splitCommit, tablePage, wholeTable } from '../src/protocol/table-pages.ts'
import { SNAPSHOT_CHUNK_BYTES, SnapshotInbox, readSnapshot, splitText } from '../src/roles/fat/raft/snapshot.ts'
import { openDb } from '../src/store/db.ts'
import { FatTable, TABLE_PREFIXES } from '../src/roles/fat/table.ts'
import type { AllocationRecord } from '../src/protocol/fat-sync.ts'
import { tempDir } from './helpers.ts'

const VENDOR = '12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp'
const fileId = (): string => randomBytes(16).toString('hex')
const lines = (n: number): M.ChunkEntry[] => Array.from({ length: n }, (_, i) => ({ i, id: randomBytes(32).toString('hex'), size: 1028, replicas: [{ vendor: VENDOR, sig: randomBytes(64).toString('hex') }] }))
const tableOf = (chunks: M.ChunkEntry[], id = fileId()): M.FileTable => ({ fileId: id, owner: VENDOR, name: 'f', size: chunks.length * 1000, chunkSize: 1000, replicas: 1, created: 1, cipher: { alg: 'aes-256-gcm', wrappedKey: '' }, chunks })

describe('a table in parts', function () {
  it('cuts chunk lines into runs within a byte budget, none empty, in order', function () {
    const all = lines(1000)
    const runs = cutLines(all, 20_000)
    assert.ok(runs.length > 1)
    assert.deepEqual(runs.flat(), all)
    for (const r of runs) assert.ok(r.length > 0 && encode(r).byteLength <= 20_000 + r.length)
    // a line larger than the budget still goes, alone
    assert.deepEqual(cutLines(all.slice(0, 3), 10).map(r => r.length), [1, 1, 1])
    assert.deepEqual(cutLines([]), [])
  })

  it('a small commit goes inline; a large one stages its largest files until the rest fits', function () {
    const small = tableOf(lines(3))
    assert.deepEqual(splitCommit([small], 1_000_000), { tables: [small], staged: [], parts: [] })
    const big = tableOf(lines(2000))
    const medium = tableOf(lines(300))
    const split = splitCommit([small, big, medium], 200_000, 50_000)
    assert.deepEqual(split.staged, [big.fileId])
    assert.deepEqual(split.tables, [small, { ...big, chunks: [] }, medium])
    assert.ok(encode(split.tables).byteLength <= 200_000)
    assert.ok(split.parts.every(p => p.fileId === big.fileId && encode(p.chunks).byteLength <= 50_000 + p.chunks.length))
    // the parts, in order, are the file's lines from 0 with no gap
    let next = 0
    for (const p of split.parts) { assert.equal(p.first, next); next += p.chunks.length }
    assert.deepEqual(split.parts.flatMap(p => p.chunks), big.chunks)
    // both large files go once neither fits
    assert.deepEqual(new Set(splitCommit([small, big, medium], 20_000).staged), new Set([big.fileId, medium.fileId]))
  })

  it('a table is served in pages and put back together whole', async function () {
    const t = tableOf(lines(5000))
    const pages: number[] = []
    const first = tablePage(t, 0, 100_000)
    assert.ok(first.next != null && first.next === first.table.chunks.length)
    const whole = await wholeTable(first, async from => { pages.push(from); return tablePage(t, from, 100_000) })
    assert.deepEqual(whole, t)
    assert.ok(pages.length >= 3)
    // a table that fits one page has no `next`
    assert.deepEqual(tablePage(tableOf(lines(3))).next, undefined)
  })

  it('a page that does not continue where the last ended is an integrity error', async function () {
    const t = tableOf(lines(3000))
    const first = tablePage(t, 0, 50_000)
    await assert.rejects(wholeTable(first, async from => tablePage(t, from + 1, 50_000)), IntegrityError)
    await assert.rejects(wholeTable(first, async from => tablePage(tableOf(t.chunks), from, 50_000)), IntegrityError)
    await assert.rejects(wholeTable(first, async () => ({ table: { ...t, chunks: [] } })), IntegrityError)
    await assert.rejects(wholeTable({ table: first.table, next: (first.next as number) + 5 }, async from => tablePage(t, from, 50_000)), IntegrityError)
  })
})

describe('a snapshot record larger than a chunk', function () {
  it('splits text without cutting a surrogate pair', function () {
    const text = `${'a'.repeat(9)}😀${'b'.repeat(10)}`
    const pieces = splitText(text, 10)
    assert.equal(pieces.join(''), text)
    assert.ok(pieces.every(p => p.length <= 10 && !/[\ud800-\udbff]$/.test(p) && !/^[\udc00-\udfff]/.test(p)))
  })

  it('travels in pieces and is staged whole; a record cut short stops the snapshot', async function () {
    const tmp = await tempDir('snapshot-pieces')
    try {
      const from = await openDb(join(tmp.dir, 'from'))
      const to = await openDb(join(tmp.dir, 'to'))
      const big = tableOf(lines(Math.ceil(3 * SNAPSHOT_CHUNK_BYTES / 300)))
      const enc = new TextEncoder()
      await from.batch([
        { type: 'put', key: `file/${big.fileId}`, value: enc.encode(JSON.stringify(big)) },
        { type: 'put', key: 'meta/seq', value: enc.encode('7') }
      ])
      const chunks: Array<Array<{ k: string, v: string, more?: boolean }>> = []
      for await (const c of readSnapshot(from, ['file', 'meta'], 7)) chunks.push(c)
      assert.ok(chunks.filter(c => c.some(r => r.more === true)).length >= 3, 'the record went in pieces')
      for (const c of chunks) assert.ok(encode({ records: c }).byteLength < 2 * SNAPSHOT_CHUNK_BYTES)
      const inbox = new SnapshotInbox(to, ['file', 'meta'])
      const meta = { index: 7, term: 1, members: [] }
      for (const [seq, c] of chunks.entries()) await inbox.receive('a', seq, c, seq === chunks.length - 1 ? meta : undefined)
      await inbox.install(meta, async () => {})
      const got = await to.get(`file/${big.fileId}`)
      assert.deepEqual(JSON.parse(new TextDecoder().decode(got)), big)
      // a record whose last piece never comes
      const cut = chunks.filter(c => c[0].more === true)
      for (const [seq, c] of cut.entries()) await inbox.receive('b', seq, c, undefined)
      await assert.rejects(inbox.receive('b', cut.length, [{ k: 'meta/seq', v: '7' }], meta), /ends without its last piece/)
      await from.close()
      await to.close()
    } finally {
      await tmp.remove()
    }
  })
})

describe('the FAT\'s table stages parts and joins them at the commit', function () {
  it('commit-part ops stage lines on disk only; the commit joins them into the table and drops them; expire drops them too', async function () {
    const tmp = await tempDir('staged-parts')
    try {
      const db = await openDb(join(tmp.dir, 'db'))
      const table = new FatTable(db)
      await table.load()
      const allocation = (id: string): AllocationRecord => ({ allocationId: id, owner: VENDOR, sizes: [5000], fileIds: [fileId()], replicas: 1, chunkSize: 1000, expires: Date.now() + 60_000, grants: { [VENDOR]: 1_000_000 } })
      const a = allocation(randomBytes(16).toString('hex'))
      const [file] = a.fileIds
      const chunks = lines(5)
      const t = { ...tableOf(chunks, file), size: 5000 }
      await table.apply(1, { op: 'allocate', allocation: a })
      table.checkPart(VENDOR, a.allocationId, file, 0, chunks.slice(0, 3))
      assert.throws(() => table.checkPart(VENDOR, a.allocationId, file, 3, chunks.slice(0, 2)), (err: Error) => err instanceof InvalidArgumentError && /chunk 3 has the wrong index or size/.test(err.message))
      assert.throws(() => table.checkPart(VENDOR, a.allocationId, file, 4, chunks.slice(3, 5)), (err: Error) => err instanceof InvalidArgumentError && /has 5 chunks: a part from line 4 holds 1 to 1 lines, not 2/.test(err.message))
      await table.apply(2, { op: 'commit-part', allocationId: a.allocationId, fileId: file, first: 0, chunks: chunks.slice(0, 3) })
      assert.equal(table.chunkCount(), 0, 'a staged line is no chunk of the table yet')
      // a missing part shows at the commit's check as too few lines
      assert.throws(() => table.checkCommit(VENDOR, a.allocationId, [{ ...t, chunks: chunks.slice(0, 3) }]), /lists 3 chunks, the file has 5/)
      await table.apply(3, { op: 'commit-part', allocationId: a.allocationId, fileId: file, first: 3, chunks: chunks.slice(3) })
      const joined = await table.stagedChunks(a.allocationId, file)
      assert.deepEqual(joined, chunks)
      table.checkCommit(VENDOR, a.allocationId, [{ ...t, chunks: joined }])
      await table.apply(4, { op: 'commit', allocationId: a.allocationId, tables: [{ ...t, chunks: [] }], staged: [file], orders: [] })
      assert.deepEqual((await table.fileTable(file))?.chunks, chunks)
      assert.equal(table.chunkCount(), 5)
      assert.deepEqual(await table.stagedParts(a.allocationId, file), [])

      const b = allocation(randomBytes(16).toString('hex'))
      await table.apply(5, { op: 'allocate', allocation: b })
      await table.apply(6, { op: 'commit-part', allocationId: b.allocationId, fileId: b.fileIds[0], first: 0, chunks: chunks.slice(0, 2) })
      assert.equal((await table.stagedParts(b.allocationId, b.fileIds[0])).length, 1)
      // staged parts are table records: a snapshot taken now carries them to a new replica
      const snapshotKeys: string[] = []
      for await (const c of readSnapshot(db, TABLE_PREFIXES, 6)) snapshotKeys.push(...c.map(r => r.k))
      assert.ok(snapshotKeys.some(k => k.startsWith(`stage/${b.allocationId}/`)), 'the snapshot carries the staged part')
      await table.apply(7, { op: 'expire', allocationId: b.allocationId, orders: [] })
      assert.deepEqual(await table.stagedParts(b.allocationId, b.fileIds[0]), [])
      // a part logged after its allocation closed stages nothing
      await table.apply(8, { op: 'commit-part', allocationId: b.allocationId, fileId: b.fileIds[0], first: 0, chunks: chunks.slice(0, 2) })
      assert.deepEqual(await table.stagedParts(b.allocationId, b.fileIds[0]), [])
      // what is on disk is what memory holds
      const digest = await table.digest()
      const again = new FatTable(db)
      await again.load()
      assert.equal(again.chunkCount(), 5)
      assert.equal(await again.digest(), digest)
      await db.close()
    } finally {
      await tmp.remove()
    }
  })
})
