import type { Stats } from 'node:fs'
import { stat } from 'node:fs/promises'
import { StorError } from '../../errors.ts'

/** What says a file was written to: its size, times and inode (ctime changes on every write, and cannot be set back). */
export interface FileStamp { size: number, mtimeMs: number, ctimeMs: number, ino: number }

export function stampOf (info: Pick<Stats, 'size' | 'mtimeMs' | 'ctimeMs' | 'ino'>): FileStamp {
  return { size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs, ino: info.ino }
}

/** Whether a file is as it was when stamped (false if it is gone). */
export async function unchanged (path: string, before: FileStamp): Promise<boolean> {
  const now = await stat(path).catch(() => undefined)
  return now != null && now.size === before.size && now.mtimeMs === before.mtimeMs && now.ctimeMs === before.ctimeMs && now.ino === before.ino
}

/**
 * Files that changed while an upload read them (like tar's "file changed as we read it"): they
 * were not stored; `stored` holds the results of the files of the same command that were.
 */
export class FileChangedError extends StorError {
  constructor (readonly paths: string[], readonly stored: unknown[]) {
    super(`FILE: ${paths[0]}${paths.length > 1 ? ` and ${paths.length - 1} more` : ''} changed as we read ${paths.length > 1 ? 'them' : 'it'}; not stored${stored.length > 0 ? ` (the other ${stored.length} files were)` : ''}: upload ${paths.length > 1 ? 'them' : 'it'} again once ${paths.length > 1 ? 'they stop' : 'it stops'} changing`, 'ERR_FILE_CHANGED')
    this.name = 'FileChangedError'
  }
}

/** A read found a file shorter than when it was stamped. */
export class ShortReadError extends Error {
  constructor (readonly path: string) { super(`${path} changed while it was being read`) }
}
