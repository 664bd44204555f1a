import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { IntegrityError } from '../../errors.ts'

const NONCE = 12
const TAG = 16

/** Binds a chunk to its file and position, so a vendor cannot swap chunks unnoticed. */
function aad (fileId: string, index: number): Buffer {
  return Buffer.from(`stor:chunk:${fileId}:${index}`)
}

/** AES-256-GCM: nonce || ciphertext || tag. */
export function seal (key: Uint8Array, plain: Uint8Array, context: Buffer): Buffer {
  const nonce = randomBytes(NONCE)
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

export const encryptChunk = (key: Uint8Array, fileId: string, index: number, plain: Uint8Array): Buffer => seal(key, plain, aad(fileId, index))
export const decryptChunk = (key: Uint8Array, fileId: string, index: number, sealed: Uint8Array): Buffer => open(key, sealed, aad(fileId, index), `chunk ${index}`)
