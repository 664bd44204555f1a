import { createHash, createHmac } from 'node:crypto'
import { IntegrityError, InvalidArgumentError } from '../../errors.ts'
import { MAX_RECORD_VALUE, MAX_RECORD_WRITES, MAX_RECORDS_LISTED, type RecordEntry, type RecordExpect, type RecordWrite } from '../../protocol/messages.ts'
import { open, seal } from './cipher.ts'
import { CHUNK_OVERHEAD } from '../../protocol/ids.ts'
import type { Keystore } from './keystore.ts'

/** A record as the user sees it: its name in its scope, its value, and a version to make a later write conditional on. */
export interface UserRecord<V = unknown> { key: string, value: V, version: string }

/** A write: put `value`, or delete when it is undefined. */
export interface RecordChange { scope: string, key: string, value?: unknown }
/** A condition on a write: the record holds `version` (from a read), or is absent when `version` is null. */
export interface RecordCondition { scope: string, key: string, version: string | null }

/**
 * The user's records kept by the FAT (src/protocol/records.ts): JSON values under a scope and a
 * key of the user's choosing. Scopes and keys travel as keyed hashes and values sealed with keys
 * derived from the master key, so the FAT learns neither names nor contents; another client of
 * the same identity (the same master key) reads them back.
 */
export interface RecordStore {
  get: <V = unknown>(scope: string, keys: string[]) => Promise<Map<string, UserRecord<V>>>
  /** Every record of a scope (in no useful order: ids are hashes). */
  list: <V = unknown>(scope: string) => Promise<Array<UserRecord<V>>>
  /** Applies the changes together; false (and nothing written) if a condition does not hold. */
  write: (changes: RecordChange[], conditions?: RecordCondition[]) => Promise<boolean>
}

export type RecordRequest =
  | { t: 'write-records', writes: RecordWrite[], expect?: RecordExpect[] }
  | { t: 'get-records', scope: string, ids: string[] }
  | { t: 'list-records', scope: string, after?: string, limit?: number }

export interface RecordTransport {
  written: (msg: Extract<RecordRequest, { t: 'write-records' }>) => Promise<boolean>
  listed: (msg: Exclude<RecordRequest, { t: 'write-records' }>) => Promise<{ records: RecordEntry[], more: boolean }>
}

const versionOf = (value: string): string => createHash('sha256').update(value).digest('hex')

export function createRecordStore (keystore: Keystore, transport: RecordTransport): RecordStore {
  const nameKey = keystore.derive('records:names')
  const valueKey = keystore.derive('records:values')
  const scopeId = (scope: string): string => createHmac('sha256', nameKey).update(`scope\0${scope}`).digest().subarray(0, 16).toString('hex')
  const recordId = (scope: string, key: string): string => createHmac('sha256', nameKey).update(`key\0${scope}\0${key}`).digest('hex')
  const context = (sid: string, id: string): Buffer => Buffer.from(`stor:record:${sid}:${id}`)

  const sealValue = (scope: string, key: string, value: unknown): string => {
    const plain = Buffer.from(JSON.stringify({ k: key, v: value }))
    if (plain.byteLength + CHUNK_OVERHEAD > MAX_RECORD_VALUE) throw new InvalidArgumentError(`record ${key}: ${plain.byteLength} bytes is more than a record holds (${MAX_RECORD_VALUE - CHUNK_OVERHEAD})`)
    return seal(valueKey, plain, context(scopeId(scope), recordId(scope, key))).toString('base64')
  }
  const openValue = <V>(sid: string, e: RecordEntry): UserRecord<V> => {
    const plain = open(valueKey, Buffer.from(e.value, 'base64'), context(sid, e.id), `record ${e.id} (was it written with another identity's keys?)`)
    let parsed: { k: unknown, v: V }
    try { parsed = JSON.parse(plain.toString('utf8')) } catch { throw new IntegrityError(`record ${e.id} does not hold JSON`) }
    if (typeof parsed?.k !== 'string') throw new IntegrityError(`record ${e.id} has no key`)
    return { key: parsed.k, value: parsed.v, version: versionOf(e.value) }
  }

  return {
    async get<V> (scope: string, keys: string[]) {
      const sid = scopeId(scope)
      const out = new Map<string, UserRecord<V>>()
      for (let i = 0; i < keys.length; i += MAX_RECORDS_LISTED) {
        const ids = keys.slice(i, i + MAX_RECORDS_LISTED).map(k => recordId(scope, k))
        const r = await transport.listed({ t: 'get-records', scope: sid, ids })
        for (const e of r.records) {
          const rec = openValue<V>(sid, e)
          // the id is a hash of the key: a record filed under another id is not this one
          if (recordId(scope, rec.key) === e.id) out.set(rec.key, rec)
        }
      }
      return out
    },
    async list<V> (scope: string) {
      const sid = scopeId(scope)
      const out: Array<UserRecord<V>> = []
      let after: string | undefined
      for (;;) {
        const r = await transport.listed({ t: 'list-records', scope: sid, ...(after != null ? { after } : {}) })
        for (const e of r.records) {
          const rec = openValue<V>(sid, e)
          if (recordId(scope, rec.key) === e.id) out.push(rec)
        }
        if (!r.more || r.records.length === 0) return out
        after = r.records[r.records.length - 1].id
      }
    },
    async write (changes, conditions = []) {
      if (changes.length > MAX_RECORD_WRITES) throw new InvalidArgumentError(`${changes.length} record changes in one write: at most ${MAX_RECORD_WRITES}`)
      const writes = changes.map(c => ({ scope: scopeId(c.scope), id: recordId(c.scope, c.key), ...(c.value !== undefined ? { value: sealValue(c.scope, c.key, c.value) } : {}) }))
      const expect = conditions.map(c => ({ scope: scopeId(c.scope), id: recordId(c.scope, c.key), ...(c.version == null ? { absent: true } : { sha256: c.version }) }))
      return await transport.written({ t: 'write-records', writes, ...(expect.length > 0 ? { expect } : {}) })
    }
  }
}
