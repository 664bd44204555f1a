import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { open, seal } from './cipher.ts'

export const MASTER_FILE = 'master.key'

/**
 * The user's master key, kept in its data directory: every file key is wrapped with it and the
 * wrapped key travels in the file's table, so the master key alone opens every file.
 */
export class Keystore {
  private constructor (private readonly master: Buffer) {}

  static async open (dataDir: string): Promise<Keystore> {
    const path = join(dataDir, MASTER_FILE)
    try {
      const key = await readFile(path)
      if (key.byteLength === 32) return new Keystore(key)
      throw new Error(`${path} is not a 32-byte key`)
    } catch (err: any) {
      if (err.code !== 'ENOENT') throw err
    }
    await mkdir(dataDir, { recursive: true, mode: 0o700 })
    const key = randomBytes(32)
    await writeFile(path, key, { mode: 0o600, flag: 'wx' })
    return new Keystore(key)
  }

  wrap (fileKey: Uint8Array, fileId: string): string {
    return seal(this.master, fileKey, Buffer.from(`stor:filekey:${fileId}`)).toString('hex')
  }

  unwrap (wrapped: string, fileId: string): Buffer {
    return open(this.master, Buffer.from(wrapped, 'hex'), Buffer.from(`stor:filekey:${fileId}`), `the key of file ${fileId} (was it stored with another identity's keys?)`)
  }
}
