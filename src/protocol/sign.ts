import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { toString as toHex, fromString as fromHex } from 'uint8arrays'
import { AccessDeniedError } from '../errors.ts'

/** Each kind of signed record has its own domain, so a signature of one is never valid as another. */
export type Domain = 'grant' | 'header' | 'receipt' | 'order' | 'transfer'

/** JSON with sorted keys: the same record always yields the same bytes. */
export function canonical (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value != null && typeof value === 'object') {
    const keys = Object.keys(value).filter(k => (value as Record<string, unknown>)[k] !== undefined).sort()
    return `{${keys.map(k => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value)
}

function signedBytes (domain: Domain, record: object): Uint8Array {
  const { sig: _sig, ...body } = record as Record<string, unknown>
  return new TextEncoder().encode(`stor:${domain}:v1\n${canonical(body)}`)
}

export async function sign<T extends object> (key: PrivateKey, domain: Domain, record: Omit<T, 'sig'>): Promise<T> {
  const sig = await key.sign(signedBytes(domain, record))
  return { ...record, sig: toHex(sig, 'base16') } as T
}

/** Throws AccessDeniedError unless `record.sig` is `signer`'s signature of it. */
export async function verify<T extends { sig: string }> (signer: string, domain: Domain, record: T): Promise<void> {
  let ok = false
  try {
    const pub = peerIdFromString(signer).publicKey
    ok = pub != null && await pub.verify(signedBytes(domain, record), fromHex(record.sig, 'base16'))
  } catch {
    ok = false
  }
  if (!ok) throw new AccessDeniedError(`the ${domain} signature is not ${signer}'s`)
}
