/**
 * The S3 gateway's /metrics and /health: `stordaemon gateway --http-listen 0` runs as a child
 * process on a network of one FAT and two vendors, @aws-sdk/client-s3 talks to it, and each
 * scrape is parsed as Prometheus text and checked against what the client did. A gateway started
 * from the library (httpListen) shows health turning on once an access key exists.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3'
import { spawnGateway, startGateway, addKey, type GatewayProcess } from '../src/index.ts'
import { cli, eventually, useCluster } from './helpers.ts'
import { health, scrape, wentDown, type Scrape } from './scrape.ts'

const REQUESTS = 'stor_gateway_requests_total'
const RECEIVED = 'stor_gateway_received_bytes_total'
const SENT = 'stor_gateway_sent_bytes_total'
const LATENCY = 'stor_gateway_request_duration_seconds'

/** A counter's value, 0 while the series does not exist yet (prom-client shows a labelled series once counted). */
const counted = (s: Scrape, name: string, labels: Record<string, string>): number => s.has(name, labels) ? s.value(name, labels) : 0

describe('S3 gateway: /metrics and /health on --http-listen', function () {
  const net = useCluster('gateway-metrics', { vendors: 2, devicesPerVendor: 1, deviceSize: '64MiB' }, ['alice', 'bob'])
  let gw: GatewayProcess | undefined
  let s3: S3Client | undefined
  let first: Scrape
  const aliceDir = (): string => join(net.dir, 'alice')
  const metricsUrl = (): string => gw?.http as string

  before(async function () {
    const key = await addKey(net.user('alice'), 'metrics')
    gw = await spawnGateway(aliceDir(), net.cluster.bootstrap, ['--http-listen', '0', '--chunk-size', '256KiB', '--replicas', '2'])
    s3 = new S3Client({ endpoint: gw.url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.accessKey, secretAccessKey: key.secret }, maxAttempts: 1 })
  })
  after(async function () {
    s3?.destroy()
    await gw?.kill()
  })

  it('prints its metrics address, apart from the S3 port, on 127.0.0.1; is healthy; names carry the prefix and units', async function () {
    assert.match(metricsUrl(), /^http:\/\/127\.0\.0\.1:\d+$/, 'a bare port binds to 127.0.0.1')
    assert.notEqual(new URL(metricsUrl()).port, new URL(gw?.url as string).port)
    // each answer asks the FAT, within 5 s: on a loaded machine the first may come too late
    let h = { status: 0, ok: false, reason: '' }
    await eventually('the gateway is healthy', async () => { h = await health(metricsUrl()); return h.status === 200 }, 60_000)
    assert.match(h.reason, /^FAT replica \w+ orders writes; 1 access key$/)
    const plain = await fetch(`${metricsUrl()}/health`)
    assert.equal(plain.status, 200)
    assert.match(await plain.text(), /^ok: FAT replica /)
    // the S3 port has no /metrics: there it names a bucket, and an unsigned request is refused
    assert.equal((await fetch(`${gw?.url as string}/metrics`)).status, 403)
    await eventually('the refused request is counted under what it asked for', async () => counted(await scrape(metricsUrl()), REQUESTS, { operation: 'ListObjects', status: '403' }) === 1)
    first = await scrape(metricsUrl())
    assert.ok(first.value('stor_process_resident_memory_bytes') > 0, 'the process metrics carry the prefix too')
    for (const name of first.nan) assert.match(name, /^stor_nodejs_eventloop_lag_/, 'only the event-loop lag (with no samples yet) may be NaN')
    for (const name of first.names()) assert.ok(name.startsWith('stor_'), `${name} has the stor_ prefix`)
    for (const [name, m] of Object.entries(first.metrics)) if (m.type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`)
    for (const [name, m] of Object.entries(first.metrics)) if (m.type === 'histogram') assert.ok(name.endsWith('_seconds'), `histogram ${name} is in seconds`)
  })

  it('counts N PutObject as N with status 200 and their bytes in; GetObject\'s bytes out; a missing key as 404; counters never go down', async function () {
    const client = s3 as S3Client
    const before = await scrape(metricsUrl())
    await client.send(new CreateBucketCommand({ Bucket: 'watched' }))
    // one of them streamed (the SDK sends it aws-chunked): the payload is counted, not the framing
    const bodies = [randomBytes(100_000), randomBytes(600_000), randomBytes(70_000)]
    await client.send(new PutObjectCommand({ Bucket: 'watched', Key: 'a', Body: bodies[0] }))
    await client.send(new PutObjectCommand({ Bucket: 'watched', Key: 'b', Body: bodies[1] }))
    await client.send(new PutObjectCommand({ Bucket: 'watched', Key: 'c', Body: Readable.from([bodies[2].subarray(0, 30_000), bodies[2].subarray(30_000)]), ContentLength: bodies[2].byteLength }))
    const put = bodies.reduce((n, b) => n + b.byteLength, 0)
    for (const [i, k] of ['a', 'b', 'c'].entries()) {
      const got = await client.send(new GetObjectCommand({ Bucket: 'watched', Key: k }))
      assert.deepEqual(Buffer.from(await (got.Body as any).transformToByteArray()), bodies[i])
    }
    assert.equal((await client.send(new HeadObjectCommand({ Bucket: 'watched', Key: 'b' }))).ContentLength, bodies[1].byteLength)
    const delta = (s: Scrape, name: string, labels: Record<string, string>): number => counted(s, name, labels) - counted(before, name, labels)
    let s = before
    await eventually('the gateway counted every request answered', async () => {
      s = await scrape(metricsUrl())
      return delta(s, REQUESTS, { operation: 'HeadObject', status: '200' }) === 1 && delta(s, REQUESTS, { operation: 'GetObject', status: '200' }) === 3 &&
        delta(s, REQUESTS, { operation: 'PutObject', status: '200' }) === 3 && delta(s, REQUESTS, { operation: 'CreateBucket', status: '200' }) === 1
    })
    assert.equal(s.sum(REQUESTS) - before.sum(REQUESTS), 8, 'nothing else was counted')
    assert.equal(delta(s, RECEIVED, { operation: 'PutObject' }), put, 'bytes in: every byte put')
    assert.equal(delta(s, SENT, { operation: 'GetObject' }), put, 'bytes out: every byte got back')
    assert.equal(delta(s, SENT, { operation: 'PutObject' }) + delta(s, RECEIVED, { operation: 'GetObject' }), 0)
    assert.equal(delta(s, SENT, { operation: 'HeadObject' }), 0, 'a HEAD sends no body')
    assert.equal(s.count(LATENCY, { operation: 'PutObject' }) - before.count(LATENCY, { operation: 'PutObject' }), 3)
    assert.equal(s.count(LATENCY, { operation: 'GetObject' }) - before.count(LATENCY, { operation: 'GetObject' }), 3)
    assert.ok(s.metrics[LATENCY].data.some((d: any) => d.labels.operation === 'PutObject' && d.sum > 0), 'the puts took time')

    const missing = await client.send(new GetObjectCommand({ Bucket: 'watched', Key: 'nothere' })).then(() => undefined, (err: any) => err)
    assert.equal(missing?.$metadata?.httpStatusCode, 404)
    let after = s
    await eventually('the 404 is counted', async () => {
      after = await scrape(metricsUrl())
      return delta(after, REQUESTS, { operation: 'GetObject', status: '404' }) === 1
    })
    assert.equal(delta(after, REQUESTS, { operation: 'GetObject', status: '200' }), 3, 'the 404 is not counted as a success')
    assert.ok(delta(after, SENT, { operation: 'GetObject' }) > put, 'the error document is sent bytes too')
    assert.deepEqual(wentDown(first, before), [], 'no counter went down')
    assert.deepEqual(wentDown(before, after), [], 'no counter went down')
  })

  it('a bad --http-listen, or a port in use (for metrics or for S3), is refused with one clear line', async function () {
    const run = async (httpListen: string, listen = '127.0.0.1:0'): Promise<{ code: number | null, stderr: string }> =>
      await cli(['gateway', '--data-dir', aliceDir(), '--bootstrap', net.cluster.bootstrap, '--listen', listen, '--http-listen', httpListen])
    const bad = await run('localhost:http')
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /^stordaemon: --http-listen: "localhost:http" is not an address; write PORT, HOST:PORT/)
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr)
    const port = new URL(metricsUrl()).port
    const taken = await run(`127.0.0.1:${port}`)
    assert.equal(taken.code, 1)
    assert.match(taken.stderr, new RegExp(`^stordaemon: --http-listen: 127\\.0\\.0\\.1:${port} is in use by another program`))
    assert.equal(taken.stderr.trim().split('\n').length, 1, taken.stderr)
    const s3Port = new URL(gw?.url as string).port
    const s3Taken = await run('0', `127.0.0.1:${s3Port}`)
    assert.equal(s3Taken.code, 1)
    assert.match(s3Taken.stderr, new RegExp(`^stordaemon: --listen: 127\\.0\\.0\\.1:${s3Port} is in use by another program`))
    assert.equal(s3Taken.stderr.trim().split('\n').length, 1, s3Taken.stderr)
  })

  it('from the library (httpListen): a gateway without access keys is unhealthy, and healthy once one is added', async function () {
    const bob = net.user('bob')
    const lib = await startGateway({ user: bob, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' })
    try {
      assert.match(lib.http as string, /^http:\/\/127\.0\.0\.1:\d+$/)
      // (on a loaded machine the first answer may be that the FAT did not answer within 5 s)
      let h = { status: 0, ok: true, reason: '' }
      await eventually('unhealthy for want of a key', async () => { h = await health(lib.http as string); return !/within 5 s/.test(h.reason) }, 60_000)
      assert.equal(h.status, 503)
      assert.match(h.reason, /^no access keys: .*stordaemon gateway key add/)
      await addKey(bob, 'later')
      await eventually('healthy once a key exists', async () => (await health(lib.http as string)).status === 200, 60_000)
      // a bad address is refused before anything listens
      await assert.rejects(startGateway({ user: bob, listen: '127.0.0.1:0', httpListen: 'nine' }), /--http-listen: "nine" is not an address/)
    } finally {
      await lib.close()
    }
    await assert.rejects(fetch(`${lib.http as string}/health`), 'closing the gateway closes its metrics listener')
  })

  it('with the FAT gone, /health answers 503 with the reason and /metrics still answers', async function () {
    await net.cluster.fat.kill()
    let h = { status: 0, ok: true, reason: '' }
    await eventually('the gateway says the FAT does not answer', async () => {
      h = await health(metricsUrl())
      return h.status === 503
    }, 60_000)
    assert.equal(h.ok, false)
    assert.match(h.reason, /^the FAT did not answer/)
    const s = await scrape(metricsUrl())
    assert.deepEqual(wentDown(first, s), [], 'no counter went down')
  })
})
