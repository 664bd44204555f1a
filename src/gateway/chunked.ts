import { createHash } from 'node:crypto'
import { S3Error } from './errors.ts'
import { chunkSignature, sameSignature, trailerSignature, type SigningContext } from './sigv4.ts'

/** Longest chunk header or trailer line accepted. */
const MAX_LINE = 4096
/** Largest aws-chunked chunk accepted: each is held whole until its signature is checked. */
export const MAX_AWS_CHUNK = 16 * 1024 * 1024

/** Reads lines and counted bytes from a stream of buffers. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0)
  private readonly it: AsyncIterator<Uint8Array>
  constructor (source: AsyncIterable<Uint8Array>) { this.it = source[Symbol.asyncIterator]() }

  private async more (): Promise<boolean> {
    const next = await this.it.next()
    if (next.done === true) return false
    this.buf = this.buf.byteLength === 0 ? Buffer.from(next.value) : Buffer.concat([this.buf, next.value])
    return true
  }

  async line (): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf('\r\n')
      if (i >= 0) {
        const s = this.buf.subarray(0, i).toString('latin1')
        this.buf = this.buf.subarray(i + 2)
        return s
      }
      if (this.buf.byteLength > MAX_LINE) throw new S3Error('InvalidRequest', 'an aws-chunked header line is too long')
      if (!await this.more()) throw new S3Error('IncompleteBody', 'the aws-chunked body ended inside a header line')
    }
  }

  async bytes (n: number): Promise<Buffer> {
    while (this.buf.byteLength < n) {
      if (!await this.more()) throw new S3Error('IncompleteBody', 'the aws-chunked body ended inside a chunk')
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }
}

/**
 * Decodes an aws-chunked body (`x-amz-content-sha256: STREAMING-...`): each chunk is
 * `HEX-SIZE[;chunk-signature=SIG]\r\nDATA\r\n`, a zero-size chunk ends it, then trailing headers
 * in the -TRAILER modes. With a signed mode every chunk's signature is checked, chained from the
 * request's, before its bytes go on; a bad one ends the body with SignatureDoesNotMatch. Trailing
 * headers (their signature checked first, in a signed mode) go to `onTrailer`.
 */
export async function * decodeAwsChunked (source: AsyncIterable<Uint8Array>, ctx: SigningContext, decodedLength: number, onTrailer?: (name: string, value: string) => void): AsyncGenerator<Buffer> {
  const signed = ctx.payload.startsWith('STREAMING-AWS4-HMAC-SHA256-PAYLOAD')
  const trailer = ctx.payload.endsWith('-TRAILER')
  const reader = new ByteReader(source)
  let previous = ctx.seed
  let total = 0
  for (;;) {
    const header = await reader.line()
    const m = /^([0-9a-fA-F]{1,8})(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(header)
    if (m == null) throw new S3Error('InvalidRequest', `malformed aws-chunked chunk header "${header.slice(0, 100)}"`)
    const size = parseInt(m[1], 16)
    if (size > MAX_AWS_CHUNK) throw new S3Error('InvalidRequest', `an aws-chunked chunk of ${size} bytes is larger than ${MAX_AWS_CHUNK}`)
    if (signed && m[2] == null) throw new S3Error('SignatureDoesNotMatch', 'an aws-chunked chunk has no signature')
    const data = size > 0 ? await reader.bytes(size) : Buffer.alloc(0)
    if (signed) {
      const expected = chunkSignature(ctx, previous, createHash('sha256').update(data).digest('hex'))
      if (!sameSignature(expected, m[2])) throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided (an aws-chunked chunk).')
      previous = expected
    }
    total += size
    if (total > decodedLength) throw new S3Error('IncompleteBody', `the aws-chunked body holds more than x-amz-decoded-content-length (${decodedLength}) bytes`)
    if (size === 0) break
    if ((await reader.bytes(2)).toString('latin1') !== '\r\n') throw new S3Error('InvalidRequest', 'an aws-chunked chunk does not end with CRLF')
    yield data
  }
  if (total !== decodedLength) throw new S3Error('IncompleteBody', `the aws-chunked body holds ${total} bytes, not x-amz-decoded-content-length ${decodedLength}`)
  if (trailer) {
    const lines: string[] = []
    for (;;) {
      const line = await reader.line()
      if (line === '') break
      if (lines.length > 16) throw new S3Error('InvalidRequest', 'too many trailing headers')
      lines.push(line)
    }
    if (signed) {
      const sigLine = lines.find(l => l.startsWith('x-amz-trailer-signature:'))
      const rest = lines.filter(l => !l.startsWith('x-amz-trailer-signature:'))
      const expected = trailerSignature(ctx, previous, rest.map(l => `${l}\n`).join(''))
      if (sigLine == null || !sameSignature(expected, sigLine.slice('x-amz-trailer-signature:'.length).trim())) throw new S3Error('SignatureDoesNotMatch', 'the trailing headers\' signature does not match')
    }
    for (const line of lines) {
      const colon = line.indexOf(':')
      if (colon > 0 && !line.startsWith('x-amz-trailer-signature:')) onTrailer?.(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
    }
  } else {
    // the final chunk is followed by an empty line
    await reader.line().catch(() => '')
  }
}
