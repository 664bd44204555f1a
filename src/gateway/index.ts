import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttps } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { User } from '../roles/user/index.ts'
import { InvalidArgumentError, NotFoundError } from '../errors.ts'
import { logger, type Logger } from '../logger.ts'
import { gatewayMonitoring, listenError, parseHttpListen, probedHealth, type GatewayMetrics, type Health, type HttpServer } from '../http/index.ts'
import { decodeAwsChunked } from './chunked.ts'
import { S3Error } from './errors.ts'
import { compareKeys, listKeys } from './list.ts'
import { isSigned, STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD, verifyRequest, type SigningContext } from './sigv4.ts'
import { checkChecksum, checkForm, wantedChecksum } from './checksum.ts'
import { GatewayStore, listKeys as accessKeys, secretOf, STORED_HEADERS, type ObjectRecord, type PartRecord } from './store.ts'
import { fromXml, MAX_XML_BODY, toXml } from './xml.ts'
import { HashWorker } from './hasher.ts'

export { addKey, listKeys as listAccessKeys, removeKey } from './store.ts'

export interface GatewayOptions {
  user: User
  /** host:port (port 0 picks a free one) */
  listen: string
  tls?: { cert: Buffer, key: Buffer }
  log?: Logger
  /** replicas of each object's chunks (default: the client's default) */
  replicas?: number
  chunkSize?: number
  /** Serve /metrics (Prometheus) and /health on this address, apart from S3: PORT, HOST:PORT or [IPv6]:PORT (as --http-listen) */
  httpListen?: string
}

export interface Gateway {
  /** where it listens, e.g. http://127.0.0.1:9000 */
  readonly url: string
  /** where it serves /metrics and /health (with httpListen), e.g. http://127.0.0.1:9100 */
  readonly http?: string
  /** Whether it serves: a FAT replica answers, one orders writes, and there is an access key to sign with. */
  health: () => Promise<Health>
  close: () => Promise<void>
}

/** S3 limits the gateway keeps. */
const MAX_KEY_BYTES = 1024
const MAX_META_BYTES = 2048
const MIN_PART_SIZE = 5 * 1024 * 1024
const MAX_PARTS = 10_000
/** Parts one object may have: its record lists their files, and a record holds 64 KiB. */
const MAX_OBJECT_PARTS = 800
const MAX_LIST_KEYS = 1000
/** A PutObject body of unknown length (Transfer-Encoding: chunked): S3's limit of one PUT, and the files it is cut into. */
const MAX_UNSIZED_BODY = 5 * 1024 ** 3
const UNSIZED_SEGMENT = 16 * 1024 * 1024
/**
 * The names objects' files get in their tables: the FAT sees a file's name, so it is not the
 * bucket or the key (those are sealed in the records).
 */
const OBJECT_FILE = 's3 object'
const PART_FILE = 's3 object part'
/** A secret looked up is remembered this long (a removed key stops working within it). */
const KEY_CACHE_MS = 10_000
/** A health answer stands this long: a scraper asking often costs the FAT one probe per this. */
const HEALTH_FRESH_MS = 2_000
/** A health probe the FAT has not answered within this is answered unhealthy. */
const HEALTH_TIMEOUT_MS = 5_000

/** The S3 API calls the gateway serves, as S3 names them; `Unsupported` is any other request. */
export type Operation =
  | 'ListBuckets' | 'CreateBucket' | 'HeadBucket' | 'DeleteBucket' | 'GetBucketLocation' | 'GetBucketVersioning'
  | 'ListObjects' | 'ListObjectsV2' | 'ListObjectVersions' | 'ListMultipartUploads' | 'DeleteObjects'
  | 'PutObject' | 'CopyObject' | 'GetObject' | 'HeadObject' | 'DeleteObject'
  | 'CreateMultipartUpload' | 'UploadPart' | 'UploadPartCopy' | 'ListParts' | 'CompleteMultipartUpload' | 'AbortMultipartUpload'
  | 'Unsupported'

const LIST_OBJECTS_PARAMS = new Set(['list-type', 'prefix', 'delimiter', 'max-keys', 'marker', 'continuation-token', 'start-after', 'encoding-type', 'fetch-owner', 'allow-unordered'])

/**
 * Which operation a request asks for, from its method, bucket, key and query (parameters other
 * than x-amz-*), and whether it names a copy source. The metrics are labelled with it, so it is
 * known before the signature is checked: a refused request is counted under what it asked.
 */
export function operationOf (method: string, bucket: string, key: string, query: Map<string, string>, copySource: boolean): Operation {
  const has = (k: string): boolean => query.has(k)
  if (bucket === '') return method === 'GET' ? 'ListBuckets' : 'Unsupported'
  if (key === '') {
    if (method === 'PUT' && query.size === 0) return 'CreateBucket'
    if (method === 'HEAD') return 'HeadBucket'
    if (method === 'DELETE' && query.size === 0) return 'DeleteBucket'
    if (method === 'GET' && has('uploads')) return 'ListMultipartUploads'
    if (method === 'GET' && has('versions')) return 'ListObjectVersions'
    if (method === 'GET' && has('location')) return 'GetBucketLocation'
    if (method === 'GET' && has('versioning')) return 'GetBucketVersioning'
    if (method === 'GET' && [...query.keys()].every(k => LIST_OBJECTS_PARAMS.has(k))) return query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects'
    if (method === 'POST' && has('delete')) return 'DeleteObjects'
    return 'Unsupported'
  }
  if (method === 'PUT' && has('partNumber') && has('uploadId')) return copySource ? 'UploadPartCopy' : 'UploadPart'
  if (method === 'PUT' && query.size === 0) return copySource ? 'CopyObject' : 'PutObject'
  if ((method === 'GET' || method === 'HEAD') && has('uploadId')) return 'ListParts'
  const plainRead = [...query.keys()].every(k => k.startsWith('response-') || k === 'versionId' || k === 'partNumber')
  if (method === 'GET' && plainRead) return 'GetObject'
  if (method === 'HEAD' && plainRead) return 'HeadObject'
  if (method === 'DELETE' && has('uploadId')) return 'AbortMultipartUpload'
  if (method === 'DELETE' && [...query.keys()].every(k => k === 'versionId') && (query.get('versionId') ?? 'null') === 'null') return 'DeleteObject'
  if (method === 'POST' && has('uploads')) return 'CreateMultipartUpload'
  if (method === 'POST' && has('uploadId')) return 'CompleteMultipartUpload'
  return 'Unsupported'
}

/** A request's query parameters, decoded; x-amz-* (a presigned URL's signing) and x-id are not among them. */
function queryOf (rawQuery: string): Map<string, string> {
  const query = new Map<string, string>()
  for (const [k, v] of rawQuery === '' ? [] : rawQuery.split('&').map(p => { const i = p.indexOf('='); return i < 0 ? [p, ''] : [p.slice(0, i), p.slice(i + 1)] })) {
    const name = decodeURIComponent(k)
    if (!name.toLowerCase().startsWith('x-amz-') && name !== 'x-id') query.set(name, decodeURIComponent(v.replace(/\+/g, '%20')))
  }
  return query
}

/** The body bytes of one request, as its metrics count them: the payload received (after aws-chunked decoding) and sent. */
interface Counted { in: number, out: number }

interface Request {
  req: IncomingMessage
  res: ServerResponse
  method: string
  bucket: string
  key: string
  query: Map<string, string>
  headers: Record<string, string | undefined>
  signing: SigningContext
  id: string
  counted: Counted
}

/**
 * The request's headers, a value's bytes read as UTF-8 when they are (node reads them as Latin-1):
 * clients send and sign non-ASCII metadata in UTF-8, and node writes header values back in UTF-8.
 */
export function headersOf (req: Pick<IncomingMessage, 'headers'>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(req.headers)) {
    const value = Array.isArray(v) ? v.join(',') : v
    if (value == null || !/[^\x00-\x7f]/.test(value)) { out[k] = value; continue }
    const bytes = Buffer.from(value, 'latin1')
    const text = bytes.toString('utf8')
    out[k] = Buffer.from(text, 'utf8').equals(bytes) ? text : value
  }
  return out
}

const quote = (etag: string): string => `"${etag}"`
const unquote = (s: string): string => s.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1')
const httpDate = (ms: number): string => new Date(ms).toUTCString()
const isoDate = (ms: number): string => new Date(ms).toISOString()

export function checkBucketName (name: string): void {
  if (name.length < 3 || name.length > 63 || !/^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(name) || /\.\.|\.-|-\./.test(name) || /^\d+\.\d+\.\d+\.\d+$/.test(name)) {
    throw new S3Error('InvalidBucketName', 'The specified bucket is not valid: 3 to 63 characters of a-z, 0-9, dots and hyphens, starting and ending with a letter or digit.', { BucketName: name })
  }
}

/** Parses a Range header against an object of `size` bytes: [start, end) or undefined (whole object). */
export function parseRange (header: string | undefined, size: number): { start: number, end: number } | undefined {
  if (header == null) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  // a range S3 does not understand (several ranges, other units) is ignored: the whole object is sent
  if (m == null || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const n = Number(m[2])
    if (n === 0) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: header, ActualObjectSize: String(size) })
    return { start: Math.max(0, size - n), end: size }
  }
  const start = Number(m[1])
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (m[2] !== '' && Number(m[2]) < start) return undefined
  if (start >= size) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: header, ActualObjectSize: String(size) })
  return { start, end: last + 1 }
}

/** The user metadata and standard headers a PUT or CreateMultipartUpload sets. */
function metadataOf (headers: Record<string, string | undefined>): { meta: Record<string, string>, headers: ObjectRecord['headers'] } {
  const meta: Record<string, string> = {}
  let bytes = 0
  for (const [k, v] of Object.entries(headers)) {
    if (!k.startsWith('x-amz-meta-') || v == null) continue
    meta[k.slice('x-amz-meta-'.length)] = v
    bytes += k.length - 'x-amz-meta-'.length + Buffer.byteLength(v)
  }
  if (bytes > MAX_META_BYTES) throw new S3Error('MetadataTooLarge', `Your metadata headers exceed the maximum allowed metadata size (${MAX_META_BYTES} bytes).`)
  const stored: ObjectRecord['headers'] = {}
  for (const h of STORED_HEADERS) if (headers[h] != null) stored[h] = headers[h]
  // aws-chunked is how the body travelled, not what the object is
  if (stored['content-encoding'] != null) {
    const rest = stored['content-encoding'].split(',').map(e => e.trim()).filter(e => e !== '' && e !== 'aws-chunked')
    if (rest.length > 0) stored['content-encoding'] = rest.join(', ')
    else delete stored['content-encoding']
  }
  return { meta, headers: stored }
}

/** Runs the S3 gateway on `opts.listen`, acting as `opts.user`. */
export async function startGateway (opts: GatewayOptions): Promise<Gateway> {
  const { user } = opts
  const log = opts.log ?? logger('stor:gateway')
  // a bad address is refused before anything starts
  const httpAddr = opts.httpListen != null ? parseHttpListen(opts.httpListen) : undefined
  const monitor = httpAddr != null ? gatewayMonitoring(httpAddr, logger('stor:gateway:http')) : undefined
  const metrics: GatewayMetrics | undefined = monitor?.metrics
  const store = new GatewayStore(user, log)
  const hashes = new HashWorker()
  const secrets = new Map<string, { secret: string | undefined, at: number }>()
  const lookupSecret = async (accessKey: string): Promise<string | undefined> => {
    const cached = secrets.get(accessKey)
    if (cached != null && Date.now() - cached.at < KEY_CACHE_MS) return cached.secret
    const secret = await secretOf(user, accessKey)
    if (secrets.size > 10_000) secrets.clear()
    secrets.set(accessKey, { secret, at: Date.now() })
    return secret
  }
  const owner = { ID: user.peerId, DisplayName: user.peerId }
  const uploadOpts = { ...(opts.replicas != null ? { replicas: opts.replicas } : {}), ...(opts.chunkSize != null ? { chunkSize: opts.chunkSize } : {}) }

  // ---- bodies

  /**
   * The request body as it arrives, checked: decoded from aws-chunked (each chunk's signature
   * checked), its length, sha-256 (when signed) and Content-MD5 (when given) checked at its end.
   * `md5` is the bytes' MD5 once the body has ended. `size` is undefined for a body sent with
   * `Transfer-Encoding: chunked` and no length, which `unsized` allows (at most MAX_UNSIZED_BODY).
   */
  const bodyOf = (r: Request, unsized = false): { size: number | undefined, body: AsyncGenerator<Buffer>, md5: () => string, checksum: () => Record<string, string> } => {
    const { payload } = r.signing
    const streaming = payload.startsWith('STREAMING-')
    const lengthHeader = streaming ? r.headers['x-amz-decoded-content-length'] : r.headers['content-length']
    const chunkedOnly = lengthHeader == null && !streaming && r.headers['transfer-encoding'] != null
    if (lengthHeader == null && !(chunkedOnly && unsized)) throw new S3Error('MissingContentLength', `You must provide the ${streaming ? 'x-amz-decoded-content-length' : 'Content-Length'} HTTP header.`)
    const size = lengthHeader == null ? undefined : Number(lengthHeader)
    if (size != null && (!Number.isSafeInteger(size) || size < 0)) throw new S3Error('InvalidArgument', `the content length "${lengthHeader}" is not a byte count`)
    const wantMd5 = r.headers['content-md5']
    if (wantMd5 != null && !/^[A-Za-z0-9+/]{22}==$/.test(wantMd5)) throw new S3Error('InvalidDigest', 'The Content-MD5 you specified was not valid.')
    const wantSha = !streaming && payload !== UNSIGNED_PAYLOAD ? payload : undefined
    if (wantSha != null && !/^[0-9a-f]{64}$/.test(wantSha)) throw new S3Error('InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a sha-256 in hex')
    const wanted = wantedChecksum(r.headers)
    if (wanted?.inTrailer === true && !streaming) throw new S3Error('InvalidRequest', `x-amz-trailer: ${wanted.header} needs an aws-chunked body (x-amz-content-sha256: ${STREAMING_UNSIGNED_TRAILER} or a signed -TRAILER mode)`)
    const onTrailer = (name: string, value: string): void => {
      if (wanted?.inTrailer !== true || name !== wanted.header) return
      checkForm(wanted.algorithm, name, value)
      wanted.value = value
    }
    let digest = ''
    let checksumHex = ''
    const source: AsyncIterable<Buffer> = streaming ? decodeAwsChunked(r.req, r.signing, size as number, onTrailer) : r.req
    async function * body (): AsyncGenerator<Buffer> {
      // MD5 (the ETag), the signed SHA-256 and the client's checksum are computed on the hashing thread
      const algorithms = ['md5', ...(wantSha != null ? ['sha256'] : []), ...(wanted != null ? [wanted.algorithm] : [])]
      const hash = hashes.hashing(algorithms, size)
      const check = async (): Promise<void> => {
        const digests = await hash.digest()
        digest = digests[0]
        if (wantMd5 != null && Buffer.from(digest, 'hex').toString('base64') !== wantMd5) throw new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.')
        if (wantSha != null && digests[1] !== wantSha) throw new S3Error('XAmzContentSHA256Mismatch', 'The provided \'x-amz-content-sha256\' header does not match what was computed.')
        checksumHex = digests[algorithms.length - 1]
        // a trailing checksum arrives after the last bytes: it is checked once the body has ended
        if (wanted != null && !wanted.inTrailer) checkChecksum(wanted, checksumHex)
      }
      try {
        let got = 0
        if (size === 0) await check()
        for await (const piece of source) {
          if (size != null && got + piece.byteLength > size) throw new S3Error('IncompleteBody', `the body is longer than its ${size} bytes`)
          if (size == null && got + piece.byteLength > MAX_UNSIZED_BODY) throw new S3Error('EntityTooLarge', `Your proposed upload exceeds the maximum allowed size (${MAX_UNSIZED_BODY} bytes).`)
          got += piece.byteLength
          r.counted.in += piece.byteLength
          await hash.update(piece)
          // checked before the last bytes go on, so a bad body is never stored
          if (got === size) await check()
          yield piece
        }
        if (size == null) await check()
        else if (got !== size) throw new S3Error('IncompleteBody', `You did not provide the number of bytes specified by the Content-Length HTTP header (${got} of ${size}).`)
        if (wanted?.inTrailer === true) checkChecksum(wanted, checksumHex)
      } finally {
        hash.drop()
      }
    }
    // S3 answers a PUT with the checksum it checked
    const checksum = (): Record<string, string> => wanted?.value != null ? { [wanted.header]: wanted.value } : {}
    return { size, body: body(), md5: () => digest, checksum }
  }

  /**
   * Stores a request body as stordaemon files (none for an empty body); the body is read to its
   * end and checked. A body of known size is one file; one of unknown size (a PutObject sent with
   * Transfer-Encoding: chunked) is cut into files of UNSIZED_SEGMENT bytes, each stored once full,
   * so that no more than one segment is held.
   */
  const storeBody = async (r: Request, name: string, unsized = false): Promise<{ files: ObjectRecord['parts'], size: number, md5: string, checksum: Record<string, string> }> => {
    const { size, body, md5, checksum } = bodyOf(r, unsized)
    const files: ObjectRecord['parts'] = []
    const storeFile = async (source: AsyncIterable<Uint8Array>, bytes: number): Promise<void> => {
      files.push({ fileId: (await user.uploadStream(source, bytes, { ...uploadOpts, name: name.slice(0, 255) })).fileId, size: bytes })
    }
    try {
      if (size != null && size > 0) await storeFile(body, size)
      if (size == null) {
        let held: Buffer[] = []
        let heldBytes = 0
        const flush = async (): Promise<void> => {
          const segment = held
          const bytes = heldBytes
          held = []
          heldBytes = 0
          if (bytes > 0) await storeFile((async function * () { yield * segment })(), bytes)
        }
        for await (const piece of body) {
          held.push(piece)
          heldBytes += piece.byteLength
          if (heldBytes >= UNSIZED_SEGMENT) await flush()
        }
        // the body has ended, and been checked, before its last segment is stored
        await flush()
      }
      // the rest (an aws-chunked body's final chunk and trailer) is checked too
      for (;;) if ((await body.next()).done === true) break
    } catch (err) {
      await store.releaseFiles(files.map(f => f.fileId))
      throw err
    }
    return { files, size: size ?? files.reduce((a, f) => a + f.size, 0), md5: md5(), checksum: checksum() }
  }

  const readXml = async (r: Request, root: string): Promise<Record<string, any>> => {
    const { size, body } = bodyOf(r)
    if (size != null && size > MAX_XML_BODY) throw new S3Error('MalformedXML', `the XML body is larger than ${MAX_XML_BODY} bytes`)
    const pieces: Buffer[] = []
    for await (const p of body) pieces.push(p)
    return fromXml(Buffer.concat(pieces).toString('utf8'), root)
  }

  // ---- replies

  const send = (r: Request, status: number, xml?: string, headers: Record<string, string | number> = {}): void => {
    r.res.writeHead(status, { 'x-amz-request-id': r.id, ...(xml != null ? { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) } : { 'content-length': 0 }), ...headers })
    r.counted.out += xml != null ? Buffer.byteLength(xml) : 0
    r.res.end(xml)
  }

  /** Sends an object's bytes [start, end) to `writer`, across its parts' files, fetching only the chunks that cover them. */
  const sendTo = async (o: ObjectRecord, start: number, end: number, writer: { write: (b: Buffer) => Promise<void> }, signal?: AbortSignal): Promise<void> => {
    let at = 0
    for (const p of o.parts) {
      const a = Math.max(start, at)
      const b = Math.min(end, at + p.size)
      if (a < b) await user.downloadRange(p.fileId, writer, { start: a - at, end: b - at, signal })
      at += p.size
    }
  }

  /** Streams an object's bytes [start, end) to the client, at its pace; a client that goes away stops the fetching. */
  const sendBytes = async (r: Request, o: ObjectRecord, start: number, end: number): Promise<void> => {
    const ctrl = new AbortController()
    const onClose = (): void => { if (!r.res.writableFinished) ctrl.abort(new Error('the client went away')) }
    r.res.on('close', onClose)
    const writer = {
      write: async (bytes: Buffer): Promise<void> => {
        r.counted.out += bytes.byteLength
        if (!r.res.write(bytes)) await Promise.race([once(r.res, 'drain'), once(r.res, 'close')])
        ctrl.signal.throwIfAborted()
      }
    }
    try {
      await sendTo(o, start, end, writer, ctrl.signal)
    } finally {
      r.res.off('close', onClose)
    }
  }

  const objectHeaders = (o: ObjectRecord): Record<string, string | number> => {
    const h: Record<string, string | number> = {
      etag: quote(o.etag),
      'last-modified': httpDate(o.modified),
      'accept-ranges': 'bytes',
      'content-type': o.headers['content-type'] ?? 'binary/octet-stream'
    }
    for (const k of STORED_HEADERS) if (k !== 'content-type' && o.headers[k] != null) h[k] = o.headers[k] as string
    for (const [k, v] of Object.entries(o.meta)) h[`x-amz-meta-${k}`] = v
    return h
  }

  /** If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, as S3 weighs them; true: 304. */
  const preconditions = (r: Request, o: ObjectRecord, prefix = ''): boolean => {
    const h = (name: string): string | undefined => r.headers[prefix + name]
    const modified = Math.floor(o.modified / 1000) * 1000
    const ifMatch = h('if-match')
    const ifNoneMatch = h('if-none-match')
    const since = h('if-modified-since')
    const unmodified = h('if-unmodified-since')
    const matches = (list: string): boolean => list.split(',').some(e => unquote(e) === '*' || unquote(e) === o.etag)
    if (ifMatch != null && !matches(ifMatch)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' })
    if (ifMatch == null && unmodified != null && !Number.isNaN(Date.parse(unmodified)) && modified > Date.parse(unmodified)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Unmodified-Since' })
    if (ifNoneMatch != null && matches(ifNoneMatch)) {
      if (prefix !== '') throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' })
      return true
    }
    if (ifNoneMatch == null && since != null && !Number.isNaN(Date.parse(since)) && modified <= Date.parse(since)) {
      if (prefix !== '') throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Modified-Since' })
      return true
    }
    return false
  }

  const checkKey = (key: string): void => {
    if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new S3Error('KeyTooLongError', 'Your key is too long')
  }

  const partNumber = (r: Request): number => {
    const n = Number(r.query.get('partNumber'))
    if (!Number.isInteger(n) || n < 1 || n > MAX_PARTS) throw new S3Error('InvalidArgument', `Part number must be an integer between 1 and ${MAX_PARTS}, inclusive`)
    return n
  }

  // ---- operations

  const listBuckets = async (r: Request): Promise<void> => {
    const max = Number(r.query.get('max-buckets') ?? 10_000)
    if (!Number.isInteger(max) || max < 1 || max > 10_000) throw new S3Error('InvalidArgument', 'max-buckets must be a whole number from 1 to 10000')
    const token = r.query.get('continuation-token')
    const after = token != null ? Buffer.from(token, 'base64url').toString('utf8') : undefined
    const page = listKeys((await store.buckets()).map(b => ({ key: b.key, value: b.value })), { prefix: r.query.get('prefix') ?? '', after, maxKeys: max })
    send(r, 200, toXml('ListAllMyBucketsResult', {
      Owner: owner,
      Buckets: { Bucket: page.contents.map(b => ({ Name: b.key, CreationDate: isoDate(b.value.created) })) },
      ...(page.truncated && page.last != null ? { ContinuationToken: Buffer.from(page.last).toString('base64url') } : {}),
      ...(r.query.has('prefix') ? { Prefix: r.query.get('prefix') } : {})
    }))
  }

  const listObjects = async (r: Request): Promise<void> => {
    const v2 = r.query.get('list-type') === '2'
    const encoding = r.query.get('encoding-type')
    if (encoding != null && encoding !== 'url') throw new S3Error('InvalidArgument', 'Invalid Encoding Method specified in Request')
    const enc = (s: string): string => encoding === 'url' ? encodeURIComponent(s).replace(/%2F/g, '/') : s
    const maxKeysText = r.query.get('max-keys')
    const maxKeys = maxKeysText == null ? MAX_LIST_KEYS : Number(maxKeysText)
    if (!Number.isInteger(maxKeys) || maxKeys < 0) throw new S3Error('InvalidArgument', 'max-keys must be a whole number of 0 or more')
    const prefix = r.query.get('prefix') ?? ''
    const delimiter = r.query.get('delimiter') ?? ''
    // allow-unordered (a Ceph extension) is granted by listing in order anyway; it cannot go with a delimiter
    if (r.query.get('allow-unordered') === 'true' && delimiter !== '') throw new S3Error('InvalidArgument', 'allow-unordered cannot be used with a delimiter')
    let after: string | undefined
    const token = r.query.get('continuation-token')
    if (v2) {
      if (token != null && token !== '') {
        after = Buffer.from(token, 'base64url').toString('utf8')
        if (Buffer.from(after).toString('base64url') !== token) throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect')
      } else {
        after = r.query.get('start-after') ?? undefined
      }
    } else {
      after = r.query.get('marker') ?? undefined
    }
    await store.bucket(r.bucket)
    const entries = (await store.objects(r.bucket)).map(o => ({ key: o.key, value: o.value }))
    const page = listKeys(entries, { prefix, delimiter, after: after === '' ? undefined : after, maxKeys: Math.min(maxKeys, MAX_LIST_KEYS) })
    const contents = page.contents.map(e => ({
      Key: enc(e.key),
      LastModified: isoDate(e.value.modified),
      ETag: quote(e.value.etag),
      Size: e.value.size,
      StorageClass: 'STANDARD',
      ...(!v2 || r.query.get('fetch-owner') === 'true' ? { Owner: owner } : {})
    }))
    const common = page.prefixes.map(p => ({ Prefix: enc(p) }))
    // ListObjects (v1) sends the prefix as asked, encoded or not; v2 encodes it (clients decode accordingly)
    const body: Record<string, unknown> = { Name: r.bucket, Prefix: v2 ? enc(prefix) : prefix }
    if (v2) {
      if (token != null) body.ContinuationToken = token
      if (r.query.has('start-after')) body.StartAfter = enc(r.query.get('start-after') as string)
      body.KeyCount = contents.length + common.length
      body.MaxKeys = maxKeys
      if (delimiter !== '') body.Delimiter = enc(delimiter)
      body.IsTruncated = page.truncated
      if (page.truncated && page.last != null) body.NextContinuationToken = Buffer.from(page.last).toString('base64url')
    } else {
      body.Marker = enc(after ?? '')
      body.MaxKeys = maxKeys
      if (delimiter !== '') body.Delimiter = enc(delimiter)
      body.IsTruncated = page.truncated
      if (page.truncated && delimiter !== '' && page.last != null) body.NextMarker = enc(page.last)
    }
    if (encoding != null) body.EncodingType = encoding
    body.Contents = contents
    body.CommonPrefixes = common
    send(r, 200, toXml('ListBucketResult', body))
  }

  /** ListObjectVersions of a bucket without versioning: every object is its one version, "null". */
  const listVersions = async (r: Request): Promise<void> => {
    const encoding = r.query.get('encoding-type')
    if (encoding != null && encoding !== 'url') throw new S3Error('InvalidArgument', 'Invalid Encoding Method specified in Request')
    const enc = (s: string): string => encoding === 'url' ? encodeURIComponent(s).replace(/%2F/g, '/') : s
    const maxKeys = Number(r.query.get('max-keys') ?? MAX_LIST_KEYS)
    if (!Number.isInteger(maxKeys) || maxKeys < 0) throw new S3Error('InvalidArgument', 'max-keys must be a whole number of 0 or more')
    const prefix = r.query.get('prefix') ?? ''
    const delimiter = r.query.get('delimiter') ?? ''
    const marker = r.query.get('key-marker') ?? ''
    await store.bucket(r.bucket)
    const entries = (await store.objects(r.bucket)).map(o => ({ key: o.key, value: o.value }))
    const page = listKeys(entries, { prefix, delimiter, after: marker === '' ? undefined : marker, maxKeys: Math.min(maxKeys, MAX_LIST_KEYS) })
    send(r, 200, toXml('ListVersionsResult', {
      Name: r.bucket,
      Prefix: enc(prefix),
      KeyMarker: enc(marker),
      VersionIdMarker: r.query.get('version-id-marker') ?? '',
      ...(page.truncated && page.last != null ? { NextKeyMarker: enc(page.last), NextVersionIdMarker: 'null' } : {}),
      MaxKeys: maxKeys,
      ...(delimiter !== '' ? { Delimiter: enc(delimiter) } : {}),
      IsTruncated: page.truncated,
      ...(encoding != null ? { EncodingType: encoding } : {}),
      Version: page.contents.map(e => ({ Key: enc(e.key), VersionId: 'null', IsLatest: true, LastModified: isoDate(e.value.modified), ETag: quote(e.value.etag), Size: e.value.size, StorageClass: 'STANDARD', Owner: owner })),
      CommonPrefixes: page.prefixes.map(p => ({ Prefix: enc(p) }))
    }))
  }

  const putObject = async (r: Request): Promise<void> => {
    checkKey(r.key)
    await store.bucket(r.bucket)
    const { meta, headers } = metadataOf(r.headers)
    // a conditional write (If-Match, If-None-Match) is checked before the body is stored, and
    // again in the write that records it
    const condition = (old: ObjectRecord | undefined): void => {
      const ifMatch = r.headers['if-match']
      const ifNoneMatch = r.headers['if-none-match']
      const listed = (list: string, etag: string): boolean => list.split(',').some(e => unquote(e) === '*' || unquote(e) === etag)
      if (ifMatch != null && old == null) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: r.key })
      if (ifMatch != null && old != null && !listed(ifMatch, old.etag)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' })
      if (ifNoneMatch != null && old != null && listed(ifNoneMatch, old.etag)) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' })
    }
    if (r.headers['if-match'] != null || r.headers['if-none-match'] != null) condition(await store.object(r.bucket, r.key).catch(err => { if (err instanceof S3Error && err.code === 'NoSuchKey') return undefined; throw err }))
    const stored = await storeBody(r, OBJECT_FILE, true)
    const rec: ObjectRecord = { size: stored.size, etag: stored.md5, modified: Date.now(), meta, headers, parts: stored.files }
    await store.putObject(r.bucket, r.key, rec, [], condition)
    send(r, 200, undefined, { etag: quote(rec.etag), ...stored.checksum })
  }

  /** The source of a copy (x-amz-copy-source: /bucket/key or bucket/key, URL-encoded). */
  const copySource = async (r: Request): Promise<{ bucket: string, key: string, o: ObjectRecord }> => {
    let src = r.headers['x-amz-copy-source'] as string
    const q = src.indexOf('?')
    if (q >= 0) {
      if (!/^versionId=(null)?$/.test(src.slice(q + 1))) throw new S3Error('NotImplemented', 'object versions are not supported')
      src = src.slice(0, q)
    }
    let decoded: string
    try { decoded = decodeURIComponent(src) } catch { throw new S3Error('InvalidArgument', 'Invalid copy source encoding') }
    decoded = decoded.replace(/^\//, '')
    const slash = decoded.indexOf('/')
    if (slash <= 0 || slash === decoded.length - 1) throw new S3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey')
    const bucket = decoded.slice(0, slash)
    const key = decoded.slice(slash + 1)
    return { bucket, key, o: await store.object(bucket, key) }
  }

  /** Copies bytes [start, end) of an object into a new stordaemon file, streamed (download into upload). */
  const copyBytes = async (o: ObjectRecord, start: number, end: number, name: string): Promise<{ fileId?: string, md5: string }> => {
    const md5 = createHash('md5')
    if (end <= start) return { md5: md5.digest('hex') }
    const pipe = new BytePipe()
    const reading = (async () => {
      try {
        await sendTo(o, start, end, { write: async b => { md5.update(b); await pipe.push(b) } })
        pipe.end()
      } catch (err) {
        pipe.fail(err)
        throw err
      }
    })()
    reading.catch(() => {})
    const stored = await user.uploadStream(pipe, end - start, { ...uploadOpts, name: name.slice(0, 255) }).catch(async err => { pipe.fail(err); await reading.catch(() => {}); throw err })
    await reading
    return { fileId: stored.fileId, md5: md5.digest('hex') }
  }


  const copyObject = async (r: Request): Promise<void> => {
    checkKey(r.key)
    await store.bucket(r.bucket)
    const src = await copySource(r)
    preconditions(r, src.o, 'x-amz-copy-source-')
    const directive = r.headers['x-amz-metadata-directive'] ?? 'COPY'
    if (directive !== 'COPY' && directive !== 'REPLACE') throw new S3Error('InvalidArgument', 'Unknown metadata directive.')
    if (src.bucket === r.bucket && src.key === r.key && directive === 'COPY') {
      throw new S3Error('InvalidRequest', 'This copy request is illegal because it is trying to copy an object to itself without changing the object\'s metadata, storage class, website redirect location or encryption attributes.')
    }
    const { meta, headers } = directive === 'REPLACE' ? metadataOf(r.headers) : { meta: src.o.meta, headers: src.o.headers }
    // a multipart object keeps its ETag when copied whole, as in S3
    const copied = await copyBytes(src.o, 0, src.o.size, OBJECT_FILE)
    const etag = src.o.parts.length > 1 ? src.o.etag : copied.md5
    const rec: ObjectRecord = { size: src.o.size, etag, modified: Date.now(), meta, headers, parts: copied.fileId != null ? [{ fileId: copied.fileId, size: src.o.size }] : [] }
    await store.putObject(r.bucket, r.key, rec)
    send(r, 200, toXml('CopyObjectResult', { LastModified: isoDate(rec.modified), ETag: quote(rec.etag) }))
  }

  const getObject = async (r: Request, head: boolean): Promise<void> => {
    // without versioning an object's one version is "null"
    if ((r.query.get('versionId') ?? 'null') !== 'null') throw new S3Error('NoSuchVersion', 'The specified version does not exist.')
    const o = await store.object(r.bucket, r.key)
    if (preconditions(r, o)) { send(r, 304, undefined, { etag: quote(o.etag), 'last-modified': httpDate(o.modified) }); return }
    const h = objectHeaders(o)
    let range = parseRange(r.headers.range, o.size)
    const count = /-(\d+)$/.exec(o.etag) != null ? Number(/-(\d+)$/.exec(o.etag)?.[1]) : 1
    if (r.query.has('partNumber')) {
      // a part of a multipart object, by its number: its bytes, with the whole object's ETag
      const n = partNumber(r)
      if (n > count || (count > 1 && o.parts.length !== count)) throw new S3Error('InvalidPart', 'The requested partnumber is not satisfiable', { PartNumber: String(n) })
      const start = o.parts.slice(0, n - 1).reduce((a, p) => a + p.size, 0)
      range = count > 1 ? { start, end: start + o.parts[n - 1].size } : undefined
      h['x-amz-mp-parts-count'] = count
    }
    for (const [q, name] of [['response-content-type', 'content-type'], ['response-content-language', 'content-language'], ['response-expires', 'expires'], ['response-cache-control', 'cache-control'], ['response-content-disposition', 'content-disposition'], ['response-content-encoding', 'content-encoding']]) {
      const v = r.query.get(q)
      if (v != null) h[name] = v
    }
    const start = range?.start ?? 0
    const end = range?.end ?? o.size
    if (range != null) h['content-range'] = `bytes ${start}-${end - 1}/${o.size}`
    h['content-length'] = end - start
    r.res.writeHead(range != null ? 206 : 200, { 'x-amz-request-id': r.id, ...h })
    if (head) { r.res.end(); return }
    await sendBytes(r, o, start, end)
    r.res.end()
  }

  const deleteObjects = async (r: Request): Promise<void> => {
    await store.bucket(r.bucket)
    const doc = await readXml(r, 'Delete')
    const objects = (doc.Object ?? []) as Array<{ Key?: unknown, VersionId?: unknown }>
    if (objects.length > 1000) throw new S3Error('MalformedXML', 'DeleteObjects takes at most 1000 keys')
    const quiet = String(doc.Quiet ?? '').trim() === 'true'
    const deleted: unknown[] = []
    const errors: unknown[] = []
    for (const o of objects) {
      const key = typeof o.Key === 'string' ? o.Key : String(o.Key ?? '')
      try {
        // without versioning an object's one version is "null"
        if (o.VersionId != null && String(o.VersionId) !== 'null') throw new S3Error('NoSuchVersion', 'The specified version does not exist.')
        await store.deleteObject(r.bucket, key)
        if (!quiet) deleted.push({ Key: key, ...(o.VersionId != null ? { VersionId: 'null' } : {}) })
      } catch (err: any) {
        errors.push({ Key: key, Code: err instanceof S3Error ? err.code : 'InternalError', Message: err.message })
      }
    }
    send(r, 200, toXml('DeleteResult', { Deleted: deleted, Error: errors }))
  }

  const createUpload = async (r: Request): Promise<void> => {
    checkKey(r.key)
    const { meta, headers } = metadataOf(r.headers)
    const uploadId = await store.createUpload(r.bucket, { key: r.key, initiated: Date.now(), meta, headers })
    send(r, 200, toXml('InitiateMultipartUploadResult', { Bucket: r.bucket, Key: r.key, UploadId: uploadId }))
  }

  const uploadPart = async (r: Request): Promise<void> => {
    const n = partNumber(r)
    const uploadId = r.query.get('uploadId') as string
    const [u, old] = await Promise.all([store.upload(r.bucket, uploadId), store.part(uploadId, n)])
    if (u.value.key !== r.key) throw new S3Error('NoSuchUpload', 'The specified upload does not exist.', { UploadId: uploadId })
    let stored: { fileId?: string, size: number, md5: string }
    let checksum: Record<string, string> = {}
    if (r.headers['x-amz-copy-source'] != null) {
      const src = await copySource(r)
      preconditions(r, src.o, 'x-amz-copy-source-')
      const range = r.headers['x-amz-copy-source-range']
      let start = 0
      let end = src.o.size
      if (range != null) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(range)
        if (m == null || Number(m[2]) < Number(m[1])) throw new S3Error('InvalidArgument', 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy')
        if (Number(m[2]) >= src.o.size) throw new S3Error('InvalidRange', 'The requested range is not satisfiable')
        start = Number(m[1])
        end = Number(m[2]) + 1
      }
      const copied = await copyBytes(src.o, start, end, PART_FILE)
      stored = { fileId: copied.fileId, size: end - start, md5: copied.md5 }
    } else {
      const body = await storeBody(r, PART_FILE)
      stored = { fileId: body.files[0]?.fileId, size: body.size, md5: body.md5 }
      checksum = body.checksum
    }
    const rec: PartRecord = { fileId: stored.fileId ?? '', size: stored.size, etag: stored.md5, modified: Date.now() }
    await store.putPart(r.bucket, uploadId, n, rec, { upload: u, old })
    if (r.headers['x-amz-copy-source'] != null) send(r, 200, toXml('CopyPartResult', { LastModified: isoDate(rec.modified), ETag: quote(rec.etag) }))
    else send(r, 200, undefined, { etag: quote(rec.etag), ...checksum })
  }

  const completeUpload = async (r: Request): Promise<void> => {
    const uploadId = r.query.get('uploadId') as string
    const doc = await readXml(r, 'CompleteMultipartUpload')
    const listed = ((doc.Part ?? []) as Array<{ PartNumber?: unknown, ETag?: unknown }>).map(p => ({ n: Number(p.PartNumber), etag: unquote(String(p.ETag ?? '')) }))
    for (let i = 1; i < listed.length; i++) if (listed[i].n < listed[i - 1].n) throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.')
    // a part number listed twice (a part sent again) counts once, with the ETag listed last
    const asked = listed.filter((p, i) => i === listed.length - 1 || listed[i + 1].n !== p.n)
    const etagOf = (md5s: string[]): string => createHash('md5').update(Buffer.concat(md5s.map(m => Buffer.from(m, 'hex')))).digest('hex') + `-${md5s.length}`
    const result = (etag: string): void => { send(r, 200, toXml('CompleteMultipartUploadResult', { Location: `/${r.bucket}/${encodeURIComponent(r.key)}`, Bucket: r.bucket, Key: r.key, ETag: quote(etag) })) }
    let u
    try {
      u = await store.upload(r.bucket, uploadId)
      if (u.value.key !== r.key) throw new S3Error('NoSuchUpload', 'The specified upload does not exist.', { UploadId: uploadId })
    } catch (err) {
      // completing again what was completed (a retry whose reply was lost) answers as the first time
      const done = err instanceof S3Error && err.code === 'NoSuchUpload' ? await store.object(r.bucket, r.key).catch(() => undefined) : undefined
      if (done != null && asked.length > 0 && done.etag === etagOf(asked.map(a => a.etag))) { result(done.etag); return }
      throw err
    }
    if (asked.length === 0) throw new S3Error('MalformedXML', 'You must specify at least one part')
    if (asked.length > MAX_OBJECT_PARTS) throw new S3Error('InvalidRequest', `this gateway joins at most ${MAX_OBJECT_PARTS} parts into one object`)
    const all = await store.parts(uploadId)
    const byNumber = new Map(all.map(p => [p.n, p.part]))
    const chosen = asked.map(a => {
      const p = byNumber.get(a.n)
      if (p == null || p.etag !== a.etag) throw new S3Error('InvalidPart', 'One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part\'s entity tag.', { PartNumber: String(a.n) })
      return p
    })
    chosen.forEach((p, i) => { if (i < chosen.length - 1 && p.size < MIN_PART_SIZE) throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', { PartNumber: String(asked[i].n) }) })
    const etag = etagOf(chosen.map(p => p.etag))
    const rec: ObjectRecord = {
      size: chosen.reduce((n, p) => n + p.size, 0),
      etag,
      modified: Date.now(),
      meta: u.value.meta,
      headers: u.value.headers,
      parts: chosen.filter(p => p.size > 0).map(p => ({ fileId: p.fileId, size: p.size }))
    }
    await store.completeUpload(r.bucket, uploadId, rec, all)
    result(etag)
  }

  const listParts = async (r: Request): Promise<void> => {
    const uploadId = r.query.get('uploadId') as string
    const u = await store.upload(r.bucket, uploadId)
    const maxParts = Math.min(1000, Number(r.query.get('max-parts') ?? 1000))
    const marker = Number(r.query.get('part-number-marker') ?? 0)
    if (!Number.isInteger(maxParts) || maxParts < 0 || !Number.isInteger(marker)) throw new S3Error('InvalidArgument', 'max-parts and part-number-marker must be whole numbers')
    const after = (await store.parts(uploadId)).filter(p => p.n > marker)
    const page = after.slice(0, maxParts)
    const truncated = after.length > page.length
    send(r, 200, toXml('ListPartsResult', {
      Bucket: r.bucket,
      Key: u.value.key,
      UploadId: uploadId,
      Initiator: owner,
      Owner: owner,
      StorageClass: 'STANDARD',
      PartNumberMarker: marker,
      ...(truncated ? { NextPartNumberMarker: page[page.length - 1].n } : {}),
      MaxParts: maxParts,
      IsTruncated: truncated,
      Part: page.map(p => ({ PartNumber: p.n, LastModified: isoDate(p.part.modified), ETag: quote(p.part.etag), Size: p.part.size }))
    }))
  }

  const listUploads = async (r: Request): Promise<void> => {
    await store.bucket(r.bucket)
    const prefix = r.query.get('prefix') ?? ''
    const delimiter = r.query.get('delimiter') ?? ''
    const maxUploads = Math.min(1000, Number(r.query.get('max-uploads') ?? 1000))
    const keyMarker = r.query.get('key-marker') ?? ''
    const idMarker = r.query.get('upload-id-marker') ?? ''
    const all = (await store.uploads(r.bucket))
      .map(u => ({ id: u.key, ...u.value }))
      .filter(u => u.key.startsWith(prefix) && (compareKeys(u.key, keyMarker) > 0 || (u.key === keyMarker && idMarker !== '' && u.id > idMarker)))
      .sort((a, b) => compareKeys(a.key, b.key) || (a.initiated - b.initiated))
    const page = listKeys(all.map(u => ({ key: u.key, value: u })), { prefix, delimiter, maxKeys: Number.isInteger(maxUploads) && maxUploads >= 0 ? maxUploads : 1000 })
    const last = page.contents[page.contents.length - 1]?.value
    send(r, 200, toXml('ListMultipartUploadsResult', {
      Bucket: r.bucket,
      KeyMarker: keyMarker,
      UploadIdMarker: idMarker,
      ...(page.truncated && last != null ? { NextKeyMarker: last.key, NextUploadIdMarker: last.id } : {}),
      Prefix: prefix,
      ...(delimiter !== '' ? { Delimiter: delimiter } : {}),
      MaxUploads: maxUploads,
      IsTruncated: page.truncated,
      Upload: page.contents.map(({ value: u }) => ({ Key: u.key, UploadId: u.id, Initiator: owner, Owner: owner, StorageClass: 'STANDARD', Initiated: isoDate(u.initiated) })),
      CommonPrefixes: page.prefixes.map(p => ({ Prefix: p }))
    }))
  }

  /** What serves each operation (operationOf chose it). */
  const operations: Record<Operation, (r: Request) => Promise<void>> = {
    ListBuckets: listBuckets,
    CreateBucket: async r => {
      checkBucketName(r.bucket)
      // a CreateBucketConfiguration (location) body is read and accepted: there is one location
      if (r.headers['content-length'] != null || r.headers['transfer-encoding'] != null) for await (const _ of bodyOf(r).body) { /* drained */ }
      // creating a bucket one owns already succeeds, as in S3's us-east-1
      await store.createBucket(r.bucket).catch(err => { if (!(err instanceof S3Error && err.code === 'BucketAlreadyOwnedByYou')) throw err })
      send(r, 200, undefined, { location: `/${r.bucket}` })
    },
    HeadBucket: async r => { await store.bucket(r.bucket); send(r, 200) },
    DeleteBucket: async r => { await store.deleteBucket(r.bucket); send(r, 204) },
    ListMultipartUploads: listUploads,
    ListObjectVersions: listVersions,
    GetBucketLocation: async r => { await store.bucket(r.bucket); send(r, 200, toXml('LocationConstraint', {})) },
    GetBucketVersioning: async r => { await store.bucket(r.bucket); send(r, 200, toXml('VersioningConfiguration', {})) },
    ListObjects: listObjects,
    ListObjectsV2: listObjects,
    DeleteObjects: deleteObjects,
    UploadPart: uploadPart,
    UploadPartCopy: uploadPart,
    PutObject: putObject,
    CopyObject: copyObject,
    ListParts: listParts,
    GetObject: async r => { await getObject(r, false) },
    HeadObject: async r => { await getObject(r, true) },
    AbortMultipartUpload: async r => { await store.abortUpload(r.bucket, r.query.get('uploadId') as string); send(r, 204) },
    DeleteObject: async r => { await store.deleteObject(r.bucket, r.key); send(r, 204) },
    CreateMultipartUpload: createUpload,
    CompleteMultipartUpload: completeUpload,
    Unsupported: async ({ method, bucket, key, query }) => {
      if (bucket === '') throw new S3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.')
      throw new S3Error('NotImplemented', `${method} on ${key === '' ? 'a bucket' : 'an object'} with ?${[...query.keys()].join('&')} is not supported by this gateway`)
    }
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const id = randomBytes(8).toString('hex').toUpperCase()
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const rawPath = q >= 0 ? url.slice(0, q) : url
    const rawQuery = q >= 0 ? url.slice(q + 1) : ''
    const headers = headersOf(req)
    const method = req.method ?? 'GET'
    let resource = rawPath
    let operation: Operation = 'Unsupported'
    const counted: Counted = { in: 0, out: 0 }
    if (metrics != null) {
      const arrived = performance.now()
      // 'close' comes once the answer is sent, or cut off (then under the status it began with)
      res.once('close', () => { metrics.request(operation, res.statusCode, (performance.now() - arrived) / 1000, counted.in, counted.out) })
    }
    try {
      let path: string
      let query: Map<string, string>
      try {
        path = decodeURIComponent(rawPath)
        query = queryOf(rawQuery)
      } catch { throw new S3Error('InvalidURI', 'Couldn\'t parse the specified URI.') }
      resource = path
      const [bucket, ...rest] = path.replace(/^\//, '').split('/')
      const key = rest.join('/')
      operation = operationOf(method, bucket, key, query, headers['x-amz-copy-source'] != null)
      const signable = { method, rawPath, rawQuery, headers }
      // a CORS preflight is never signed; no bucket here has a CORS configuration
      if (method === 'OPTIONS') {
        if (headers.origin == null) throw new S3Error('BadRequest', 'Insufficient information. Origin request header needed.')
        throw new S3Error('AccessForbidden', 'CORSResponse: CORS is not enabled for this bucket.')
      }
      if (!isSigned(signable)) throw new S3Error('AccessDenied', 'Access Denied: anonymous requests are not allowed; sign requests with an access key (stordaemon gateway key add)')
      const signing = await verifyRequest(signable, lookupSecret)
      // the signature covers the query: from here its parameters are trusted
      await operations[operation]({ req, res, method, bucket, key, query, headers, signing, id, counted })
    } catch (err: any) {
      let e: S3Error
      if (err instanceof S3Error) e = err
      else if (err instanceof NotFoundError) e = new S3Error('NoSuchKey', err.message)
      else if (err instanceof InvalidArgumentError) e = new S3Error('InvalidArgument', err.message)
      else if (err?.name === 'NoSpaceError') e = new S3Error('ServiceUnavailable', `the storage network has no room: ${err.message as string}`)
      else if (err?.name === 'UnreachableError') e = new S3Error('ServiceUnavailable', `the storage network did not answer: ${err.message as string}`)
      // no FAT replica orders writes: an election, or the replicas reached are cut off from a majority
      else if (err?.name === 'UnavailableError' || err?.name === 'NoQuorumError') e = new S3Error('ServiceUnavailable', `the storage network cannot take writes now: ${err.message as string}`)
      else {
        log('%s %s failed: %s', method, rawPath, err?.stack ?? err)
        e = new S3Error('InternalError', 'We encountered an internal error. Please try again.')
      }
      log('%s %s: %s %s', method, rawPath, e.code, e.message)
      if (res.headersSent) { res.destroy(); return }
      const xml = toXml('Error', { Code: e.code, Message: e.message, ...e.extra, Resource: resource, RequestId: id }, false)
      // an error before the body was read: the client may still be sending it
      res.setHeader('connection', 'close')
      // without versioning, a missing key is never a delete marker (HEAD shows no error body, only this)
      const marker = e.code === 'NoSuchKey' ? { 'x-amz-delete-marker': 'false' } : {}
      res.writeHead(e.status, { 'x-amz-request-id': id, 'content-type': 'application/xml', 'content-length': method === 'HEAD' ? 0 : Buffer.byteLength(xml), ...marker })
      if (method !== 'HEAD') counted.out += Buffer.byteLength(xml)
      res.end(method === 'HEAD' ? undefined : xml)
    }
  }

  const listener = (req: IncomingMessage, res: ServerResponse): void => { void handle(req, res) }
  const server: Server = opts.tls != null ? createHttps({ cert: opts.tls.cert, key: opts.tls.key }, listener) : createHttp(listener)
  server.requestTimeout = 0
  const listen = parseListen(opts.listen)
  server.listen(listen.port, listen.host)
  await once(server, 'listening').catch(async err => { await hashes.close(); throw listenError('--listen', listen, err) })
  const addr = server.address() as AddressInfo
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  const url = `${opts.tls != null ? 'https' : 'http'}://${shown}:${addr.port}`
  log('S3 gateway listening on %s', url)
  const stopServing = async (): Promise<void> => {
    server.closeAllConnections()
    await new Promise<void>(resolve => { server.close(() => { resolve() }) })
    await hashes.close()
  }
  // it serves when a FAT replica answers (the buckets and keys are there) and one orders writes
  // (a PUT needs it), and when a client can sign at all
  const health = probedHealth(async () => {
    const [leader, keys] = await Promise.all([user.leader(), accessKeys(user)])
    if (leader == null) return { ok: false, reason: 'the FAT answered, but no replica orders writes: an election is under way, or a majority of the replicas is unreachable' }
    if (keys.length === 0) return { ok: false, reason: 'no access keys: every request is refused until one is added (stordaemon gateway key add NAME)' }
    return { ok: true, reason: `FAT replica ${leader} orders writes; ${keys.length} access key${keys.length === 1 ? '' : 's'}` }
  }, { freshMs: HEALTH_FRESH_MS, timeoutMs: HEALTH_TIMEOUT_MS, what: 'the FAT' })
  let http: HttpServer | undefined
  try {
    http = await monitor?.start({ health })
  } catch (err) {
    await stopServing()
    throw err
  }
  if (http != null) log('metrics and health on %s', http.url)
  return {
    url,
    ...(http != null ? { http: http.url } : {}),
    health,
    async close () {
      await http?.close()
      await stopServing()
    }
  }
}

/** `host:port`, `[v6]:port` or `:port` (all addresses). */
export function parseListen (s: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s)
  const port = m == null ? NaN : Number(m[3])
  if (m == null || port > 65535) throw new InvalidArgumentError(`--listen: "${s}" is not HOST:PORT (e.g. 127.0.0.1:9000, 0.0.0.0:9000, [::1]:9000; port 0 picks a free one)`)
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]), port }
}

/** An async iterable fed by a writer, one buffer at a time: the writer waits for the reader. */
class BytePipe implements AsyncIterable<Uint8Array> {
  private queue: Buffer[] = []
  private done = false
  private error: unknown
  private wakeReader: (() => void) | undefined
  private wakeWriter: (() => void) | undefined

  async push (b: Buffer): Promise<void> {
    if (this.error != null) throw this.error
    this.queue.push(Buffer.from(b))
    this.wakeReader?.()
    while (this.queue.length > 0 && this.error == null) await new Promise<void>(resolve => { this.wakeWriter = resolve })
    if (this.error != null) throw this.error
  }

  end (): void { this.done = true; this.wakeReader?.() }
  fail (err: unknown): void { this.error ??= err; this.wakeReader?.(); this.wakeWriter?.() }

  async * [Symbol.asyncIterator] (): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.error != null) throw this.error
      const b = this.queue.shift()
      if (b != null) { this.wakeWriter?.(); yield b; continue }
      if (this.done) return
      await new Promise<void>(resolve => { this.wakeReader = resolve })
    }
  }
}

