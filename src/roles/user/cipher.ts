import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { IntegrityError } from '../../errors.ts'

const NONCE = 12
const TAG = 16

/** Binds a chunk to its file and position, so a vendor cannot swap chunks unnoticed. */
function aad (fileId: string, index: number): Buffer {
  return Buffer.from(`stor:chunk:${fileId}:${index}`)
}

/** AES-256-GCM: nonce || ciphertext || tag; a fresh random nonce unless one is given. */
export function seal (key: Uint8Array, plain: Uint8Array, context: Buffer, nonce: Uint8Array = randomBytes(NONCE)): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce)
  c.setAAD(context)
  const body = c.update(plain)
  c.final()
  return Buffer.concat([nonce, body, c.getAuthTag()])
}

export function open (key: Uint8Array, sealed: Uint8Array, context: Buffer, what: string): Buffer {
  if (sealed.byteLength < NONCE + TAG) throw new IntegrityError(`${what} is too short to be ciphertext`)
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, NONCE))
  d.setAAD(context)
  d.setAuthTag(sealed.subarray(sealed.byteLength - TAG))
  try {
    const body = d.update(sealed.subarray(NONCE, sealed.byteLength - TAG))
    d.final()
    return body
  } catch {
    throw new IntegrityError(`${what} fails authentication: wrong key or altered data`)
  }
}

/**
 * Seals chunk `index`. `nonce` is only ever given to re-create a chunk sent before with that nonce
 * (resume); the caller must check the result has the same hash, i.e. the plaintext is unchanged.
 */
export const encryptChunk = (key: Uint8Array, fileId: string, index: number, plain: Uint8Array, nonce?: Uint8Array): Buffer => seal(key, plain, aad(fileId, index), nonce)
/** The nonce a sealed chunk was made with. */
export const nonceOf = (sealed: Uint8Array): Buffer => Buffer.from(sealed.subarray(0, NONCE))
export const decryptChunk = (key: Uint8Array, fileId: string, index: number, sealed: Uint8Array): Buffer => open(key, sealed, aad(fileId, index), `chunk ${index}`)
