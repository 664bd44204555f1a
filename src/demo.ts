import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, open, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster } from './cluster.ts'
import { openClient } from './daemon.ts'
import { IntegrityError, InvalidArgumentError } from './errors.ts'
import { formatSize } from './units.ts'

export interface DemoResult { fileId: string, size: number, chunks: number, sha256: string, placements: Array<{ chunk: number, vendors: number[] }>, seconds: number }

async function fileHash (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const part of createReadStream(path)) h.update(part as Buffer)
  return h.digest('hex')
}

async function writeRandom (path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w')
  for (let off = 0; off < bytes; off += 1 << 20) await fh.write(randomBytes(Math.min(1 << 20, bytes - off)))
  await fh.close()
}

/**
 * Starts a local network in child processes (one FAT, three vendors with two devices each, under
 * a temporary folder), stores a file, fetches it back, compares, and stops everything.
 */
export async function runDemo (file: string | undefined, say: (line: string) => void): Promise<DemoResult> {
  if (file != null) {
    const s = await stat(file).catch(() => undefined)
    if (s == null || !s.isFile()) throw new InvalidArgumentError(`FILE: ${file} does not exist or is not a regular file`)
  }
  const dir = await mkdtemp(join(tmpdir(), 'stordaemon-demo-'))
  try {
    say(`starting a local network under ${dir}: 1 FAT server, 3 vendors with 2 devices each`)
    const cluster = await startCluster({ dir, vendors: 3, devicesPerVendor: 2, deviceSize: '1GiB' })
    try {
      say(`FAT server ${cluster.fat.peerId} at ${cluster.bootstrap}`)
      cluster.vendors.forEach((v, i) => { say(`vendor ${i} ${v.peerId}`) })
      const source = file ?? join(dir, 'demo-input.bin')
      if (file == null) await writeRandom(source, 10 * 1024 * 1024 + 12345)
      const client = await openClient({ dataDir: join(dir, 'user'), bootstrap: [cluster.bootstrap] })
      try {
        const started = Date.now()
        const up = await client.upload(source)
        say(`stored ${source} (${formatSize(up.size)}) as ${up.fileId} in ${up.chunks} chunks`)
        const out = join(dir, 'demo-output.bin')
        await client.download(up.fileId, out)
        const [a, b] = await Promise.all([fileHash(source), fileHash(out)])
        if (a !== b) throw new IntegrityError(`the file fetched back differs from the original (${a} vs ${b})`)
        const index = new Map(cluster.vendors.map((v, i) => [v.peerId, i]))
        const placements = up.placements.map(p => ({ chunk: p.chunk, vendors: p.vendors.map(v => index.get(v) ?? -1) }))
        for (const p of placements) say(`chunk ${p.chunk}: vendors ${p.vendors.join(', ')}`)
        const seconds = (Date.now() - started) / 1000
        say(`fetched back ${formatSize(up.size)} and compared: identical (sha256 ${a.slice(0, 16)}...), ${seconds.toFixed(1)} s`)
        return { fileId: up.fileId, size: up.size, chunks: up.chunks, sha256: a, placements, seconds }
      } finally {
        await client.close()
      }
    } finally {
      await cluster.stop()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
