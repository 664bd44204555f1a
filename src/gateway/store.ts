import { randomBytes } from 'node:crypto'
import type { User, UserRecord } from '../roles/user/index.ts'
import { S3Error } from './errors.ts'

/**
 * The gateway's state, all of it in the user's records kept by the FAT (sealed, so the FAT
 * learns no bucket or key names): any gateway of the same identity sees the same buckets, and a
 * gateway that dies loses nothing. Objects' bytes are stordaemon files; a record names them.
 *
 *   s3:buckets            bucket name -> BucketRecord
 *   s3:objects:BUCKET     object key  -> ObjectRecord
 *   s3:uploads:BUCKET     upload id   -> UploadRecord (multipart uploads in progress)
 *   s3:parts:UPLOAD_ID    part number -> PartRecord
 *   gateway:keys          access key  -> AccessKeyRecord
 */

export interface BucketRecord { created: number }

/** The standard headers an object keeps and serves back. */
export const STORED_HEADERS = ['content-type', 'cache-control', 'content-disposition', 'content-encoding', 'content-language', 'expires'] as const

export interface ObjectRecord {
  size: number
  /** S3's ETag, without quotes: md5 of the bytes, or of the parts' md5s and "-N" */
  etag: string
  modified: number
  /** x-amz-meta-* without the prefix, names in lower case */
  meta: Record<string, string>
  headers: Partial<Record<typeof STORED_HEADERS[number], string>>
  /** the stordaemon files that hold the bytes, in order (none for an empty object) */
  parts: Array<{ fileId: string, size: number }>
}

export interface UploadRecord { key: string, initiated: number, meta: Record<string, string>, headers: ObjectRecord['headers'] }
export interface PartRecord { fileId: string, size: number, etag: string, modified: number }
export interface AccessKeyRecord { name: string, secret: string, created: number }

const BUCKETS = 's3:buckets'
const objects = (bucket: string): string => `s3:objects:${bucket}`
const uploads = (bucket: string): string => `s3:uploads:${bucket}`
const parts = (uploadId: string): string => `s3:parts:${uploadId}`
const KEYS = 'gateway:keys'
const partKey = (n: number): string => String(n).padStart(5, '0')

export class GatewayStore {
  constructor (private readonly user: User, private readonly log: (fmt: string, ...args: unknown[]) => void) {}

  // ---- buckets

  async buckets (): Promise<Array<UserRecord<BucketRecord>>> {
    return await this.user.records.list<BucketRecord>(BUCKETS)
  }

  async bucket (name: string): Promise<UserRecord<BucketRecord>> {
    const b = (await this.user.records.get<BucketRecord>(BUCKETS, [name])).get(name)
    if (b == null) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name })
    return b
  }

  async createBucket (name: string): Promise<void> {
    const ok = await this.user.records.write([{ scope: BUCKETS, key: name, value: { created: Date.now() } }], [{ scope: BUCKETS, key: name, version: null }])
    if (!ok) throw new S3Error('BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.', { BucketName: name })
  }

  async deleteBucket (name: string): Promise<void> {
    const b = await this.bucket(name)
    if ((await this.objects(name)).length > 0) throw new S3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: name })
    // multipart uploads in progress go with the bucket
    for (const u of await this.uploads(name)) await this.abortUpload(name, u.key)
    const ok = await this.user.records.write([{ scope: BUCKETS, key: name }], [{ scope: BUCKETS, key: name, version: b.version }])
    if (!ok) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name })
  }

  // ---- objects

  async objects (bucket: string): Promise<Array<UserRecord<ObjectRecord>>> {
    return await this.user.records.list<ObjectRecord>(objects(bucket))
  }

  async object (bucket: string, key: string): Promise<ObjectRecord> {
    await this.bucket(bucket)
    const o = (await this.user.records.get<ObjectRecord>(objects(bucket), [key])).get(key)
    if (o == null) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key })
    return o.value
  }

  /**
   * Records an object whose files are stored, replacing any object of that key (whose files are
   * then released). `extra` writes go in the same atomic write (a completed upload's parts).
   */
  async putObject (bucket: string, key: string, rec: ObjectRecord, extra: Array<{ scope: string, key: string }> = [], condition?: (old: ObjectRecord | undefined) => void): Promise<void> {
    const b = await this.bucket(bucket)
    const old = (await this.user.records.get<ObjectRecord>(objects(bucket), [key])).get(key)
    try {
      condition?.(old?.value)
    } catch (err) {
      await this.releaseFiles(rec.parts.map(p => p.fileId))
      throw err
    }
    const ok = await this.user.records.write(
      [{ scope: objects(bucket), key, value: rec }, ...extra],
      [{ scope: BUCKETS, key: bucket, version: b.version }, { scope: objects(bucket), key, version: old?.version ?? null }]
    )
    if (!ok) {
      // the bucket went, or another write of this key came between: ours is not recorded
      await this.releaseFiles(rec.parts.map(p => p.fileId))
      await this.bucket(bucket)
      throw new S3Error('SlowDown', `another request changed ${key} at the same time; try again`)
    }
    if (old != null) await this.releaseFiles(old.value.parts.map(p => p.fileId).filter(f => !rec.parts.some(p => p.fileId === f)))
  }

  /** Deletes an object; deleting a key that is not there succeeds, as in S3. */
  async deleteObject (bucket: string, key: string): Promise<void> {
    await this.bucket(bucket)
    const old = (await this.user.records.get<ObjectRecord>(objects(bucket), [key])).get(key)
    if (old == null) return
    const ok = await this.user.records.write([{ scope: objects(bucket), key }], [{ scope: objects(bucket), key, version: old.version }])
    if (ok) await this.releaseFiles(old.value.parts.map(p => p.fileId))
  }

  /** Frees stordaemon files no record names any more; a failure only leaks space, so it is logged. */
  async releaseFiles (fileIds: string[]): Promise<void> {
    for (const f of fileIds) {
      await this.user.release(f).catch(err => { this.log('could not release file %s: %s', f, err.message) })
    }
  }

  // ---- multipart uploads

  async uploads (bucket: string): Promise<Array<UserRecord<UploadRecord>>> {
    return await this.user.records.list<UploadRecord>(uploads(bucket))
  }

  async createUpload (bucket: string, rec: UploadRecord): Promise<string> {
    const b = await this.bucket(bucket)
    const id = randomBytes(16).toString('hex')
    const ok = await this.user.records.write([{ scope: uploads(bucket), key: id, value: rec }], [{ scope: BUCKETS, key: bucket, version: b.version }])
    if (!ok) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket })
    return id
  }

  async upload (bucket: string, uploadId: string): Promise<UserRecord<UploadRecord>> {
    // both read at once; a missing bucket is the error to give first
    const [b, found] = await Promise.allSettled([this.bucket(bucket), this.user.records.get<UploadRecord>(uploads(bucket), [uploadId])])
    if (b.status === 'rejected') throw b.reason
    if (found.status === 'rejected') throw found.reason
    const u = found.value.get(uploadId)
    if (u == null) throw new S3Error('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', { UploadId: uploadId })
    return u
  }

  async parts (uploadId: string): Promise<Array<{ n: number, part: PartRecord }>> {
    return (await this.user.records.list<PartRecord>(parts(uploadId))).map(r => ({ n: Number(r.key), part: r.value })).sort((a, b) => a.n - b.n)
  }

  /** A part's record, if it was uploaded. */
  async part (uploadId: string, n: number): Promise<UserRecord<PartRecord> | undefined> {
    return (await this.user.records.get<PartRecord>(parts(uploadId), [partKey(n)])).get(partKey(n))
  }

  /**
   * Records a stored part, as long as its upload is in progress; a part replaced is released.
   * `seen` is the upload and the part as read before the part's bytes were stored (read then, so
   * that storing the bytes is the only wait between): the write is conditional on them, and
   * should either have changed meanwhile they are read again once.
   */
  async putPart (bucket: string, uploadId: string, n: number, rec: PartRecord, seen: { upload: UserRecord<UploadRecord>, old: UserRecord<PartRecord> | undefined }): Promise<void> {
    let { upload: u, old } = seen
    for (let attempt = 0; ; attempt++) {
      const ok = await this.user.records.write([{ scope: parts(uploadId), key: partKey(n), value: rec }], [{ scope: uploads(bucket), key: uploadId, version: u.version }, { scope: parts(uploadId), key: partKey(n), version: old?.version ?? null }])
      if (ok) break
      try {
        // aborted or completed meanwhile: NoSuchUpload
        u = await this.upload(bucket, uploadId)
        if (attempt > 0) throw new S3Error('SlowDown', `another request changed part ${n} at the same time; try again`)
        old = await this.part(uploadId, n)
      } catch (err) {
        await this.releaseFiles([rec.fileId])
        throw err
      }
    }
    if (old != null) await this.releaseFiles([old.value.fileId])
  }

  /** Completes an upload: the object names the parts' files; parts not used are released. */
  async completeUpload (bucket: string, uploadId: string, rec: ObjectRecord, all: Array<{ n: number, part: PartRecord }>): Promise<void> {
    const u = await this.upload(bucket, uploadId)
    const done = [{ scope: uploads(bucket), key: uploadId }, ...all.map(p => ({ scope: parts(uploadId), key: partKey(p.n) }))]
    // the upload record goes in the same write as the object: completing twice cannot happen
    const b = await this.bucket(bucket)
    const old = (await this.user.records.get<ObjectRecord>(objects(bucket), [u.value.key])).get(u.value.key)
    const ok = await this.user.records.write([{ scope: objects(bucket), key: u.value.key, value: rec }, ...done], [
      { scope: BUCKETS, key: bucket, version: b.version }, { scope: uploads(bucket), key: uploadId, version: u.version }, { scope: objects(bucket), key: u.value.key, version: old?.version ?? null }
    ])
    if (!ok) throw new S3Error('SlowDown', `another request changed ${u.value.key} or this upload at the same time; try again`)
    const used = new Set(rec.parts.map(p => p.fileId))
    await this.releaseFiles([...all.map(p => p.part.fileId).filter(f => !used.has(f)), ...(old?.value.parts.map(p => p.fileId).filter(f => !used.has(f)) ?? [])])
  }

  async abortUpload (bucket: string, uploadId: string): Promise<void> {
    const u = await this.upload(bucket, uploadId)
    const all = await this.parts(uploadId)
    const ok = await this.user.records.write([{ scope: uploads(bucket), key: uploadId }, ...all.map(p => ({ scope: parts(uploadId), key: partKey(p.n) }))], [{ scope: uploads(bucket), key: uploadId, version: u.version }])
    if (!ok) throw new S3Error('NoSuchUpload', 'The specified upload does not exist.', { UploadId: uploadId })
    await this.releaseFiles(all.map(p => p.part.fileId))
  }
}

// ---- access keys

export async function listKeys (user: User): Promise<Array<{ accessKey: string, name: string, created: number }>> {
  return (await user.records.list<AccessKeyRecord>(KEYS)).map(r => ({ accessKey: r.key, name: r.value.name, created: r.value.created })).sort((a, b) => a.created - b.created)
}

/** A new access key and its secret (shown once: only the records hold it). */
export async function addKey (user: User, name: string): Promise<{ accessKey: string, secret: string, name: string }> {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  const accessKey = 'SD' + [...randomBytes(18)].map(b => alphabet[b % 32]).join('')
  const secret = randomBytes(30).toString('base64').replace(/\+/g, 'x').replace(/\//g, 'y')
  await user.records.write([{ scope: KEYS, key: accessKey, value: { name, secret, created: Date.now() } }])
  return { accessKey, secret, name }
}

/** Removes a key by its access key id or its name; returns the ids removed. */
export async function removeKey (user: User, which: string): Promise<string[]> {
  const gone = (await listKeys(user)).filter(k => k.accessKey === which || k.name === which).map(k => k.accessKey)
  if (gone.length > 0) await user.records.write(gone.map(k => ({ scope: KEYS, key: k })))
  return gone
}

export async function secretOf (user: User, accessKey: string): Promise<string | undefined> {
  return (await user.records.get<AccessKeyRecord>(KEYS, [accessKey])).get(accessKey)?.value.secret
}
