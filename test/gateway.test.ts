/**
 * The S3 gateway as S3 clients see it: `stordaemon gateway` runs as a child process on a local
 * network of one FAT and three vendors, and @aws-sdk/client-s3 (path-style) talks to it. Every
 * operation the gateway serves, a 100 MiB multipart upload, ranged reads across chunk boundaries
 * (objects are cut in 1 MiB chunks here), bad credentials, an expired presigned URL, a gateway
 * restarted between a PUT and a GET, and a second gateway of the same identity on another data dir.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { crc32 as zlibCrc32 } from 'node:zlib'
import {
  S3Client, CreateBucketCommand, HeadBucketCommand, DeleteBucketCommand, ListBucketsCommand,
  PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, DeleteObjectsCommand, CopyObjectCommand,
  ListObjectsCommand, ListObjectsV2Command, CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand,
  AbortMultipartUploadCommand, ListPartsCommand, ListMultipartUploadsCommand
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { spawnGateway, addKey, exportKeys, importKeys, type GatewayProcess } from '../src/index.ts'
import { cli, eventually, useCluster } from './helpers.ts'

const MiB = 1024 * 1024
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex')
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

function client (url: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({ endpoint: url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 })
}

async function bytesOf (body: any): Promise<Buffer> {
  return Buffer.from(await body.transformToByteArray())
}

/** The S3 error code a call fails with. */
async function failsWith (p: Promise<unknown>): Promise<{ code: string, status?: number }> {
  try {
    await p
  } catch (err: any) {
    return { code: err.Code ?? err.name, status: err.$metadata?.httpStatusCode }
  }
  assert.fail('the call succeeded')
}

describe('S3 gateway', function () {
  const f = useCluster('gateway', { vendors: 3, deviceSize: '1GiB' }, ['alice'])
  let gw: GatewayProcess | undefined
  let s3: S3Client
  let key: { accessKey: string, secret: string }
  const userDir = (): string => join(f.dir, 'alice')
  const start = async (dir = userDir()): Promise<GatewayProcess> => await spawnGateway(dir, f.cluster.bootstrap, ['--chunk-size', '1MiB', '--replicas', '2'])

  before(async function () {
    key = await addKey(f.user('alice'), 'tests')
    gw = await start()
    s3 = client(gw.url, key.accessKey, key.secret)
  })
  after(async function () {
    s3?.destroy()
    await gw?.kill()
  })

  it('creates, heads, lists and deletes buckets, with S3\'s errors', async function () {
    await s3.send(new CreateBucketCommand({ Bucket: 'photos' }))
    await s3.send(new CreateBucketCommand({ Bucket: 'docs' }))
    // creating one's own bucket again succeeds (as in us-east-1)
    await s3.send(new CreateBucketCommand({ Bucket: 'docs' }))
    await s3.send(new HeadBucketCommand({ Bucket: 'photos' }))
    const names = (await s3.send(new ListBucketsCommand({}))).Buckets?.map(b => b.Name)
    assert.deepEqual(names, ['docs', 'photos'])
    // paged, one at a time
    const first = await s3.send(new ListBucketsCommand({ MaxBuckets: 1 }))
    assert.deepEqual(first.Buckets?.map(b => b.Name), ['docs'])
    const second = await s3.send(new ListBucketsCommand({ MaxBuckets: 1, ContinuationToken: first.ContinuationToken }))
    assert.deepEqual([second.Buckets?.map(b => b.Name), second.ContinuationToken], [['photos'], undefined])
    assert.deepEqual(await failsWith(s3.send(new CreateBucketCommand({ Bucket: 'Bad_Name' }))), { code: 'InvalidBucketName', status: 400 })
    assert.equal((await failsWith(s3.send(new HeadBucketCommand({ Bucket: 'nothere' })))).status, 404)
    assert.deepEqual(await failsWith(s3.send(new GetObjectCommand({ Bucket: 'nothere', Key: 'x' }))), { code: 'NoSuchBucket', status: 404 })
    await s3.send(new PutObjectCommand({ Bucket: 'docs', Key: 'a', Body: 'x' }))
    assert.deepEqual(await failsWith(s3.send(new DeleteBucketCommand({ Bucket: 'docs' }))), { code: 'BucketNotEmpty', status: 409 })
    await s3.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'a' }))
    await s3.send(new DeleteBucketCommand({ Bucket: 'docs' }))
    assert.deepEqual((await s3.send(new ListBucketsCommand({}))).Buckets?.map(b => b.Name), ['photos'])
  })

  it('puts and gets objects with metadata, standard headers and S3\'s ETag; conditional reads', async function () {
    const body = randomBytes(300_000)
    const put = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg', Body: body, ContentType: 'image/jpeg', CacheControl: 'max-age=60', ContentDisposition: 'inline', Metadata: { camera: 'x100', place: 'home' } }))
    assert.equal(put.ETag, `"${md5(body)}"`)
    const got = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg' }))
    assert.deepEqual(await bytesOf(got.Body), body)
    assert.equal(got.ContentType, 'image/jpeg')
    assert.equal(got.CacheControl, 'max-age=60')
    assert.equal(got.ContentDisposition, 'inline')
    assert.deepEqual(got.Metadata, { camera: 'x100', place: 'home' })
    assert.equal(got.ETag, put.ETag)
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg' }))
    assert.equal(head.ContentLength, body.byteLength)
    assert.equal(head.ETag, put.ETag)
    const modified = head.LastModified as Date
    assert.equal((await failsWith(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg', IfMatch: '"0000"' })))).status, 412)
    assert.equal((await failsWith(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg', IfNoneMatch: put.ETag })))).status, 304)
    assert.equal((await failsWith(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg', IfModifiedSince: new Date(modified.getTime() + 1000) })))).status, 304)
    const again = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'dir/ünï code.jpg', IfMatch: put.ETag, IfModifiedSince: new Date(modified.getTime() - 60_000) }))
    assert.deepEqual(await bytesOf(again.Body), body)
    assert.deepEqual(await failsWith(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'missing' }))), { code: 'NoSuchKey', status: 404 })
    // an empty object, and a streamed body of known length (the SDK sends it aws-chunked)
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'empty', Body: '' }))
    assert.equal((await bytesOf((await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'empty' }))).Body)).byteLength, 0)
    const streamed = randomBytes(200_000)
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'streamed', Body: Readable.from([streamed.subarray(0, 70_000), streamed.subarray(70_000)]), ContentLength: streamed.byteLength }))
    assert.deepEqual(await bytesOf((await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'streamed' }))).Body), streamed)
    // a body whose Content-MD5 does not match is refused and not stored
    assert.equal((await failsWith(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-md5', Body: 'abc', ContentMD5: Buffer.from(md5(Buffer.from('abd')), 'hex').toString('base64') })))).code, 'BadDigest')
    assert.equal((await failsWith(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'bad-md5' })))).status, 404)
    // the same for bodies of several MiB (hashed on the gateway's hashing thread): a wrong MD5, a wrong signed SHA-256
    const big = randomBytes(3 * MiB + 5)
    assert.equal((await failsWith(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-md5', Body: big, ContentMD5: Buffer.from(md5(big.subarray(1)), 'hex').toString('base64') })))).code, 'BadDigest')
    const lying = client((gw as GatewayProcess).url, key.accessKey, key.secret)
    // the signer signs the payload hash it finds in the request
    lying.middlewareStack.add(next => async (args: any) => { args.request.headers['x-amz-content-sha256'] = sha(big.subarray(1)); return await next(args) }, { step: 'build' })
    assert.equal((await failsWith(lying.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-sha', Body: big })))).code, 'XAmzContentSHA256Mismatch')
    lying.destroy()
    for (const k of ['bad-md5', 'bad-sha']) assert.equal((await failsWith(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: k })))).status, 404)
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'big', Body: big, ContentMD5: Buffer.from(md5(big), 'hex').toString('base64') }))
    assert.equal((await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'big' }))).ETag, `"${md5(big)}"`)
    // the checksums S3 checks (x-amz-checksum-*): the SDK sends a CRC32 by default, in a header or
    // after a streamed body; a body that does not match is refused and not stored
    const crc32 = (b: Uint8Array): string => { const v = Buffer.alloc(4); v.writeUInt32BE(zlibCrc32(b)); return v.toString('base64') }
    assert.equal(put.ChecksumCRC32, crc32(body))
    for (const ChecksumAlgorithm of ['CRC32C', 'SHA1', 'SHA256'] as const) {
      const sent = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: `sum-${ChecksumAlgorithm}`, Body: big, ChecksumAlgorithm }))
      assert.ok(sent[`Checksum${ChecksumAlgorithm}`] != null, `the gateway answers with the ${ChecksumAlgorithm} it checked`)
    }
    const trailed = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'sum-streamed', Body: Readable.from([big.subarray(0, MiB), big.subarray(MiB)]), ContentLength: big.byteLength }))
    assert.equal(trailed.ChecksumCRC32, crc32(big))
    assert.equal((await failsWith(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-crc', Body: big, ChecksumCRC32: crc32(big.subarray(1)) })))).code, 'BadDigest')
    assert.equal((await failsWith(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-crc', Body: 'abc', ChecksumSHA256: Buffer.from(sha(Buffer.from('abd')), 'hex').toString('base64') })))).code, 'BadDigest')
    assert.equal((await failsWith(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'bad-crc' })))).status, 404)
  })

  it('serves ranges across chunk boundaries, fetching only what covers them', async function () {
    const body = randomBytes(3 * MiB + 12345)
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'ranged', Body: body }))
    const ranges: Array<[string, number, number]> = [
      [`bytes=${MiB - 10}-${MiB + 9}`, MiB - 10, MiB + 10],
      [`bytes=0-${2 * MiB + 4}`, 0, 2 * MiB + 5],
      [`bytes=${3 * MiB - 1}-`, 3 * MiB - 1, body.byteLength],
      ['bytes=-100', body.byteLength - 100, body.byteLength],
      [`bytes=${2 * MiB}-${2 * MiB}`, 2 * MiB, 2 * MiB + 1]
    ]
    for (const [range, a, b] of ranges) {
      const r = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'ranged', Range: range }))
      assert.equal(r.ContentRange, `bytes ${a}-${b - 1}/${body.byteLength}`, range)
      assert.equal(r.$metadata.httpStatusCode, 206)
      assert.deepEqual(await bytesOf(r.Body), body.subarray(a, b), range)
    }
    assert.deepEqual(await failsWith(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'ranged', Range: `bytes=${body.byteLength}-` }))), { code: 'InvalidRange', status: 416 })
  })

  it('lists objects (v1 and v2): prefix, delimiter, max-keys, markers, continuation tokens, start-after, encoding-type', async function () {
    await s3.send(new CreateBucketCommand({ Bucket: 'listing' }))
    const keys = ['a/1', 'a/2', 'b', 'c/x/1', 'c/y', 'd e', 'd+f']
    for (const k of keys) await s3.send(new PutObjectCommand({ Bucket: 'listing', Key: k, Body: k }))
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'listing', Delimiter: '/' }))
    assert.deepEqual(v1.Contents?.map(c => c.Key), ['b', 'd e', 'd+f'])
    assert.deepEqual(v1.CommonPrefixes?.map(p => p.Prefix), ['a/', 'c/'])
    assert.equal(v1.Contents?.[0].ETag, `"${md5(Buffer.from('b'))}"`)
    assert.equal(v1.Contents?.[0].Size, 1)
    const page1 = await s3.send(new ListObjectsCommand({ Bucket: 'listing', MaxKeys: 3 }))
    assert.deepEqual([page1.Contents?.map(c => c.Key), page1.IsTruncated], [['a/1', 'a/2', 'b'], true])
    const page2 = await s3.send(new ListObjectsCommand({ Bucket: 'listing', Marker: 'b' }))
    assert.deepEqual(page2.Contents?.map(c => c.Key), ['c/x/1', 'c/y', 'd e', 'd+f'])
    // v2: walk all pages of two
    const seen: string[] = []
    let token: string | undefined
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: 'listing', MaxKeys: 2, ContinuationToken: token }))
      assert.ok((r.KeyCount ?? 0) <= 2)
      seen.push(...(r.Contents ?? []).map(c => c.Key as string))
      token = r.IsTruncated === true ? r.NextContinuationToken : undefined
    } while (token != null)
    assert.deepEqual(seen, keys)
    const sub = await s3.send(new ListObjectsV2Command({ Bucket: 'listing', Prefix: 'c/', Delimiter: '/' }))
    assert.deepEqual([sub.Contents?.map(c => c.Key), sub.CommonPrefixes?.map(p => p.Prefix)], [['c/y'], ['c/x/']])
    const after = await s3.send(new ListObjectsV2Command({ Bucket: 'listing', StartAfter: 'c/y' }))
    assert.deepEqual(after.Contents?.map(c => c.Key), ['d e', 'd+f'])
    // with encoding-type=url the SDK decodes the keys back
    const encoded = await s3.send(new ListObjectsV2Command({ Bucket: 'listing', Prefix: 'd', EncodingType: 'url' }))
    assert.equal(encoded.EncodingType, 'url')
    assert.equal(encoded.Contents?.length, 2)
  })

  it('deletes one object and many, and copies objects with their metadata or new metadata', async function () {
    await s3.send(new PutObjectCommand({ Bucket: 'listing', Key: 'orig', Body: 'original bytes', ContentType: 'text/plain', Metadata: { k: 'v' } }))
    const copied = await s3.send(new CopyObjectCommand({ Bucket: 'photos', Key: 'copy', CopySource: 'listing/orig' }))
    assert.equal(copied.CopyObjectResult?.ETag, `"${md5(Buffer.from('original bytes'))}"`)
    const c = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'copy' }))
    assert.equal((await bytesOf(c.Body)).toString(), 'original bytes')
    assert.deepEqual([c.ContentType, c.Metadata], ['text/plain', { k: 'v' }])
    await s3.send(new CopyObjectCommand({ Bucket: 'photos', Key: 'copy', CopySource: 'photos/copy', MetadataDirective: 'REPLACE', Metadata: { n: 'w' }, ContentType: 'text/x' }))
    const r = await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'copy' }))
    assert.deepEqual([r.ContentType, r.Metadata], ['text/x', { n: 'w' }])
    assert.equal((await failsWith(s3.send(new CopyObjectCommand({ Bucket: 'photos', Key: 'copy', CopySource: 'photos/copy' })))).code, 'InvalidRequest')
    assert.equal((await failsWith(s3.send(new CopyObjectCommand({ Bucket: 'photos', Key: 'x', CopySource: 'listing/none' })))).code, 'NoSuchKey')

    await s3.send(new DeleteObjectCommand({ Bucket: 'listing', Key: 'orig' }))
    // deleting what is not there succeeds, as in S3
    await s3.send(new DeleteObjectCommand({ Bucket: 'listing', Key: 'orig' }))
    const many = await s3.send(new DeleteObjectsCommand({ Bucket: 'listing', Delete: { Objects: [{ Key: 'a/1' }, { Key: 'a/2' }, { Key: 'never' }] } }))
    assert.deepEqual(many.Deleted?.map(d => d.Key).sort(), ['a/1', 'a/2', 'never'])
    assert.deepEqual((await s3.send(new ListObjectsV2Command({ Bucket: 'listing', Prefix: 'a' }))).KeyCount, 0)
  })

  it('uploads 100 MiB in parts (list, abort, complete) and reads it back whole and across parts', async function () {
    this.timeout(600_000)
    const partSize = 10 * MiB
    const body = randomBytes(100 * MiB)
    // an upload aborted leaves nothing behind
    const aborted = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'photos', Key: 'gone' }))
    await s3.send(new UploadPartCommand({ Bucket: 'photos', Key: 'gone', UploadId: aborted.UploadId, PartNumber: 1, Body: body.subarray(0, MiB) }))
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'photos', Key: 'gone', UploadId: aborted.UploadId }))
    assert.equal((await failsWith(s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'gone', UploadId: aborted.UploadId })))).code, 'NoSuchUpload')

    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'photos', Key: 'video.mp4', ContentType: 'video/mp4', Metadata: { length: '100MiB' } }))
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'photos' }))
    assert.deepEqual(uploads.Uploads?.map(u => [u.Key, u.UploadId]), [['video.mp4', UploadId]])
    const parts: Array<{ PartNumber: number, ETag: string }> = []
    for (let n = 1; n * partSize <= body.byteLength; n++) {
      const r = await s3.send(new UploadPartCommand({ Bucket: 'photos', Key: 'video.mp4', UploadId, PartNumber: n, Body: body.subarray((n - 1) * partSize, n * partSize) }))
      assert.equal(r.ETag, `"${md5(body.subarray((n - 1) * partSize, n * partSize))}"`)
      parts.push({ PartNumber: n, ETag: r.ETag as string })
    }
    const listed = await s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'video.mp4', UploadId, MaxParts: 4 }))
    assert.deepEqual([listed.Parts?.map(p => p.PartNumber), listed.IsTruncated, listed.NextPartNumberMarker], [[1, 2, 3, 4], true, '4'])
    assert.equal((await failsWith(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'photos', Key: 'video.mp4', UploadId, MultipartUpload: { Parts: [parts[1], parts[0]] } })))).code, 'InvalidPartOrder')
    assert.equal((await failsWith(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'photos', Key: 'video.mp4', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"00"' }] } })))).code, 'InvalidPart')
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'photos', Key: 'video.mp4', UploadId, MultipartUpload: { Parts: parts } }))
    const expected = createHash('md5').update(Buffer.concat(parts.map(p => Buffer.from(p.ETag.slice(1, -1), 'hex')))).digest('hex') + '-10'
    assert.equal(done.ETag, `"${expected}"`)
    assert.deepEqual((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'photos' }))).Uploads ?? [], [])
    const got = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'video.mp4' }))
    assert.deepEqual([got.ContentLength, got.ETag, got.ContentType, got.Metadata], [body.byteLength, `"${expected}"`, 'video/mp4', { length: '100MiB' }])
    assert.equal(sha(await bytesOf(got.Body)), sha(body))
    // a range across the boundary of parts 3 and 4
    const a = 3 * partSize - 100
    const r = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'video.mp4', Range: `bytes=${a}-${a + 199}` }))
    assert.deepEqual(await bytesOf(r.Body), body.subarray(a, a + 200))
  })

  it('refuses a wrong secret, an unknown key and anonymous requests with S3\'s error XML', async function () {
    const wrong = client((gw as GatewayProcess).url, key.accessKey, 'not the secret')
    assert.deepEqual(await failsWith(wrong.send(new ListBucketsCommand({}))), { code: 'SignatureDoesNotMatch', status: 403 })
    const unknown = client((gw as GatewayProcess).url, 'SDNOSUCHKEY000000000', key.secret)
    assert.deepEqual(await failsWith(unknown.send(new ListBucketsCommand({}))), { code: 'InvalidAccessKeyId', status: 403 })
    const anon = await fetch(`${(gw as GatewayProcess).url}/photos/ranged`)
    assert.equal(anon.status, 403)
    assert.match(await anon.text(), /<Error><Code>AccessDenied<\/Code>/)
    // a CORS preflight (never signed): no bucket has a CORS configuration
    const preflight = await fetch(`${(gw as GatewayProcess).url}/photos/ranged`, { method: 'OPTIONS' })
    assert.equal(preflight.status, 400)
    assert.match(await preflight.text(), /<Code>BadRequest<\/Code>/)
    assert.equal((await fetch(`${(gw as GatewayProcess).url}/photos/ranged`, { method: 'OPTIONS', headers: { origin: 'http://example.com', 'access-control-request-method': 'GET' } })).status, 403)
    wrong.destroy()
    unknown.destroy()
  })

  it('serves presigned URLs until they expire', async function () {
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'photos', Key: 'streamed' }), { expiresIn: 60 })
    const ok = await fetch(url)
    assert.equal(ok.status, 200)
    assert.equal((await ok.arrayBuffer()).byteLength, 200_000)
    const put = await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'photos', Key: 'presigned-put' }), { expiresIn: 60 })
    assert.equal((await fetch(put, { method: 'PUT', body: 'via a presigned URL' })).status, 200)
    assert.equal((await bytesOf((await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'presigned-put' }))).Body)).toString(), 'via a presigned URL')
    // a body of unknown length (Transfer-Encoding: chunked), longer than the 16 MiB segments it is stored in
    const unsized = randomBytes(17 * MiB + 123)
    const chunkedPut = await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'photos', Key: 'unsized' }), { expiresIn: 60 })
    const pieces = Readable.toWeb(Readable.from((function * () { for (let i = 0; i < unsized.length; i += MiB) yield unsized.subarray(i, i + MiB) })()))
    const sent = await fetch(chunkedPut, { method: 'PUT', body: pieces as any, duplex: 'half' } as any)
    assert.equal(sent.status, 200, await sent.text())
    assert.equal(sent.headers.get('etag'), `"${md5(unsized)}"`)
    const back = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'unsized' }))
    assert.equal(back.ContentLength, unsized.length)
    assert.equal(sha(await bytesOf(back.Body)), sha(unsized))
    // signed a minute ago for one second: expired
    const old = await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'photos', Key: 'streamed' }), { expiresIn: 1, signingDate: new Date(Date.now() - 60_000) })
    const expired = await fetch(old)
    assert.equal(expired.status, 403)
    assert.match(await expired.text(), /<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/)
  })

  it('serves after a restart what it stored before, and a second gateway of the same identity sees the same', async function () {
    this.timeout(300_000)
    const body = randomBytes(2 * MiB + 7)
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'before-restart', Body: body }))
    await gw?.kill()
    s3.destroy()
    gw = await start()
    s3 = client(gw.url, key.accessKey, key.secret)
    assert.deepEqual(await bytesOf((await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'before-restart' }))).Body), body)

    // the same identity on "another host": its keys restored into a fresh data dir
    const keys = join(f.dir, 'alice.keys')
    await exportKeys(userDir(), keys)
    const other = join(f.dir, 'alice-elsewhere')
    await importKeys(other, keys)
    const gw2 = await start(other)
    const s3b = client(gw2.url, key.accessKey, key.secret)
    try {
      assert.deepEqual((await s3b.send(new ListBucketsCommand({}))).Buckets?.map(b => b.Name), (await s3.send(new ListBucketsCommand({}))).Buckets?.map(b => b.Name))
      assert.deepEqual(await bytesOf((await s3b.send(new GetObjectCommand({ Bucket: 'photos', Key: 'before-restart' }))).Body), body)
      await s3b.send(new PutObjectCommand({ Bucket: 'photos', Key: 'from-second', Body: 'hello' }))
      assert.equal((await bytesOf((await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'from-second' }))).Body)).toString(), 'hello')
    } finally {
      s3b.destroy()
      await gw2.kill()
    }
  })

  it('manages access keys from the CLI: add shows the secret once, ls lists, rm revokes', async function () {
    const common = ['--data-dir', userDir(), '--bootstrap', f.cluster.bootstrap, '--json']
    const added = await cli(['gateway', 'key', 'add', 'laptop', ...common])
    assert.equal(added.code, 0, added.stderr)
    const k = JSON.parse(added.stdout)
    assert.match(k.accessKey, /^SD[A-Z2-7]{18}$/)
    const ls = await cli(['gateway', 'key', 'ls', ...common])
    const listed = JSON.parse(ls.stdout).keys
    assert.deepEqual(listed.map((x: any) => x.name).sort(), ['laptop', 'tests'])
    assert.ok(!ls.stdout.includes(k.secret), 'ls does not show secrets')
    const laptop = client((gw as GatewayProcess).url, k.accessKey, k.secret)
    await laptop.send(new ListBucketsCommand({}))
    const rm = await cli(['gateway', 'key', 'rm', 'laptop', ...common])
    assert.equal(rm.code, 0, rm.stderr)
    // a gateway remembers a key for up to 10 s
    await eventually('the removed key is refused', async () => await laptop.send(new ListBucketsCommand({})).then(() => false, (err: any) => err.Code === 'InvalidAccessKeyId'), 30_000)
    const again = await cli(['gateway', 'key', 'rm', 'laptop', ...common])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /no access key has the id or name "laptop"/)
    laptop.destroy()
  })
})
