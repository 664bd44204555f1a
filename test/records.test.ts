/**
 * The users' records at the FAT (src/roles/fat/records.ts) on a real level table, and the user's
 * sealing of them (src/roles/user/records.ts) over it: names hashed, values sealed, conditions,
 * paging, the per-owner limit's accounting, another identity's keys.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { openDb, type DB } from '../src/store/db.ts'
import { UserRecords } from '../src/roles/fat/records.ts'
import { createRecordStore, type RecordTransport } from '../src/roles/user/records.ts'
import { Keystore } from '../src/roles/user/keystore.ts'
import { tempDir } from './helpers.ts'

const OWNER = '12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMq8edRZjZ'

describe('records', function () {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: DB
  let recs: UserRecords
  before(async function () {
    tmp = await tempDir('records')
    db = await openDb(join(tmp.dir, 'db'))
    recs = new UserRecords(db)
    await recs.load()
  })
  after(async function () {
    await db.close()
    await tmp.remove()
  })

  /** What the FAT does with each request, on the real table (one op per write). */
  const transport = (owner: string): RecordTransport => ({
    written: async msg => {
      if (msg.expect != null && !await recs.holds(owner, msg.expect)) return false
      await recs.checkLimit(owner, msg.writes)
      const batch: any[] = []
      await recs.apply({ op: 'records', owner, writes: msg.writes }, batch)
      await db.batch(batch)
      return true
    },
    listed: async msg => msg.t === 'get-records'
      ? { records: (await Promise.all(msg.ids.map(async id => ({ id, value: await recs.get(owner, msg.scope, id) })))).filter(r => r.value != null) as any, more: false }
      : await recs.list(owner, msg.scope, msg.after, msg.limit ?? 1000)
  })

  it('stores sealed values under hashed names, lists them in pages, and applies conditions', async function () {
    const keys = await Keystore.open(join(tmp.dir, 'alice'), true)
    const store = createRecordStore(keys, transport(OWNER))
    assert.equal(await store.write([{ scope: 's3:buckets', key: 'photos', value: { created: 1 } }], [{ scope: 's3:buckets', key: 'photos', version: null }]), true)
    // a second create of the same name fails its condition and writes nothing
    assert.equal(await store.write([{ scope: 's3:buckets', key: 'photos', value: { created: 2 } }], [{ scope: 's3:buckets', key: 'photos', version: null }]), false)
    const got = (await store.get<{ created: number }>('s3:buckets', ['photos', 'absent']))
    assert.deepEqual([...got.keys()], ['photos'])
    assert.equal(got.get('photos')?.value.created, 1)
    // the FAT holds neither the name nor the value in the clear
    for await (const [k, v] of db.iterator()) {
      assert.ok(!k.includes('photos') && !k.includes('s3:'), k)
      assert.ok(!Buffer.from(v).toString().includes('created'))
    }
    // a write conditional on the version read
    const version = got.get('photos')?.version as string
    assert.equal(await store.write([{ scope: 's3:buckets', key: 'photos', value: { created: 3 } }], [{ scope: 's3:buckets', key: 'photos', version }]), true)
    assert.equal(await store.write([{ scope: 's3:buckets', key: 'photos', value: { created: 4 } }], [{ scope: 's3:buckets', key: 'photos', version }]), false)

    // 2,500 records in one scope: listed in pages of 1,000
    for (let i = 0; i < 2500; i += 1000) {
      await store.write(Array.from({ length: Math.min(1000, 2500 - i) }, (_, j) => ({ scope: 's3:objects:photos', key: `k${i + j}`, value: { n: i + j } })))
    }
    const all = await store.list<{ n: number }>('s3:objects:photos')
    assert.equal(all.length, 2500)
    assert.deepEqual(new Set(all.map(r => r.value.n)).size, 2500)
    // deletes, and the count the limit is checked against, rebuilt on load
    await store.write([{ scope: 's3:objects:photos', key: 'k0' }, { scope: 's3:objects:photos', key: 'k1' }, { scope: 's3:objects:photos', key: 'never' }])
    assert.equal((await store.list('s3:objects:photos')).length, 2498)
    const reloaded = new UserRecords(db)
    await reloaded.load()
    assert.equal(reloaded.count(OWNER), 2499)
    assert.equal(recs.count(OWNER), 2499)

    // another identity's keys open nothing, and name other records
    const bob = createRecordStore(await Keystore.open(join(tmp.dir, 'bob'), true), transport(OWNER))
    assert.equal((await bob.get('s3:buckets', ['photos'])).size, 0)
  })
})
