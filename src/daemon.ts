import { join } from 'node:path'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidArgumentError } from './errors.ts'
import { logger } from './logger.ts'
import { createNode, fullAddrs, type StorNode } from './node/index.ts'
import { hasKey, loadOrCreateKey } from './node/identity.ts'
import { openDb, type DB } from './store/db.ts'
import { Devices, type DeviceSpec } from './store/devices.ts'
import { createFat } from './roles/fat/index.ts'
import { createVendor } from './roles/vendor/index.ts'
import { createUser, type User } from './roles/user/index.ts'

export type Role = 'fat' | 'vendor'

export interface DaemonOptions {
  role: Role
  dataDir: string
  listen: string[]
  bootstrap: string[]
  devices?: DeviceSpec[]
  leaseMs?: number
  heartbeatMs?: number
  /** fat: replicas must present it to join the replica set (keep it secret); unset lets any FAT join. */
  joinSecret?: string
  onWarning?: (message: string) => void
}

export interface Daemon {
  readonly peerId: string
  readonly addrs: string[]
  readonly node: StorNode
  stop: () => Promise<void>
}

/** Parses --bootstrap values: full multiaddrs that name the peer with /p2p/. */
export function parseBootstrap (values: string[]): Multiaddr[] {
  return values.map(v => {
    let ma: Multiaddr
    try {
      ma = multiaddr(v)
    } catch (err: any) {
      throw new InvalidArgumentError(`--bootstrap: "${v}" is not a multiaddr (${err.message}); copy one a FAT server printed, like /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo...`)
    }
    if (!ma.getComponents().some(c => c.name === 'p2p')) {
      throw new InvalidArgumentError(`--bootstrap: "${v}" does not end in /p2p/<peer id>; copy the whole address a FAT server printed`)
    }
    return ma
  })
}

function parseListen (values: string[]): string[] {
  for (const v of values) {
    try { multiaddr(v) } catch (err: any) {
      throw new InvalidArgumentError(`--listen: "${v}" is not a multiaddr (${err.message}); write e.g. /ip4/127.0.0.1/tcp/0`)
    }
  }
  return values
}

async function openNode (dataDir: string, listen: string[], server: boolean): Promise<{ node: StorNode, key: Awaited<ReturnType<typeof loadOrCreateKey>> }> {
  const key = await loadOrCreateKey(dataDir)
  const node = await createNode({ privateKey: key, listen, dhtServer: server })
  return { node, key }
}

/** Starts a FAT server or a vendor: its identity, its tables and its libp2p node. */
export async function startDaemon (opts: DaemonOptions): Promise<Daemon> {
  const bootstrap = parseBootstrap(opts.bootstrap)
  const listen = parseListen(opts.listen.length > 0 ? opts.listen : ['/ip4/0.0.0.0/tcp/0'])
  if (opts.heartbeatMs != null && (opts.heartbeatMs < 100 || opts.heartbeatMs > 3_600_000)) throw new InvalidArgumentError('--heartbeat: must be from 100ms to 1h')
  if (opts.leaseMs != null && opts.leaseMs < 1000) throw new InvalidArgumentError('--lease: must be at least 1s')
  if (opts.role === 'vendor' && bootstrap.length === 0) throw new InvalidArgumentError('--bootstrap: a vendor needs the multiaddr of a FAT server')
  const log = logger(`stor:${opts.role}`)
  const devices = opts.role === 'vendor' ? await Devices.open(opts.devices ?? [], log) : undefined
  const newIdentity = !hasKey(opts.dataDir)
  const db: DB = await openDb(join(opts.dataDir, 'db'))
  let node: StorNode | undefined
  try {
    const opened = await openNode(opts.dataDir, listen, true)
    node = opened.node
    const heartbeatMs = opts.heartbeatMs ?? 2000
    const role = opts.role === 'fat'
      ? await createFat({ node, db, key: opened.key, log, leaseMs: opts.leaseMs ?? 600_000, heartbeatMs, join: bootstrap, joinSecret: opts.joinSecret, mayFound: newIdentity })
      : await createVendor({ node, db, key: opened.key, log, devices: devices as Devices, fats: bootstrap, onWarning: opts.onWarning })
    for (const b of bootstrap) void node.dial(b).catch(err => { log('bootstrap %s: %s', b.toString(), err.message) })
    if ('announced' in role) await role.announced
    const n = node
    return {
      peerId: n.peerId.toString(),
      addrs: fullAddrs(n),
      node: n,
      async stop () {
        await role.stop()
        await n.stop()
        await db.close()
      }
    }
  } catch (err) {
    await node?.stop()
    await db.close()
    throw err
  }
}

export interface ClientOptions {
  dataDir: string
  bootstrap: string[]
}

export interface Client extends User {
  close: () => Promise<void>
}

/** A user identity (from its data dir) connected to a network through its FAT servers. */
export async function openClient (opts: ClientOptions): Promise<Client> {
  const fats = parseBootstrap(opts.bootstrap)
  if (fats.length === 0) throw new InvalidArgumentError('--bootstrap: give the multiaddr of a FAT server')
  const newIdentity = !hasKey(opts.dataDir)
  const { node, key } = await openNode(opts.dataDir, [], false)
  try {
    const user = await createUser({ node, key, dataDir: opts.dataDir, fats, newIdentity, log: logger('stor:user') })
    return { ...user, close: async () => { await node.stop() } }
  } catch (err) {
    await node.stop()
    throw err
  }
}
