/**
 * Fast tests of the S3 gateway's pure parts: SigV4 checked against @smithy/signature-v4 (the
 * AWS SDK's own signer), aws-chunked decoding with chunk signatures, S3 listing, Range headers,
 * the ranged download's segments, the streaming upload source, the additional checksums
 * (x-amz-checksum-*) against their published check values and the AWS SDK's own, and the records'
 * wire messages fed garbage.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { SignatureV4 } from '@smithy/signature-v4'
import { Sha256 } from '@aws-crypto/sha256-js'
import { chunkSignature, signingKey, verifyRequest, STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER, type SigningContext } from '../src/gateway/sigv4.ts'
import { decodeAwsChunked } from '../src/gateway/chunked.ts'
import { checkChecksum, makeHasher, wantedChecksum } from '../src/gateway/checksum.ts'
import { HashWorker } from '../src/gateway/hasher.ts'
import { crc32 } from 'node:zlib'
import { listKeys } from '../src/gateway/list.ts'
import { parseListen, parseRange, checkBucketName, headersOf, operationOf } from '../src/gateway/index.ts'
import { S3Error } from '../src/gateway/errors.ts'
import { planSegments, copyInto } from '../src/roles/user/range.ts'
import { streamSource } from '../src/roles/user/source.ts'
import * as R from '../src/protocol/messages.ts'
import { Op } from '../src/protocol/fat-sync.ts'
import { MalformedMessageError } from '../src/errors.ts'

const credentials = { accessKeyId: 'SDTESTKEY0000000000', secretAccessKey: 'secret/with+chars=' }
const secretOf = async (k: string): Promise<string | undefined> => k === credentials.accessKeyId ? credentials.secretAccessKey : undefined
const signer = new SignatureV4({ credentials, region: 'us-east-1', service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: false })

interface Req { method: string, path: string, query?: Record<string, string>, headers?: Record<string, string> }
/** Signs with the SDK's signer and turns the result into what the gateway sees on the wire. */
async function signed (r: Req, payload = 'UNSIGNED-PAYLOAD', at = new Date()): Promise<{ method: string, rawPath: string, rawQuery: string, headers: Record<string, string> }> {
  // the SDK signs the path as it goes on the wire, each segment percent-encoded
  const req = { method: r.method, protocol: 'http:', hostname: '127.0.0.1', port: 9000, path: encodePath(r.path), query: r.query ?? {}, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': payload, ...(r.headers ?? {}) } }
  const s = await signer.sign(req as any, { signingDate: at }) as any
  return { method: s.method, rawPath: s.path, rawQuery: rawQuery(s.query), headers: lower(s.headers) }
}
const encodePath = (p: string): string => p.split('/').map(seg => encodeURIComponent(seg).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase())).join('/')
const rawQuery = (q: Record<string, string | string[]>): string => Object.entries(q).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`).join('&')
const lower = (h: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]))

describe('gateway: SigV4 against @smithy/signature-v4', function () {
  it('accepts what the SDK signs in the header, with odd keys and queries', async function () {
    for (const path of ['/bucket/plain', '/bucket/a b/c+d', '/bucket/ünï©ødé/~x', '/bucket/semi;colon=eq&amp', '/']) {
      const req = await signed({ method: 'GET', path, query: { prefix: 'a b', 'max-keys': '2', delimiter: '/' }, headers: { range: 'bytes=0-1' } })
      const ctx = await verifyRequest(req, secretOf)
      assert.equal(ctx.accessKey, credentials.accessKeyId)
    }
  })

  it('accepts a signed payload hash and a presigned URL', async function () {
    const body = 'hello'
    const sha = createHash('sha256').update(body).digest('hex')
    const req = await signed({ method: 'PUT', path: '/bucket/key' }, sha)
    assert.equal((await verifyRequest(req, secretOf)).payload, sha)
    const pre = await signer.presign({ method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: 9000, path: '/bucket/key', query: {}, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as any, { expiresIn: 60 }) as any
    const ctx = await verifyRequest({ method: 'GET', rawPath: '/bucket/key', rawQuery: rawQuery(pre.query), headers: lower(pre.headers) }, secretOf)
    assert.equal(ctx.payload, 'UNSIGNED-PAYLOAD')
  })

  it('accepts non-ASCII metadata signed in UTF-8, read from the bytes node shows as Latin-1', async function () {
    const req = await signed({ method: 'PUT', path: '/bucket/key', headers: { 'x-amz-meta-greeting': 'Hello Worldé ✓' } })
    // node hands over each byte of a header value as one character
    const onWire = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('latin1')]))
    const headers = headersOf({ headers: onWire }) as Record<string, string>
    assert.equal(headers['x-amz-meta-greeting'], 'Hello Worldé ✓')
    await verifyRequest({ ...req, headers }, secretOf)
    // bytes that are not UTF-8 stay as they came
    assert.equal(headersOf({ headers: { 'x-a': 'caf\xe9' } })['x-a'], 'caf\xe9')
  })

  it('refuses a wrong secret, an unknown key, a changed request, an old request and an expired URL', async function () {
    const req = await signed({ method: 'GET', path: '/bucket/key' })
    await assert.rejects(verifyRequest(req, async () => 'another secret'), (e: any) => e.code === 'SignatureDoesNotMatch')
    await assert.rejects(verifyRequest(req, async () => undefined), (e: any) => e.code === 'InvalidAccessKeyId')
    await assert.rejects(verifyRequest({ ...req, rawPath: '/bucket/other' }, secretOf), (e: any) => e.code === 'SignatureDoesNotMatch')
    await assert.rejects(verifyRequest({ ...req, headers: { ...req.headers, 'x-amz-content-sha256': 'a'.repeat(64) } }, secretOf), (e: any) => e.code === 'SignatureDoesNotMatch')
    await assert.rejects(verifyRequest({ ...req, rawQuery: 'prefix=x' }, secretOf), (e: any) => e.code === 'SignatureDoesNotMatch')
    const old = await signed({ method: 'GET', path: '/bucket/key' }, 'UNSIGNED-PAYLOAD', new Date(Date.now() - 20 * 60_000))
    await assert.rejects(verifyRequest(old, secretOf), (e: any) => e.code === 'RequestTimeTooSkewed')
    const pre = await signer.presign({ method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: 9000, path: '/bucket/key', query: {}, headers: { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as any, { expiresIn: 1, signingDate: new Date(Date.now() - 10_000) }) as any
    await assert.rejects(verifyRequest({ method: 'GET', rawPath: '/bucket/key', rawQuery: rawQuery(pre.query), headers: lower(pre.headers) }, secretOf), (e: any) => e.code === 'AccessDenied' && /expired/.test(e.message))
  })
})

describe('gateway: aws-chunked bodies', function () {
  const ctx = (): SigningContext => {
    const amzDate = '20261204T120000Z'
    return { accessKey: 'k', payload: STREAMING_SIGNED, amzDate, scope: '20261204/us-east-1/s3/aws4_request', signingKey: signingKey('s', '20261204', 'us-east-1', 's3'), seed: 'a'.repeat(64) }
  }
  const encode = (c: SigningContext, pieces: Buffer[], tamper = -1): Buffer => {
    let prev = c.seed
    const out: Buffer[] = []
    for (const [i, p] of [...pieces, Buffer.alloc(0)].entries()) {
      let sig = chunkSignature(c, prev, createHash('sha256').update(p).digest('hex'))
      prev = sig
      if (i === tamper) sig = 'b'.repeat(64)
      out.push(Buffer.from(`${p.byteLength.toString(16)};chunk-signature=${sig}\r\n`), p, Buffer.from('\r\n'))
    }
    return Buffer.concat(out)
  }
  async function * split (b: Buffer, n: number): AsyncGenerator<Buffer> { for (let i = 0; i < b.byteLength; i += n) yield b.subarray(i, i + n) }
  const collect = async (g: AsyncIterable<Buffer>): Promise<Buffer> => { const a: Buffer[] = []; for await (const x of g) a.push(x); return Buffer.concat(a) }

  it('decodes chunks split anywhere and checks each signature', async function () {
    const pieces = [Buffer.alloc(65536, 1), Buffer.alloc(1000, 2)]
    const body = encode(ctx(), pieces)
    for (const n of [1, 7, 4096, body.byteLength]) assert.deepEqual(await collect(decodeAwsChunked(split(body, n), ctx(), 66536)), Buffer.concat(pieces))
    await assert.rejects(collect(decodeAwsChunked(split(encode(ctx(), pieces, 1), 999), ctx(), 66536)), (e: any) => e instanceof S3Error && e.code === 'SignatureDoesNotMatch')
    await assert.rejects(collect(decodeAwsChunked(split(body.subarray(0, 5000), 999), ctx(), 66536)), (e: any) => e instanceof S3Error && e.code === 'IncompleteBody')
    await assert.rejects(collect(decodeAwsChunked(split(body, 999), ctx(), 10)), (e: any) => e instanceof S3Error)
  })

  it('hands on the trailing headers of an unsigned body with a trailer', async function () {
    const unsigned = { ...ctx(), payload: STREAMING_UNSIGNED_TRAILER }
    const body = Buffer.from('5\r\nhello\r\n3\r\n!!!\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n')
    for (const n of [1, 5, body.byteLength]) {
      const trailers: string[] = []
      assert.equal((await collect(decodeAwsChunked(split(body, n), unsigned, 8, (name, value) => trailers.push(`${name}=${value}`)))).toString(), 'hello!!!')
      assert.deepEqual(trailers, ['x-amz-checksum-crc32=NhCmhg=='])
    }
  })

  it('refuses garbage with an S3 error, never another', async function () {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async bytes => {
      try { await collect(decodeAwsChunked(split(Buffer.from(bytes), 17), ctx(), 100)) } catch (e) { assert.ok(e instanceof S3Error, String(e)) }
    }), { numRuns: 200 })
  })
})

describe('gateway: additional checksums (x-amz-checksum-*)', function () {
  const check = Buffer.from('123456789')
  const digest = (algorithm: string, pieces: Uint8Array[]): string => {
    const h = makeHasher(algorithm, createHash, crc32)
    for (const p of pieces) h.update(p)
    return h.digest()
  }

  it('computes CRC-32 and CRC-32C to their check values, in pieces, and SHA-1 and SHA-256 as node does', function () {
    // the check values of the CRC catalogue: CRC-32/ISO-HDLC and CRC-32/ISCSI of "123456789"
    assert.equal(digest('crc32', [check]), 'cbf43926')
    assert.equal(digest('crc32c', [check]), 'e3069283')
    assert.equal(digest('crc32c', [check.subarray(0, 4), check.subarray(4)]), 'e3069283')
    assert.equal(digest('crc32c', []), '00000000')
    for (const a of ['sha1', 'sha256']) assert.equal(digest(a, [check.subarray(0, 2), check.subarray(2)]), createHash(a).update(check).digest('hex'))
  })

  it('agrees with the checksums the AWS SDK sends', async function () {
    const { Crc32, Crc32c } = await import('@aws-sdk/checksums/crc' as string) as any
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 5000 }), async bytes => {
      for (const [name, C] of [['crc32', Crc32], ['crc32c', Crc32c]] as const) {
        const c = new C()
        c.update(bytes)
        assert.equal(digest(name, [bytes]), Buffer.from(await c.digest()).toString('hex'))
      }
    }), { numRuns: 100 })
  })

  it('hashes on the hashing thread as it does here, the thread running the same code from its source', async function () {
    const body = Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a)
    const worker = new HashWorker()
    const job = worker.hashing(['md5', 'crc32', 'crc32c', 'sha1'], body.byteLength)
    for (let i = 0; i < body.byteLength; i += 100_000) await job.update(body.subarray(i, i + 100_000))
    assert.deepEqual(await job.digest(), ['md5', 'crc32', 'crc32c', 'sha1'].map(a => digest(a, [body])))
    await worker.close()
  })

  it('reads what a request asks for, and refuses malformed, several or unsupported checksums with S3 errors', function () {
    const crc = Buffer.from(digest('crc32', [check]), 'hex').toString('base64')
    assert.equal(wantedChecksum({}), undefined)
    assert.deepEqual(wantedChecksum({ 'x-amz-checksum-crc32': crc, 'x-amz-checksum-mode': 'ENABLED' }), { algorithm: 'crc32', header: 'x-amz-checksum-crc32', value: crc, inTrailer: false })
    assert.deepEqual(wantedChecksum({ 'x-amz-trailer': 'x-amz-checksum-crc32c' }), { algorithm: 'crc32c', header: 'x-amz-checksum-crc32c', inTrailer: true })
    const code = (h: Record<string, string>): string => { try { wantedChecksum(h) } catch (e: any) { assert.ok(e instanceof S3Error); return e.code } return 'none' }
    assert.equal(code({ 'x-amz-checksum-crc32': 'AAAA' }), 'InvalidRequest')
    assert.equal(code({ 'x-amz-checksum-sha256': crc }), 'InvalidRequest')
    assert.equal(code({ 'x-amz-checksum-crc32': crc, 'x-amz-checksum-sha1': 'x' }), 'InvalidRequest')
    assert.equal(code({ 'x-amz-trailer': 'x-amz-meta-foo' }), 'InvalidRequest')
    assert.equal(code({ 'x-amz-checksum-crc64nvme': 'AAAAAAAAAAA=' }), 'NotImplemented')
    const wanted = wantedChecksum({ 'x-amz-checksum-crc32': crc })!
    checkChecksum(wanted, digest('crc32', [check]))
    assert.throws(() => { checkChecksum(wanted, digest('crc32', [check.subarray(1)])) }, (e: any) => e instanceof S3Error && e.code === 'BadDigest' && /CRC32 you specified/.test(e.message))
    assert.throws(() => { checkChecksum({ algorithm: 'crc32', header: 'x-amz-checksum-crc32', inTrailer: true }, '00000000') }, (e: any) => e instanceof S3Error && e.code === 'InvalidRequest')
  })
})

describe('gateway: listing, ranges, names', function () {
  const e = (...keys: string[]): Array<{ key: string, value: number }> => keys.map((key, i) => ({ key, value: i }))
  it('rolls keys up into common prefixes and pages by max-keys', function () {
    const all = e('b', 'a/1', 'a/2', 'c/x/y', 'c/z', 'd')
    const p = listKeys(all, { delimiter: '/', maxKeys: 1000 })
    assert.deepEqual(p.contents.map(c => c.key), ['b', 'd'])
    assert.deepEqual(p.prefixes, ['a/', 'c/'])
    const first = listKeys(all, { delimiter: '/', maxKeys: 2 })
    assert.deepEqual([first.prefixes, first.contents.map(c => c.key), first.truncated, first.last], [['a/'], ['b'], true, 'b'])
    const next = listKeys(all, { delimiter: '/', maxKeys: 2, after: first.last })
    assert.deepEqual([next.prefixes, next.contents.map(c => c.key), next.truncated], [['c/'], ['d'], false])
    assert.deepEqual(listKeys(all, { prefix: 'c/', delimiter: '/', maxKeys: 9 }).prefixes, ['c/x/'])
    assert.equal(listKeys(all, { maxKeys: 0 }).truncated, false)
  })

  it('reads Range headers as S3 does', function () {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 10 })
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 100 })
    assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 100 })
    assert.deepEqual(parseRange('bytes=50-1000', 100), { start: 50, end: 100 })
    assert.equal(parseRange('bytes=5-1', 100), undefined)
    assert.equal(parseRange('items=1-2', 100), undefined)
    assert.throws(() => parseRange('bytes=100-', 100), (x: any) => x.code === 'InvalidRange')
  })

  it('cuts a range into segments of whole chunks and copies each chunk\'s share', function () {
    const segs = planSegments(5, 35, 10, 20)
    assert.deepEqual(segs, [{ start: 5, end: 20, from: 0, to: 2 }, { start: 20, end: 35, from: 2, to: 4 }])
    const into = Buffer.alloc(15)
    copyInto(into, segs[0], Buffer.from('0123456789'), 0)
    copyInto(into, segs[0], Buffer.from('abcdefghij'), 10)
    assert.equal(into.toString(), '56789abcdefghij')
  })

  it('checks names and addresses', function () {
    assert.throws(() => { checkBucketName('ab') }, (x: any) => x.code === 'InvalidBucketName')
    assert.throws(() => { checkBucketName('Upper') }, (x: any) => x.code === 'InvalidBucketName')
    checkBucketName('my-bucket.1')
    assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 })
    assert.deepEqual(parseListen('[::1]:9000'), { host: '::1', port: 9000 })
    assert.throws(() => parseListen('9000'), /HOST:PORT/)
  })

  it('names the S3 operation a request asks for, as its metrics count it', function () {
    const op = (method: string, bucket: string, key: string, query: Record<string, string> = {}, copy = false): string => operationOf(method, bucket, key, new Map(Object.entries(query)), copy)
    assert.equal(op('GET', '', ''), 'ListBuckets')
    assert.equal(op('PUT', '', ''), 'Unsupported')
    assert.equal(op('PUT', 'b', ''), 'CreateBucket')
    assert.equal(op('HEAD', 'b', ''), 'HeadBucket')
    assert.equal(op('DELETE', 'b', ''), 'DeleteBucket')
    assert.equal(op('GET', 'b', ''), 'ListObjects')
    assert.equal(op('GET', 'b', '', { 'list-type': '2', prefix: 'a/' }), 'ListObjectsV2')
    assert.equal(op('GET', 'b', '', { versions: '' }), 'ListObjectVersions')
    assert.equal(op('GET', 'b', '', { uploads: '' }), 'ListMultipartUploads')
    assert.equal(op('GET', 'b', '', { location: '' }), 'GetBucketLocation')
    assert.equal(op('GET', 'b', '', { versioning: '' }), 'GetBucketVersioning')
    assert.equal(op('GET', 'b', '', { acl: '' }), 'Unsupported')
    assert.equal(op('POST', 'b', '', { delete: '' }), 'DeleteObjects')
    assert.equal(op('PUT', 'b', 'k'), 'PutObject')
    assert.equal(op('PUT', 'b', 'k', {}, true), 'CopyObject')
    assert.equal(op('PUT', 'b', 'k', { partNumber: '1', uploadId: 'u' }), 'UploadPart')
    assert.equal(op('PUT', 'b', 'k', { partNumber: '1', uploadId: 'u' }, true), 'UploadPartCopy')
    assert.equal(op('GET', 'b', 'k', { 'response-content-type': 'a/b' }), 'GetObject')
    assert.equal(op('HEAD', 'b', 'k', { partNumber: '2' }), 'HeadObject')
    assert.equal(op('GET', 'b', 'k', { uploadId: 'u' }), 'ListParts')
    assert.equal(op('DELETE', 'b', 'k'), 'DeleteObject')
    assert.equal(op('DELETE', 'b', 'k', { versionId: 'v1' }), 'Unsupported')
    assert.equal(op('DELETE', 'b', 'k', { uploadId: 'u' }), 'AbortMultipartUpload')
    assert.equal(op('POST', 'b', 'k', { uploads: '' }), 'CreateMultipartUpload')
    assert.equal(op('POST', 'b', 'k', { uploadId: 'u' }), 'CompleteMultipartUpload')
    assert.equal(op('GET', 'b', 'k', { tagging: '' }), 'Unsupported')
  })
})

describe('user: streaming source', function () {
  it('serves reads in order whenever they come, and fails a short stream', async function () {
    async function * gen (): AsyncGenerator<Uint8Array> { for (let i = 0; i < 10; i++) yield Buffer.alloc(3, i) }
    const src = streamSource('s', 30, gen())
    const a = Buffer.alloc(10)
    const b = Buffer.alloc(10)
    const c = Buffer.alloc(10)
    // the later reads come first and wait for the earlier ones
    await Promise.all([src.read(20, 10, c), src.read(10, 10, b), src.read(0, 10, a)])
    assert.deepEqual([...a, ...b, ...c], [...Array(30).keys()].map(i => Math.floor(i / 3)))
    const short = streamSource('s', 40, gen())
    await short.read(0, 30, Buffer.alloc(30))
    await assert.rejects(short.read(30, 10, Buffer.alloc(10)), /ended after 30 of 40/)
  })
})

describe('records: wire messages', function () {
  const owner = '12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMq8edRZjZ'
  const auth = { owner, nonce: '0'.repeat(32), time: 1, sig: '0'.repeat(128) }
  it('decodes valid messages and refuses garbage with MalformedMessageError only', function () {
    const scope = 'a'.repeat(32)
    const id = 'b'.repeat(64)
    R.WriteRecords({ t: 'write-records', writes: [{ scope, id, value: 'AAAA' }, { scope, id }], expect: [{ scope, id, absent: true }], auth }, 'm')
    R.ListRecords({ t: 'list-records', scope, after: id, limit: 10, auth }, 'm')
    R.RecordList({ t: 'record-list', records: [{ id, value: 'QQ==' }], more: false }, 'm')
    Op({ op: 'records', owner, writes: [{ scope, id, value: 'AAAA' }] }, 'm')
    assert.throws(() => R.WriteRecords({ t: 'write-records', writes: [{ scope, id, value: 'not base64!' }], auth }, 'm'), MalformedMessageError)
    assert.throws(() => R.WriteRecords({ t: 'write-records', writes: [{ scope, id, value: 'A'.repeat(R.MAX_RECORD_VALUE * 2) }], auth }, 'm'), MalformedMessageError)
    assert.throws(() => R.WriteRecords({ t: 'write-records', writes: Array(R.MAX_RECORD_WRITES + 1).fill({ scope, id }), auth }, 'm'), MalformedMessageError)
    assert.throws(() => R.ListRecords({ t: 'list-records', scope, limit: 0, auth }, 'm'), MalformedMessageError)
    for (const check of [R.WriteRecords, R.GetRecords, R.ListRecords, R.RecordList, R.RecordsWritten, R.RecordsOp]) {
      fc.assert(fc.property(fc.anything(), v => {
        try { check(v, 'm') } catch (e) { assert.ok(e instanceof MalformedMessageError, String(e)) }
      }), { numRuns: 200 })
    }
  })
})
