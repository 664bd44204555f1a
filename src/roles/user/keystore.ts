import { createHmac, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { open, seal } from './cipher.ts'
import { InvalidArgumentError } from '../../errors.ts'

export const MASTER_FILE = 'master.key'

/**
 * The user's master key, kept in its data directory: every file key is wrapped with it and the
 * wrapped key travels in the file's table, so the master key alone opens every file.
 */
export class Keystore {
  private constructor (private readonly master: Buffer) {}

  /** `create`: make a new master key if there is none (only for a new identity: for an old one, its files need the old key). */
  static async open (dataDir: string, create: boolean): Promise<Keystore> {
    const path = join(dataDir, MASTER_FILE)
    try {
      const key = await readFile(path)
      if (key.byteLength === 32) return new Keystore(key)
      throw new Error(`${path} is not a 32-byte key`)
    } catch (err: any) {
      if (err.code !== 'ENOENT') throw err
    }
    if (!create) throw new InvalidArgumentError(`--data-dir: ${path} is missing, but ${dataDir} holds an identity; restore the keys with \`stordaemon key import\` (files stored with a new master key could not be read back)`)
    await mkdir(dataDir, { recursive: true, mode: 0o700 })
    const key = randomBytes(32)
    await writeFile(path, key, { mode: 0o600, flag: 'wx' })
    return new Keystore(key)
  }

  /** A key for one purpose, derived from the master key (so the master key alone restores it). */
  derive (purpose: string): Buffer {
    return createHmac('sha256', this.master).update(`stor:derive:${purpose}`).digest()
  }

  wrap (fileKey: Uint8Array, fileId: string): string {
    return seal(this.master, fileKey, Buffer.from(`stor:filekey:${fileId}`)).toString('hex')
  }

  unwrap (wrapped: string, fileId: string): Buffer {
    return open(this.master, Buffer.from(wrapped, 'hex'), Buffer.from(`stor:filekey:${fileId}`), `the key of file ${fileId} (was it stored with another identity's keys?)`)
  }
}
