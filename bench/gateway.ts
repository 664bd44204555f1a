// The S3 gateway in the benchmark: the same file as `stordaemon upload` sends, uploaded through a
// `stordaemon gateway` with the AWS SDK's multipart Upload (@aws-sdk/lib-storage), then read back
// with GetObject and checked. The gateway is started first and warmed up with 64 MiB, not timed;
// the SDK runs in the benchmark's own process.
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { S3Client, CreateBucketCommand, DeleteObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { addKey, openClient, spawnGateway, type Cluster } from '../src/index.ts'
import { benchNodeArgs, cpuSeconds, peakRss } from './transfer.ts'

/** Times, and the gateway process's peak RSS after the upload and after the download (VmHWM). */
export interface GatewayRun {
  upSeconds: number
  downSeconds: number
  upPeakRss: number
  downPeakRss: number
  /** CPU seconds during the upload: the gateway's, this process's (the SDK's), the FAT's and vendors' together */
  upCpuSeconds: number
  upClientCpuSeconds: number
  upClusterCpuSeconds: number
}

export async function measureGateway (cluster: Cluster, dir: string, src: string, total: number, srcHash: string, replicas: number): Promise<GatewayRun> {
  const userDir = join(dir, 'gateway-user')
  const client = await openClient({ dataDir: userDir, bootstrap: [cluster.bootstrap] })
  const key = await addKey(client, 'bench').finally(async () => { await client.close() })
  // BENCH_CPU_PROF profiles the gateway too
  const gw = await spawnGateway(userDir, cluster.bootstrap, ['--replicas', String(replicas)], undefined, {}, { nodeArgs: benchNodeArgs() })
  const s3 = new S3Client({ endpoint: gw.url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.accessKey, secretAccessKey: key.secret } })
  try {
    await s3.send(new CreateBucketCommand({ Bucket: 'bench' }))
    // warmed up first, like the cluster (bench/index.ts): the gateway is a long-running daemon, and
    // its first upload also fills its buffer pool and compiles its hot paths
    // the warm-up and the timed upload send the same way: the first `bytes` of the file, as `key`
    const upload = async (key: string, bytes: number): Promise<void> => {
      // ContentLength: lib-storage otherwise takes the part count from the size of the stream's file
      const body = createReadStream(src, { end: bytes - 1, highWaterMark: 1024 * 1024 })
      await new Upload({ client: s3, params: { Bucket: 'bench', Key: key, Body: body, ContentLength: bytes }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done()
    }
    await upload('warm-up', Math.min(total, 64 * 1024 * 1024))
    await s3.send(new DeleteObjectCommand({ Bucket: 'bench', Key: 'warm-up' }))
    const clusterCpu = (): number => [cluster.fat, ...cluster.vendors].reduce((a, p) => a + (cpuSeconds(p.child.pid) ?? NaN), 0)
    const cpuBefore = cpuSeconds(gw.child.pid) ?? 0
    const clusterBefore = clusterCpu()
    const clientBefore = process.cpuUsage()
    let t = performance.now()
    await upload('input.bin', total)
    const upSeconds = (performance.now() - t) / 1000
    const upPeakRss = peakRss(gw.child.pid)
    const upCpuSeconds = (cpuSeconds(gw.child.pid) ?? 0) - cpuBefore
    const upClusterCpuSeconds = clusterCpu() - clusterBefore
    const clientCpu = process.cpuUsage(clientBefore)
    const upClientCpuSeconds = (clientCpu.user + clientCpu.system) / 1e6
    t = performance.now()
    const got = await s3.send(new GetObjectCommand({ Bucket: 'bench', Key: 'input.bin' }))
    const h = createHash('sha256')
    let bytes = 0
    for await (const part of got.Body as AsyncIterable<Uint8Array>) { h.update(part); bytes += part.byteLength }
    const downSeconds = (performance.now() - t) / 1000
    if (bytes !== total || h.digest('hex') !== srcHash) throw new Error(`gateway: the object read back (${bytes} bytes) does not match the uploaded file`)
    return { upSeconds, downSeconds, upPeakRss, downPeakRss: peakRss(gw.child.pid), upCpuSeconds, upClientCpuSeconds, upClusterCpuSeconds }
  } catch (err) {
    const e = gw.stderr()
    if (e !== '') process.stderr.write(`gateway stderr:\n${e.slice(-3000)}\n`)
    throw err
  } finally {
    s3.destroy()
    await gw.kill()
  }
}
