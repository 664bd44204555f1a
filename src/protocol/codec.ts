import { LimitError, MalformedMessageError, errorFromCode } from '../errors.ts'
import { ErrorReply, type Message } from './messages.ts'
import type { Check } from './schema.ts'

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encode (msg: object): Uint8Array {
  return encoder.encode(JSON.stringify(msg))
}

/** Strictly decodes one message that must be one of `checks`, chosen by its `t` field. */
export function decode<C extends Check<any>> (bytes: Uint8Array, checks: Record<string, C>, maxBytes: number): Message<C> {
  if (bytes.byteLength > maxBytes) throw new LimitError(`message of ${bytes.byteLength} bytes is over the limit of ${maxBytes}`)
  let value: unknown
  try {
    value = JSON.parse(decoder.decode(bytes))
  } catch {
    throw new MalformedMessageError('message is not valid UTF-8 JSON')
  }
  const kind = (value as { t?: unknown } | null)?.t
  if (typeof kind !== 'string' || !Object.hasOwn(checks, kind)) {
    throw new MalformedMessageError(`unexpected message type ${typeof kind === 'string' ? JSON.stringify(kind.slice(0, 40)) : typeof kind}`)
  }
  return checks[kind](value, kind)
}

/** Decodes a reply: the expected message, or the remote's error rethrown as its named class. */
export function decodeReply<C extends Check<any>> (bytes: Uint8Array, expected: Record<string, C>, maxBytes: number): Message<C> {
  const msg = decode(bytes, { ...expected, error: ErrorReply }, maxBytes) as Message<C> | ErrorReply
  if ((msg as ErrorReply).t === 'error' && !Object.hasOwn(expected, 'error')) {
    const e = msg as ErrorReply
    throw errorFromCode(e.code, e.message)
  }
  return msg as Message<C>
}
