import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { binPath, startCluster, type Cluster, type ClusterOptions } from '../src/cluster.ts'
import { openClient, type Client } from '../src/index.ts'
import type { Libp2p } from '@libp2p/interface'
import { openStream, type Target } from '../src/protocol/rpc.ts'
import { frames } from '../src/protocol/stream.ts'

export async function tempDir (name: string): Promise<{ dir: string, remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `stor-${name}-`))
  return { dir, remove: async () => { await rm(dir, { recursive: true, force: true }) } }
}

export async function randomFile (path: string, bytes: number): Promise<string> {
  const fh = await open(path, 'w')
  for (let off = 0; off < bytes; off += 1 << 20) await fh.write(randomBytes(Math.min(1 << 20, bytes - off)))
  await fh.close()
  return path
}

export async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const part of createReadStream(path)) h.update(part as Buffer)
  return h.digest('hex')
}

/** Bytes in all files below a folder. */
export async function diskUsage (dir: string): Promise<number> {
  let total = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    // a file may be erased between listing and stat: it then counts as gone
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name)).catch(() => ({ size: 0 }))).size
  }
  return total
}

/** Names of all files below a folder. */
export async function filesUnder (dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true, recursive: true })).filter(e => e.isFile()).map(e => e.name)
}

/** Polls `check` until it returns true, failing after `timeoutMs` with `what` (and the last error a check threw). */
export async function eventually (what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    try {
      if (await check()) return
    } catch (err: any) {
      last = `: ${err.message}`
    }
    if (Date.now() > until) throw new Error(`timed out waiting until ${what}${last}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

export interface CliResult { code: number | null, stdout: string, stderr: string }

/** A user mistake: one line on stderr naming the problem, exit code 1, no stack trace. */
export function assertOneLineError (r: CliResult, pattern: RegExp): void {
  assert.equal(r.code, 1, `exit code 1 expected, got ${r.code}: ${r.stderr}`)
  const lines = r.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `one line expected:\n${r.stderr}`)
  assert.match(lines[0], /^stordaemon: /)
  assert.match(lines[0], pattern)
  assert.doesNotMatch(r.stderr, /\n\s+at /)
}

/** Runs the built CLI as a user would, with no terminal. */
export async function cli (args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binPath(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => { stdout += d })
    child.stderr.on('data', d => { stderr += d })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
    child.on('error', reject)
    child.on('exit', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

export interface ClusterFixture {
  /** The temporary folder everything lives under. */
  readonly dir: string
  readonly cluster: Cluster
  /** The client of the user named when the fixture was made. */
  user: (name: string) => Client
}

/**
 * A local network for the enclosing describe block: a temporary folder, a cluster started in it
 * and one client per name in `users` before its tests; all closed, stopped and removed after them.
 */
export function useCluster (name: string, opts: Omit<ClusterOptions, 'dir'>, users: string[]): ClusterFixture {
  let tmp: Awaited<ReturnType<typeof tempDir>> | undefined
  let cluster: Cluster | undefined
  const clients = new Map<string, Client>()
  before(async function () {
    tmp = await tempDir(name)
    cluster = await startCluster({ ...opts, dir: tmp.dir })
    for (const u of users) clients.set(u, await openClient({ dataDir: join(tmp.dir, u), bootstrap: [cluster.bootstrap] }))
  })
  after(async function () {
    for (const c of clients.values()) await c.close()
    await cluster?.stop()
    await tmp?.remove()
  })
  return {
    get dir () { return (tmp as { dir: string }).dir },
    get cluster () { return cluster as Cluster },
    user: (u: string) => {
      const c = clients.get(u)
      if (c == null) throw new Error(`no user ${u} in this fixture`)
      return c
    }
  }
}

/**
 * Sends raw frames from `node` on a fresh stream and returns the first reply, decoded loosely
 * (JSON, unchecked); a stream that fails gives `{ t: 'stream-error', message }`.
 */
export async function rawRequest (node: Libp2p, target: Target, protocol: string, ...payload: Uint8Array[]): Promise<any> {
  const stream = await openStream(node, target, protocol, { signal: AbortSignal.timeout(10_000) })
  const fs = frames(stream, 64 * 1024 * 1024, 64 * 1024 * 1024)
  try {
    for (const p of payload) await fs.write(p)
    const reply = await fs.read({ signal: AbortSignal.timeout(10_000) })
    return JSON.parse(new TextDecoder().decode(reply))
  } catch (err: any) {
    return { t: 'stream-error', message: err.message }
  } finally {
    stream.abort(new Error('done'))
  }
}
