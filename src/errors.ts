/** Errors carry a stable `name` callers can match, and (on the wire) a `code`. */
export class StorError extends Error {
  static readonly code: string = 'ERR_STOR'
  readonly code: string
  constructor (message: string, code = 'ERR_STOR') {
    super(message)
    this.code = code
  }
}

function named (name: string, code: string): new (message: string) => StorError {
  const cls = class extends StorError {
    constructor (message: string) {
      super(message, code)
      this.name = name
    }
  }
  Object.defineProperty(cls, 'name', { value: name })
  return cls
}

/** A user-supplied argument is wrong: the message names it and says what to do. */
export const InvalidArgumentError = named('InvalidArgumentError', 'ERR_INVALID_ARGUMENT')
/** Bytes from the network that do not decode to a valid message. */
export const MalformedMessageError = named('MalformedMessageError', 'ERR_MALFORMED')
/** A valid message the receiver refuses: bad signature, expired grant, not the owner. */
export const AccessDeniedError = named('AccessDeniedError', 'ERR_ACCESS_DENIED')
export const NotFoundError = named('NotFoundError', 'ERR_NOT_FOUND')
export const NoSpaceError = named('NoSpaceError', 'ERR_NO_SPACE')
export const UnreachableError = named('UnreachableError', 'ERR_UNREACHABLE')
/** Data whose hash does not match what was promised. */
export const IntegrityError = named('IntegrityError', 'ERR_INTEGRITY')
/** A limit was hit: too large, too many, too fast. */
export const LimitError = named('LimitError', 'ERR_LIMIT')
/** The service cannot do it now (no FAT replica orders writes, or none reaches a majority); try again. */
export const UnavailableError = named('UnavailableError', 'ERR_UNAVAILABLE')
/**
 * A FAT replica that has heard neither a leader nor a majority of its replica set for a while:
 * it is cut off (or most replicas are down), so retrying it alone is useless until that changes.
 */
export const NoQuorumError = named('NoQuorumError', 'ERR_NO_QUORUM')
/** The local disk failed a write (full, read-only, I/O error): the fault is here, not on the network. */
export const LocalDiskError = named('LocalDiskError', 'ERR_LOCAL_DISK')
/** Another process already uses this data directory. */
export const LockedError = named('LockedError', 'ERR_LOCKED')

const byCode = new Map<string, new (message: string) => StorError>([
  ['ERR_INVALID_ARGUMENT', InvalidArgumentError],
  ['ERR_MALFORMED', MalformedMessageError],
  ['ERR_ACCESS_DENIED', AccessDeniedError],
  ['ERR_NOT_FOUND', NotFoundError],
  ['ERR_NO_SPACE', NoSpaceError],
  ['ERR_UNREACHABLE', UnreachableError],
  ['ERR_INTEGRITY', IntegrityError],
  ['ERR_LIMIT', LimitError],
  ['ERR_LOCKED', LockedError],
  ['ERR_LOCAL_DISK', LocalDiskError],
  ['ERR_UNAVAILABLE', UnavailableError],
  ['ERR_NO_QUORUM', NoQuorumError]
])

/** Rebuilds the named error a remote peer reported. */
export function errorFromCode (code: string, message: string): StorError {
  const cls = byCode.get(code)
  return cls != null ? new cls(message) : new StorError(message, code)
}

/** The wire code of any error: ours keep theirs, anything else is internal. */
export function codeOf (err: unknown): string {
  return err instanceof StorError ? err.code : 'ERR_INTERNAL'
}

const DISK_CODES: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
  EFBIG: 'file too large for the file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted'
}

/** A failed local write, named as the local disk's fault with what to do. */
export function localDiskError (path: string, err: any): StorError {
  const what = DISK_CODES[err?.code] ?? err?.message ?? String(err)
  return new LocalDiskError(`cannot write ${path} on the local disk: ${what}${err?.code != null ? ` (${err.code})` : ''}; the file's replicas are fine: make room there (or fix the disk) and run the same command again to resume`)
}
