import { arr, bool, hex, int, obj, oneOf, opt, peer, str, type Check, type Infer } from './schema.ts'
import { Auth } from './messages.ts'

/**
 * A user's records, kept by the FAT (requests on /stor/fat/1.0.0): small values the user seals
 * before they leave its machine, filed under a scope and an id that are keyed hashes of the
 * user's own names. The FAT keeps, orders and mirrors them like files' tables, and learns only
 * their number and sizes. The S3 gateway keeps its buckets, object index, multipart uploads and
 * access keys in them, so every gateway of the same identity sees the same state.
 */

const t = <T extends string>(name: T): Check<T> => oneOf(name)

/** A scope (16 bytes) groups records listed together; an id (32 bytes) names one record in it. */
export const recordScope = hex(16)
export const recordId = hex(32)
/** A sealed value: base64 of at most MAX_RECORD_VALUE bytes. */
export const MAX_RECORD_VALUE = 64 * 1024
export const recordValue = str(Math.ceil(MAX_RECORD_VALUE / 3) * 4, /^[A-Za-z0-9+/]*={0,2}$/)
/** Writes one request (and one op) carries: applied together or not at all. */
export const MAX_RECORD_WRITES = 1000
/** Records one owner may keep. */
export const MAX_RECORDS_PER_OWNER = 1_000_000
/** Records one list reply carries at most (it says when there are more). */
export const MAX_RECORDS_LISTED = 1000

/** Put `value`, or delete when it is left out. */
export const RecordWrite = obj({ scope: recordScope, id: recordId, value: opt(recordValue) })
export type RecordWrite = Infer<typeof RecordWrite>
export const RecordEntry = obj({ id: recordId, value: recordValue })
export type RecordEntry = Infer<typeof RecordEntry>

/**
 * Writes records atomically. `expect` makes it conditional: each named record must hold exactly
 * that value (sha-256 of the stored string), or be absent when `absent` is true; else nothing is
 * written and the reply says `applied: false`.
 */
export const RecordExpect = obj({ scope: recordScope, id: recordId, absent: opt(bool), sha256: opt(hex(32)) })
export type RecordExpect = Infer<typeof RecordExpect>
export const WriteRecords = obj({ t: t('write-records'), writes: arr(RecordWrite, MAX_RECORD_WRITES), expect: opt(arr(RecordExpect, 16)), auth: Auth })
export const RecordsWritten = obj({ t: t('records-written'), applied: bool })

/** Reads the named records of one scope; absent ones are left out of the reply. */
export const GetRecords = obj({ t: t('get-records'), scope: recordScope, ids: arr(recordId, MAX_RECORDS_LISTED), auth: Auth })
/** Lists a scope's records in id order, after `after`; `more` says a further page exists. */
export const ListRecords = obj({ t: t('list-records'), scope: recordScope, after: opt(recordId), limit: opt(int(1, MAX_RECORDS_LISTED)), auth: Auth })
export const RecordList = obj({ t: t('record-list'), records: arr(RecordEntry, MAX_RECORDS_LISTED), more: bool })

/** The op in the replicated log: one request's writes, for `owner`. */
export const RecordsOp = obj({ op: t('records'), owner: peer, writes: arr(RecordWrite, MAX_RECORD_WRITES) })
export type RecordsOp = Infer<typeof RecordsOp>
