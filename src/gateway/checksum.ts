import { S3Error } from './errors.ts'

/**
 * S3's additional checksums of a request body (`x-amz-checksum-ALG`, in a header or, with
 * `x-amz-trailer`, after an aws-chunked body): the AWS SDKs send a CRC32 with every PutObject and
 * UploadPart by default, and S3 refuses a body that does not match it with BadDigest. Over HTTPS
 * with an unsigned payload it is the only check the body gets.
 */

/** The algorithms checked, by their header suffix, with S3's name and the digest's length in bytes. */
export const CHECKSUMS = {
  crc32: { name: 'CRC32', bytes: 4 },
  crc32c: { name: 'CRC32C', bytes: 4 },
  sha1: { name: 'SHA1', bytes: 20 },
  sha256: { name: 'SHA256', bytes: 32 }
} as const
export type ChecksumAlgorithm = keyof typeof CHECKSUMS

/** What a request asks to be checked: the algorithm, and the base64 value (undefined until a trailer brings it). */
export interface WantedChecksum { algorithm: ChecksumAlgorithm, header: string, value?: string, inTrailer: boolean }

/** Header suffixes that name a checksum of the body (not -mode, -type or -algorithm). */
const KNOWN_SUFFIXES = new Set([...Object.keys(CHECKSUMS), 'crc64nvme'])

function algorithmOf (header: string): ChecksumAlgorithm {
  const suffix = header.slice('x-amz-checksum-'.length)
  if (suffix === 'crc64nvme') throw new S3Error('NotImplemented', 'x-amz-checksum-crc64nvme is not supported by this gateway; use CRC32, CRC32C, SHA1 or SHA256')
  return suffix as ChecksumAlgorithm
}

/** The checksum a request's headers ask for, checked for form; undefined if none. */
export function wantedChecksum (headers: Record<string, string | string[] | undefined>): WantedChecksum | undefined {
  const named = Object.keys(headers).filter(h => h.startsWith('x-amz-checksum-') && KNOWN_SUFFIXES.has(h.slice('x-amz-checksum-'.length)))
  const trailer = typeof headers['x-amz-trailer'] === 'string' ? headers['x-amz-trailer'].trim().toLowerCase() : undefined
  if (trailer != null && !(trailer.startsWith('x-amz-checksum-') && KNOWN_SUFFIXES.has(trailer.slice('x-amz-checksum-'.length)))) throw new S3Error('InvalidRequest', `x-amz-trailer "${trailer.slice(0, 64)}" is not an x-amz-checksum-* header this gateway knows`)
  if (named.length + (trailer != null ? 1 : 0) > 1) throw new S3Error('InvalidRequest', 'Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.')
  if (trailer != null) return { algorithm: algorithmOf(trailer), header: trailer, inTrailer: true }
  if (named.length === 0) return undefined
  const header = named[0]
  const algorithm = algorithmOf(header)
  const value = headers[header]
  checkForm(algorithm, header, value)
  return { algorithm, header, value: value as string, inTrailer: false }
}

/** Throws S3's InvalidRequest unless `value` is base64 of the algorithm's digest length. */
export function checkForm (algorithm: ChecksumAlgorithm, header: string, value: unknown): void {
  const bytes = CHECKSUMS[algorithm].bytes
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length !== 4 * Math.ceil(bytes / 3) || Buffer.from(value, 'base64').byteLength !== bytes) {
    throw new S3Error('InvalidRequest', `Value for ${header} header is invalid.`)
  }
}

/** Throws BadDigest unless the body's digest (hex) is the value asked for (base64). */
export function checkChecksum (wanted: WantedChecksum, digestHex: string): void {
  if (wanted.value == null) throw new S3Error('InvalidRequest', `the trailing ${wanted.header} header named by x-amz-trailer did not arrive`)
  if (Buffer.from(digestHex, 'hex').toString('base64') !== wanted.value) throw new S3Error('BadDigest', `The ${CHECKSUMS[wanted.algorithm].name} you specified did not match the calculated checksum.`)
}

/**
 * An incremental hasher for `algorithm`: a node:crypto hash name, or 'crc32' / 'crc32c'. It refers
 * to nothing outside itself but its arguments, because the hashing thread runs it from its source
 * text (hasher.ts). CRC-32 is zlib's (native); CRC-32C (Castagnoli) has no native form in Node, so it
 * is computed here with a table, a byte at a time (only when a client asks for it).
 */
export function makeHasher (algorithm: string, createHash: (a: string) => { update: (b: Uint8Array) => unknown, digest: (e: 'hex') => string }, crc32: (b: Uint8Array, v?: number) => number): { update: (b: Uint8Array) => void, digest: () => string } {
  const hex = (n: number): string => (n >>> 0).toString(16).padStart(8, '0')
  if (algorithm === 'crc32') {
    let v = 0
    return { update: b => { v = crc32(b, v) }, digest: () => hex(v) }
  }
  if (algorithm === 'crc32c') {
    const table = new Int32Array(256)
    for (let i = 0; i < 256; i++) {
      let c = i
      for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ 0x82F63B78 : c >>> 1
      table[i] = c
    }
    let v = -1
    return {
      update: b => { for (let i = 0; i < b.length; i++) v = table[(v ^ b[i]) & 0xff] ^ (v >>> 8) },
      digest: () => hex(~v)
    }
  }
  const h = createHash(algorithm)
  return { update: b => { h.update(b) }, digest: () => h.digest('hex') }
}
