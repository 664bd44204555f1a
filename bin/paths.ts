import { readdir, stat } from 'node:fs/promises'
import { join, relative, resolve } from 'node:path'
import { InvalidArgumentError } from '../src/index.ts'

/**
 * FILE arguments as regular files: a folder stands for every file below it, named relative to it.
 * Entries below a folder that are not regular files (symlinks, which are not followed, sockets,
 * pipes, devices) are listed in `skipped`.
 */
export async function expandPaths (args: string[]): Promise<{ paths: string[], names: string[], skipped: string[] }> {
  const paths: string[] = []
  const names: string[] = []
  const skipped: string[] = []
  for (const arg of args) {
    const path = resolve(arg)
    const info = await stat(path).catch(() => { throw new InvalidArgumentError(`FILE: ${path} does not exist or cannot be read`) })
    if (!info.isDirectory()) {
      paths.push(path)
      names.push(path.split('/').pop() ?? path)
      continue
    }
    const all = await readdir(path, { recursive: true, withFileTypes: true })
    for (const e of all) if (!e.isFile() && !e.isDirectory()) skipped.push(join(e.parentPath, e.name))
    const entries = all.filter(e => e.isFile())
    for (const e of entries.sort((a, b) => join(a.parentPath, a.name).localeCompare(join(b.parentPath, b.name)))) {
      const full = join(e.parentPath, e.name)
      paths.push(full)
      names.push(relative(path, full))
    }
  }
  if (paths.length === 0) throw new InvalidArgumentError('FILE: the folders given hold no files')
  return { paths, names, skipped: skipped.sort() }
}
