import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { InvalidArgumentError } from '../../errors.ts'
import { KEY_FILE, hasKey, loadOrCreateKey } from '../../node/identity.ts'
import { Keystore, MASTER_FILE } from './keystore.ts'

const FORMAT = 'stordaemon-keys/1'

interface KeyFile { format: string, peerId: string, peerKey: string, masterKey: string }

/** Writes the user's identity and master key to `file` (mode 0600): all it takes to reach its files. */
export async function exportKeys (dataDir: string, file: string): Promise<{ peerId: string }> {
  if (!hasKey(dataDir)) throw new InvalidArgumentError(`--data-dir: ${dataDir} holds no user identity to export (${KEY_FILE} is missing)`)
  const key = await loadOrCreateKey(dataDir)
  await Keystore.open(dataDir, false)
  const peerKey = await readFile(join(dataDir, KEY_FILE))
  const masterKey = await readFile(join(dataDir, MASTER_FILE))
  const peerId = peerIdFromPrivateKey(key).toString()
  const body: KeyFile = { format: FORMAT, peerId, peerKey: peerKey.toString('base64'), masterKey: masterKey.toString('hex') }
  try {
    await writeFile(file, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
  } catch (err: any) {
    throw new InvalidArgumentError(`FILE: cannot write ${file} (${err.code === 'EEXIST' ? 'it exists already; choose a new name' : err.code ?? err.message})`)
  }
  return { peerId }
}

/** Restores an exported identity into `dataDir`; refuses to overwrite a different identity. */
export async function importKeys (dataDir: string, file: string): Promise<{ peerId: string }> {
  let parsed: KeyFile
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'))
  } catch (err: any) {
    throw new InvalidArgumentError(`FILE: ${file} is not a key file made by \`stordaemon key export\` (${err.code ?? 'not JSON'})`)
  }
  if (parsed?.format !== FORMAT || typeof parsed.peerKey !== 'string' || typeof parsed.masterKey !== 'string' || !/^[0-9a-f]{64}$/.test(parsed.masterKey)) {
    throw new InvalidArgumentError(`FILE: ${file} is not a ${FORMAT} key file`)
  }
  const peerKey = Buffer.from(parsed.peerKey, 'base64')
  let peerId: string
  try {
    peerId = peerIdFromPrivateKey(privateKeyFromProtobuf(peerKey)).toString()
  } catch {
    throw new InvalidArgumentError(`FILE: ${file} holds a damaged identity key`)
  }
  const existing = await readFile(join(dataDir, KEY_FILE)).catch(() => undefined)
  if (existing != null) {
    const current = peerIdFromPrivateKey(privateKeyFromProtobuf(existing)).toString()
    if (current !== peerId) throw new InvalidArgumentError(`--data-dir: ${dataDir} already holds identity ${current}; import into an empty data directory`)
    const master = await readFile(join(dataDir, MASTER_FILE)).catch(() => undefined)
    if (master != null && master.toString('hex') !== parsed.masterKey) throw new InvalidArgumentError(`--data-dir: ${dataDir} holds another master key for this identity; import into an empty data directory`)
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  await writeFile(join(dataDir, KEY_FILE), peerKey, { mode: 0o600 })
  await writeFile(join(dataDir, MASTER_FILE), Buffer.from(parsed.masterKey, 'hex'), { mode: 0o600 })
  return { peerId }
}
