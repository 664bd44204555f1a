import { Level } from 'level'
import { LockedError } from '../errors.ts'

export type DB = Level<string, Uint8Array>

/** Opens a level table; a second process on the same folder gets a clear LockedError. */
export async function openDb (dir: string): Promise<DB> {
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
  try {
    await db.open()
  } catch (err: any) {
    if (err.cause?.code === 'LEVEL_LOCKED') throw new LockedError(`${dir} is in use by another stordaemon process; stop it or choose another --data-dir`)
    throw err
  }
  return db
}

const enc = new TextEncoder()
const dec = new TextDecoder()

/** A typed view of one key prefix holding JSON records. */
export class Records<T> {
  constructor (readonly db: DB, readonly prefix: string) {}

  key (id: string): string { return `${this.prefix}/${id}` }

  async get (id: string): Promise<T | undefined> {
    const v = await this.db.get(this.key(id))
    return v == null ? undefined : JSON.parse(dec.decode(v)) as T
  }

  put (id: string, value: T): { type: 'put', key: string, value: Uint8Array } {
    return { type: 'put', key: this.key(id), value: enc.encode(JSON.stringify(value)) }
  }

  del (id: string): { type: 'del', key: string } {
    return { type: 'del', key: this.key(id) }
  }

  async * entries (under = ''): AsyncGenerator<[string, T]> {
    const gte = `${this.prefix}/${under}`
    for await (const [k, v] of this.db.iterator({ gte, lt: `${gte}\xff` })) {
      yield [k.slice(this.prefix.length + 1), JSON.parse(dec.decode(v)) as T]
    }
  }
}
