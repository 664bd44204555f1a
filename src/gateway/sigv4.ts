import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { S3Error } from './errors.ts'

/**
 * AWS Signature Version 4 as S3 checks it: in the Authorization header or in a presigned URL's
 * query, with the payload signed (its sha-256), unsigned (UNSIGNED-PAYLOAD) or streamed in
 * aws-chunked form with a signature per chunk (see chunked.ts). Pure functions: the request's
 * parts in, the signing context or an S3Error out. Cross-checked against @smithy/signature-v4
 * in test/gateway-sigv4.test.ts.
 */

export const ALGORITHM = 'AWS4-HMAC-SHA256'
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD'
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER'
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER'
export const EMPTY_SHA256 = createHash('sha256').update('').digest('hex')
/** How far a request's time may be from ours (S3's own figure). */
export const MAX_SKEW_MS = 15 * 60 * 1000
/** A presigned URL lives at most a week (S3's limit). */
export const MAX_EXPIRES_S = 7 * 24 * 3600

export interface SignableRequest {
  method: string
  /** the path as sent, percent-encoded */
  rawPath: string
  /** the query as sent, without '?', percent-encoded */
  rawQuery: string
  /** header names in lower case; repeated headers joined with ',' */
  headers: Record<string, string | undefined>
}

/** What a verified request was signed with: the chunk signatures of a streamed body chain from `seed`. */
export interface SigningContext {
  accessKey: string
  /** x-amz-content-sha256: a hex digest the body must match, UNSIGNED-PAYLOAD, or a STREAMING-* mode */
  payload: string
  amzDate: string
  scope: string
  signingKey: Buffer
  seed: string
}

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex')
const hmac = (key: Uint8Array | string, data: string): Buffer => createHmac('sha256', key).update(data).digest()

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ (and '/' when asked). */
export function uriEncode (s: string, keepSlash: boolean): string {
  let out = ''
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte)
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === '/')) out += c
    else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0')
  }
  return out
}

function decode (s: string): string {
  try { return decodeURIComponent(s) } catch { throw new S3Error('InvalidURI', `could not decode "${s.slice(0, 100)}"`) }
}

export function parseQuery (rawQuery: string): Array<[string, string]> {
  if (rawQuery === '') return []
  return rawQuery.split('&').map(p => {
    const i = p.indexOf('=')
    // a '+' in a query is a space only in forms; S3 clients encode spaces as %20
    return i < 0 ? [decode(p), ''] : [decode(p.slice(0, i)), decode(p.slice(i + 1))]
  })
}

export function canonicalQuery (params: Array<[string, string]>): string {
  return params
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)])
    .sort(([a, x], [b, y]) => a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0)
    .map(([k, v]) => `${k}=${v}`).join('&')
}

export function canonicalRequest (req: SignableRequest, signedHeaders: string[], params: Array<[string, string]>, payload: string): string {
  // S3 signs the path with each segment encoded once
  const path = uriEncode(decode(req.rawPath), true)
  const headers = signedHeaders.map(h => `${h}:${(req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('')
  return [req.method, path, canonicalQuery(params), headers, signedHeaders.join(';'), payload].join('\n')
}

export function signingKey (secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request')
}

export function stringToSign (amzDate: string, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate, scope, sha256(canonical)].join('\n')
}

/** The signature of one aws-chunked chunk, chained from the previous one. */
export function chunkSignature (ctx: Pick<SigningContext, 'amzDate' | 'scope' | 'signingKey'>, previous: string, chunkSha256: string): string {
  const s = ['AWS4-HMAC-SHA256-PAYLOAD', ctx.amzDate, ctx.scope, previous, EMPTY_SHA256, chunkSha256].join('\n')
  return hmac(ctx.signingKey, s).toString('hex')
}

/** The signature of a streamed body's trailing headers. */
export function trailerSignature (ctx: Pick<SigningContext, 'amzDate' | 'scope' | 'signingKey'>, previous: string, trailer: string): string {
  const s = ['AWS4-HMAC-SHA256-TRAILER', ctx.amzDate, ctx.scope, previous, sha256(trailer)].join('\n')
  return hmac(ctx.signingKey, s).toString('hex')
}

export function sameSignature (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.byteLength === y.byteLength && timingSafeEqual(x, y)
}

/** `20130524T000000Z` to a time in ms, or NaN. */
export function parseAmzDate (s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s)
  return m == null ? NaN : Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6])
}

interface Credential { accessKey: string, date: string, region: string, service: string }

function parseCredential (s: string): Credential {
  const parts = s.split('/')
  if (parts.length !== 5 || parts[4] !== 'aws4_request') throw new S3Error('AuthorizationHeaderMalformed', `the credential "${s.slice(0, 200)}" is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request`)
  const [accessKey, date, region, service] = parts
  if (!/^\d{8}$/.test(date)) throw new S3Error('AuthorizationHeaderMalformed', `the credential's date "${date}" is not YYYYMMDD`)
  return { accessKey, date, region, service }
}

/** Is this request signed at all (header or query)? */
export function isSigned (req: SignableRequest): boolean {
  return req.headers.authorization != null || /(?:^|&)X-Amz-Signature=/.test(req.rawQuery) || /(?:^|&)X-Amz-Credential=/.test(req.rawQuery)
}

/**
 * Checks a request's signature with the secret `secretOf` gives for its access key (undefined:
 * unknown key). Returns what the body's checks need; throws S3Error (AccessDenied,
 * SignatureDoesNotMatch, InvalidAccessKeyId, RequestTimeTooSkewed, ...) otherwise.
 */
export async function verifyRequest (req: SignableRequest, secretOf: (accessKey: string) => Promise<string | undefined>, now = Date.now()): Promise<SigningContext> {
  const params = parseQuery(req.rawQuery)
  const auth = req.headers.authorization
  let cred: Credential
  let signedHeaders: string[]
  let signature: string
  let amzDate: string
  let payload: string
  let queryParams = params
  if (auth != null) {
    if (!auth.startsWith(`${ALGORITHM} `)) {
      if (auth.startsWith('AWS ')) throw new S3Error('InvalidRequest', 'signature version 2 is not supported; sign with AWS Signature Version 4 (AWS4-HMAC-SHA256)')
      throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header is not AWS4-HMAC-SHA256')
    }
    const fields = new Map(auth.slice(ALGORITHM.length + 1).split(',').map(f => {
      const i = f.indexOf('=')
      return [f.slice(0, i).trim(), f.slice(i + 1).trim()] as const
    }))
    const c = fields.get('Credential')
    const sh = fields.get('SignedHeaders')
    const sig = fields.get('Signature')
    if (c == null || sh == null || sig == null) throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header needs Credential, SignedHeaders and Signature')
    cred = parseCredential(c)
    signedHeaders = sh.split(';')
    signature = sig
    amzDate = req.headers['x-amz-date'] ?? ''
    let time = parseAmzDate(amzDate)
    if (Number.isNaN(time) && req.headers.date != null) {
      // a Date header may stand in for x-amz-date
      time = Date.parse(req.headers.date)
      if (!Number.isNaN(time)) amzDate = new Date(time).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')
    }
    if (Number.isNaN(time)) throw new S3Error('AccessDenied', 'the request has no valid x-amz-date or Date header')
    if (Math.abs(now - time) > MAX_SKEW_MS) throw new S3Error('RequestTimeTooSkewed', 'the difference between the request time and the server\'s time is too large')
    payload = req.headers['x-amz-content-sha256'] ?? ''
    if (payload === '') throw new S3Error('InvalidRequest', 'missing required header for this request: x-amz-content-sha256')
  } else {
    const q = new Map(params)
    if (q.get('X-Amz-Algorithm') !== ALGORITHM) throw new S3Error('AuthorizationQueryParametersError', 'X-Amz-Algorithm must be AWS4-HMAC-SHA256')
    const c = q.get('X-Amz-Credential')
    const sh = q.get('X-Amz-SignedHeaders')
    const sig = q.get('X-Amz-Signature')
    amzDate = q.get('X-Amz-Date') ?? ''
    const expires = Number(q.get('X-Amz-Expires'))
    if (c == null || sh == null || sig == null || amzDate === '' || q.get('X-Amz-Expires') == null) throw new S3Error('AuthorizationQueryParametersError', 'a presigned URL needs X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature')
    if (!Number.isInteger(expires) || expires < 0 || expires > MAX_EXPIRES_S) throw new S3Error('AccessDenied', `X-Amz-Expires must be from 0 to ${MAX_EXPIRES_S} seconds`)
    cred = parseCredential(c)
    signedHeaders = sh.split(';')
    signature = sig
    const time = parseAmzDate(amzDate)
    if (Number.isNaN(time)) throw new S3Error('AuthorizationQueryParametersError', 'X-Amz-Date must be YYYYMMDDTHHMMSSZ')
    if (now > time + expires * 1000) throw new S3Error('AccessDenied', 'Request has expired')
    if (time - now > MAX_SKEW_MS) throw new S3Error('AccessDenied', 'Request is not valid yet')
    payload = q.get('X-Amz-Content-Sha256') ?? req.headers['x-amz-content-sha256'] ?? UNSIGNED_PAYLOAD
    queryParams = params.filter(([k]) => k !== 'X-Amz-Signature')
  }
  if (!amzDate.startsWith(cred.date)) throw new S3Error('AuthorizationHeaderMalformed', `the credential's date ${cred.date} is not the request's ${amzDate.slice(0, 8)}`)
  if (cred.service !== 's3') throw new S3Error('AuthorizationHeaderMalformed', `the credential's service is "${cred.service}", not s3`)
  if (!signedHeaders.includes('host')) throw new S3Error('AccessDenied', 'the host header must be signed')
  const secret = await secretOf(cred.accessKey)
  if (secret == null) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.')
  const scope = `${cred.date}/${cred.region}/${cred.service}/aws4_request`
  const key = signingKey(secret, cred.date, cred.region, cred.service)
  const canonical = canonicalRequest(req, signedHeaders, queryParams, payload)
  const expected = hmac(key, stringToSign(amzDate, scope, canonical)).toString('hex')
  if (!sameSignature(expected, signature)) throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.')
  return { accessKey: cred.accessKey, payload, amzDate, scope, signingKey: key, seed: signature }
}
