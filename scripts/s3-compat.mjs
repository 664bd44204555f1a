// npm run s3-compat: runs the unmodified ceph/s3-tests suite (S3_TESTS, default ../shared/s3-tests)
// against a stordaemon S3 gateway on a local network this script starts (one FAT, three vendors,
// under a temporary folder), and prints passed / failed / skipped. Only the tests of
// s3tests/functional/test_s3.py that use the operations the gateway serves are run: see
// scripts/s3-compat-select.py and docs/gateway.md. S3_COMPAT_K=expr narrows them further (pytest -k).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startCluster, spawnGateway } from '../dist/src/index.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const candidates = process.env.S3_TESTS != null ? [resolve(process.env.S3_TESTS)] : [resolve(root, '../shared/s3-tests'), resolve(root, '../../shared/s3-tests')]
const suite = candidates.find(d => existsSync(join(d, 's3tests/functional/test_s3.py')))
if (suite == null) {
  process.stderr.write(`s3-compat: no s3-tests suite at ${candidates.join(' or ')}; set S3_TESTS to its folder (a copy of github.com/ceph/s3-tests)\n`)
  process.exit(1)
}
// the Debian packages go with the system's Python, which a pyenv or venv on PATH may hide
const python = process.env.S3_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3')
try {
  execFileSync(python, ['-c', 'import pytest, boto3, munch, isodate, httplib2, lxml, yaml, requests'], { stdio: 'ignore' })
} catch {
  process.stderr.write('s3-compat: the suite needs Python 3 with pytest, boto3, munch, isodate, httplib2, lxml, yaml and requests; on Debian: apt-get install python3-pytest python3-boto3 python3-botocore python3-munch python3-gevent python3-isodate python3-tz python3-httplib2 python3-lxml python3-yaml python3-requests\n')
  process.exit(1)
}

const dir = await mkdtemp(join(tmpdir(), 'stor-s3-compat-'))
const bin = join(root, 'dist', 'stordaemon.mjs')
let cluster, gateway
const stop = async () => {
  await gateway?.kill()
  await cluster?.stop()
  await rm(dir, { recursive: true, force: true })
}
process.once('SIGINT', () => { void stop().then(() => process.exit(130)) })
try {
  cluster = await startCluster({ dir: join(dir, 'net'), vendors: 3, deviceSize: '2GiB' })
  const userDir = join(dir, 'user')
  const key = name => JSON.parse(execFileSync(process.execPath, [bin, 'gateway', 'key', 'add', name, '--json', '--data-dir', userDir, '--bootstrap', cluster.bootstrap]).toString())
  // the suite's other users are keys of the same identity: the tests that need them to be
  // other users are not selected, but its set-up and tear-down list their buckets too
  const [main, alt, tenant] = [key('s3-tests main'), key('s3-tests alt'), key('s3-tests tenant')]
  gateway = await spawnGateway(userDir, cluster.bootstrap, ['--replicas', '1'])
  const { hostname, port } = new URL(gateway.url)
  const user = (section, k, id) => `[${section}]\ndisplay_name = ${id}\nuser_id = ${id}\nemail = ${id}@example.com\naccess_key = ${k.accessKey}\nsecret_key = ${k.secret}\n`
  const conf = join(dir, 's3tests.conf')
  await writeFile(conf, [
    `[DEFAULT]\nhost = ${hostname}\nport = ${port}\nis_secure = False\nssl_verify = False\n`,
    '[fixtures]\nbucket prefix = s3compat-{random}-\n',
    user('s3 main', main, gateway.peer),
    user('s3 alt', alt, 'alt'),
    user('s3 tenant', tenant, 'tenant') + 'tenant = tenant\n',
    // IAM is not served: the suite reads these sections at start, and no selected test uses them
    ...['iam', 'iam root', 'iam alt root'].map(s => user(s, { accessKey: 'unused', secret: 'unused' }, 'unused'))
  ].join('\n'))
  const selected = execFileSync(python, [join(root, 'scripts', 's3-compat-select.py'), 's3tests/functional/test_s3.py'], { cwd: suite }).toString().trim().split('\n')
  process.stdout.write(`s3-compat: ${selected.length} tests of s3tests/functional/test_s3.py selected; gateway ${gateway.url}\n`)
  const log = join(root, 's3-compat.log')
  const args = ['-m', 'pytest', '-q', '-rfE', '-p', 'no:cacheprovider', '--tb=line', ...(process.env.S3_COMPAT_K != null ? ['-k', process.env.S3_COMPAT_K] : []), ...selected]
  const out = await new Promise((resolve, reject) => {
    const child = spawn(python, args, { cwd: suite, env: { ...process.env, S3TEST_CONF: conf }, stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    child.stdout.on('data', d => { text += d; if (process.stdout.isTTY) process.stderr.write('.') })
    child.stderr.on('data', d => { text += d })
    child.on('error', reject)
    child.on('exit', () => { resolve(text) })
  })
  await writeFile(log, out)
  const count = word => Number(new RegExp(`(\\d+) ${word}`).exec(out.split('\n').filter(l => /passed|failed|error/.test(l)).pop() ?? '')?.[1] ?? 0)
  const result = { selected: selected.length, passed: count('passed'), failed: count('failed'), errors: count('error'), skipped: count('skipped') }
  process.stdout.write(`${process.stdout.isTTY ? '\n' : ''}passed ${result.passed}  failed ${result.failed}  errors ${result.errors}  skipped ${result.skipped}  (of ${result.selected}; the full pytest output is in ${log})\n`)
} finally {
  await stop()
}
