import { createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto'
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

/**
 * Ed25519 keys as node KeyObjects, made once per key: libp2p's Ed25519 keys build one from JWK
 * for every signature and every check (with the peer id parsed again), which cost more than the
 * signature itself, once per chunk on both ends of a transfer (--cpu-prof).
 */
const signingKeys = new WeakMap<PrivateKey, KeyObject>()
const checkingKeys = new Map<string, KeyObject | null>()
const MAX_CHECKING_KEYS = 1024

function signingKey (key: PrivateKey): KeyObject | undefined {
  if (key.type !== 'Ed25519') return undefined
  let obj = signingKeys.get(key)
  if (obj == null) {
    const raw = key.raw
    obj = createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', d: Buffer.from(raw.subarray(0, 32)).toString('base64url'), x: Buffer.from(raw.subarray(32, 64)).toString('base64url') } })
    signingKeys.set(key, obj)
  }
  return obj
}

/** The signer's Ed25519 public key (null for a peer id of another key type, checked by libp2p). */
function checkingKey (signer: string): KeyObject | null {
  let obj = checkingKeys.get(signer)
  if (obj === undefined) {
    const pub = peerIdFromString(signer).publicKey
    obj = pub?.type === 'Ed25519' ? createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(pub.raw).toString('base64url') } }) : null
    if (checkingKeys.size >= MAX_CHECKING_KEYS) checkingKeys.clear()
    checkingKeys.set(signer, obj)
  }
  return obj
}

export async function sign<T extends object> (key: PrivateKey, domain: Domain, record: Omit<T, 'sig'>): Promise<T> {
  const bytes = signedBytes(domain, record)
  const obj = signingKey(key)
  const sig = obj != null ? cryptoSign(null, bytes, obj) : await key.sign(bytes)
  return { ...record, sig: toHex(sig, 'base16') } as T
}

/** Throws AccessDeniedError unless `record.sig` is `signer`'s signature of it. */
export async function verify<T extends { sig: string }> (signer: string, domain: Domain, record: T): Promise<void> {
  let ok = false
  try {
    const obj = checkingKey(signer)
    const sig = fromHex(record.sig, 'base16')
    if (obj != null) {
      ok = sig.byteLength === 64 && cryptoVerify(null, signedBytes(domain, record), obj, sig)
    } else {
      const pub = peerIdFromString(signer).publicKey
      ok = pub != null && await pub.verify(signedBytes(domain, record), sig)
    }
  } catch {
    ok = false
  }
  if (!ok) throw new AccessDeniedError(`the ${domain} signature is not ${signer}'s`)
}
