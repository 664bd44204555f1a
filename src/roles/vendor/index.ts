import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { AccessDeniedError, IntegrityError, InvalidArgumentError, NotFoundError, UnreachableError } from '../../errors.ts'
import { locatePeer } from '../../protocol/locate.ts'
import type { Logger } from '../../logger.ts'
import { FAT_PROTOCOL, FETCH_PROTOCOL, MAX_FAT_MESSAGE, MAX_VENDOR_MESSAGE, ORDER_PROTOCOL, STORE_PROTOCOL, MAX_DATA_BUFFER, ECHO_PROTOCOL, MiB, CHUNK_STREAM_REUSE } from '../../protocol/ids.ts'
import * as M from '../../protocol/messages.ts'
import { call, serve, type Served, type Target } from '../../protocol/rpc.ts'
import { canonical, sign, verify } from '../../protocol/sign.ts'
import { ReplayGuard } from '../../protocol/auth.ts'
import { encode } from '../../protocol/codec.ts'
import { closeChunkStreams, copyChunk, relayChunk } from '../../protocol/chunk-transfer.ts'
import { fullAddrs, type StorNode } from '../../node/index.ts'
import type { DB } from '../../store/db.ts'
import type { DeviceInfo, Devices } from '../../store/devices.ts'
import { sha256 } from '../../store/devices.ts'
import { Records } from '../../store/db.ts'
import { ChunkStore } from './chunks.ts'
import { startScrubber, type ScrubMetrics } from './scrub.ts'
import { Transfers } from './transfers.ts'
import { createBufferPool } from '../../buffer-pool.ts'

/** The high-water mark: a share of the healthy capacity, or a number of bytes. */
export type HighWater = { fraction: number } | { bytes: number }

export const DEFAULT_HIGH_WATER: HighWater = { fraction: 0.9 }
/** Scrub defaults: a full pass a day, reading at most 8 MiB/s. */
export const DEFAULT_SCRUB_RATE = 8 * 1024 * 1024
export const DEFAULT_SCRUB_INTERVAL_MS = 24 * 3_600_000
/** Grants whose signatures a vendor remembers as checked (then it forgets them all and starts again). */
const MAX_VERIFIED_GRANTS = 4096
/** Damaged chunks one heartbeat reports. */
const LOST_PER_HEARTBEAT = 1000
import { serveEcho } from '../../protocol/echo.ts'

export interface VendorOptions {
  node: StorNode
  db: DB
  key: PrivateKey
  devices: Devices
  /** The FAT replicas of this network; only their grants and orders count. */
  fats: Multiaddr[]
  log: Logger
  /** Test only: answers to echo, fetch and store wait this long, to play a slow or distant vendor. */
  testDelayMs?: number
  /** Called when the vendor cannot reach any FAT (the daemon prints it). */
  onWarning?: (message: string) => void
  /** Above this the vendor asks the FAT to move chunks elsewhere (default 90% of its capacity). */
  highWater?: HighWater
  /** Background scrubbing: bytes per second and the time between full passes. */
  scrubRate?: number
  scrubIntervalMs?: number
  /** Told of requests, chunk bytes in and out, and scrubbing, for metrics. */
  metrics?: VendorMetrics
}

/** What a vendor reports as it works (the daemon counts it); each call is cheap and never throws. */
export interface VendorMetrics {
  served: Served
  /** a chunk received and stored (`store`: from a user or the previous hop; `copy`: a transfer's copy) */
  received: (kind: 'store' | 'copy', bytes: number, seconds: number) => void
  /** chunk bytes sent (`relay`: to the next hop; `fetch`: to a user; `copy`: to a transfer's target) */
  sent: (kind: 'relay' | 'fetch' | 'copy', bytes: number, seconds: number) => void
  scrub: ScrubMetrics
}

/** Whether the vendor serves: every device healthy, and a FAT replica answered recently. */
export interface Health { ok: boolean, reason: string }

/** The vendor's state for an operator, read at scrape time. */
export interface VendorOverview {
  devices: DeviceInfo[]
  chunks: number
  damaged: number
  /** stores and copies in progress */
  inflight: number
  /** share of the stored bytes the scrub pass under way has checked */
  scrubProgress: number
  /** when a FAT replica last answered a heartbeat (0: never) */
  lastHeard: number
}

/** Pieces a copied chunk is cut into (the original header's count is not known to the copy's target). */
const COPY_PIECES = 2

export interface Vendor {
  readonly store: ChunkStore
  /** Resolves after the first successful announcement. */
  readonly announced: Promise<void>
  health: () => Health
  overview: () => VendorOverview
  heartbeat: () => Promise<void>
  stop: () => Promise<void>
}

/** Offers its devices: takes chunks within FAT grants, forwards replicas, serves and erases chunks. */
export async function createVendor (opts: VendorOptions): Promise<Vendor> {
  const { node, log, key, devices } = opts
  const self = node.peerId.toString()
  /**
   * The FAT replicas of this network: pinned at start by --bootstrap, then the replica set those
   * replicas report. Only their grants and orders count.
   */
  const fats = new Map<string, Target>()
  // by peer id, so a replica that moved is reached wherever the node has learned it is now
  for (const a of opts.fats) {
    const id = a.getComponents().find(c => c.name === 'p2p')?.value
    if (id != null) fats.set(id, { peer: id, addrs: [a.toString()] })
  }
  /** Every replica met, kept across restarts: one that moved is looked up by its peer id. */
  const knownFats = new Records<string[]>(opts.db, 'fat-replica')
  for await (const [peer, addrs] of knownFats.entries()) if (!fats.has(peer)) fats.set(peer, { peer, addrs })
  const locating = new Set<string>()
  /** Looks up a replica that did not answer (another replica's member list, then the DHT), in the background. */
  const relocate = (peer: string): void => {
    if (locating.has(peer)) return
    locating.add(peer)
    const others = [...fats.entries()].filter(([p]) => p !== peer).map(([, t]) => t)
    const had = fats.get(peer)
    locatePeer(node, peer, { replicas: others, stale: had != null && 'addrs' in had ? had.addrs : [], log }).then(async addrs => {
      if (addrs == null) return
      fats.set(peer, { peer, addrs })
      await opts.db.batch([knownFats.put(peer, addrs)])
    }).catch(err => { log('locating replica %s: %s', peer, err.message) }).finally(() => locating.delete(peer))
  }
  const fatIds = { has: (peer: string): boolean => fats.has(peer) }
  const store = new ChunkStore(opts.db, devices)
  // room for the chunks of a few uploads at once, kept between them; page-aligned, so pieces go
  // to disk straight from them (O_DIRECT)
  const buffers = createBufferPool(64 * MiB, { aligned: true })
  const doneOrders = new Records<number>(opts.db, 'order-done')
  await store.load()
  const adopted = devices.adopted()
  if (adopted.length > 0) {
    const a = await store.adopt(adopted)
    log('adopted %s: %d chunks re-registered, %d incomplete', adopted.join(', '), a.chunks, a.incomplete)
    opts.onWarning?.(`adopted ${adopted.join(', ')}: ${a.chunks} chunks re-registered and verified${a.incomplete > 0 ? `, ${a.incomplete} incomplete (their pieces go to quarantine)` : ''}`)
  }
  devices.checkQuotas()
  // an empty table over devices full of pieces is a new --data-dir on old disks: quarantining
  // every piece would take the data away from the network, so ask for an adoption instead
  if (store.size() === 0) {
    const pieces = (await devices.files()).filter(f => !f.name.endsWith('.tmp'))
    if (pieces.length > 0) {
      const where = [...new Set(pieces.map(f => f.device))]
      throw new InvalidArgumentError(`--device ${where[0]}: holds ${pieces.length} pieces${where.length > 1 ? ` (with ${where.slice(1).join(', ')})` : ''}, but this vendor's table is empty (a new --data-dir on old disks?); re-register them with --adopt-device ${where[0]}, or move them away`)
    }
  }
  const checked = await store.check()
  log('vendor %s: %d chunks on %d devices; %d damaged, %d unknown files quarantined', self, checked.chunks, devices.info().length, checked.damaged, checked.quarantined.length)
  if (checked.quarantined.length > 0) {
    opts.onWarning?.(`${checked.quarantined.length} files no chunk names were moved to quarantine (not deleted), e.g. ${checked.quarantined[0]}; \`stordaemon quarantine DEVICE\` lists them, and with --purge removes them`)
  }
  devices.onFail = path => {
    store.deviceFailed(path).then(n => { log.error('device %s failed: %d chunks moved to other devices here, %d to be restored from other vendors', path, n.moved, n.damaged) }, err => { log.error('device %s: %s', path, err.message) })
  }
  devices.onReturn = path => {
    store.deviceReturned(path).then(r => { log('device %s is back: %d chunks whole again, %d files no chunk names quarantined', path, r.restored, r.quarantined.length) }, err => { log.error('device %s: %s', path, err.message) })
  }
  let inflight = 0
  const highWater = opts.highWater ?? DEFAULT_HIGH_WATER
  const limit = (): number => 'bytes' in highWater ? highWater.bytes : Math.floor(highWater.fraction * devices.healthyCapacity())
  const delayMs = opts.testDelayMs ?? 0
  const delay = async (): Promise<void> => { if (delayMs > 0) await new Promise(resolve => setTimeout(resolve, delayMs)) }

  // every chunk of an allocation comes with the same grant: its signature is checked once (the
  // whole signed record is the key, so a changed field is checked again)
  const verifiedGrants = new Set<string>()
  const checkGrant = async (grant: M.Grant, owner: string, allocationId: string): Promise<void> => {
    if (!fatIds.has(grant.fat)) throw new AccessDeniedError(`the grant is signed by ${grant.fat}, which is not a FAT server of this network`)
    const signed = canonical(grant)
    if (!verifiedGrants.has(signed)) {
      await verify(grant.fat, 'grant', grant)
      if (verifiedGrants.size >= MAX_VERIFIED_GRANTS) verifiedGrants.clear()
      verifiedGrants.add(signed)
    }
    if (grant.vendor !== self) throw new AccessDeniedError('the grant is for another vendor')
    if (grant.owner !== owner || grant.allocationId !== allocationId) throw new AccessDeniedError('the grant is for another owner or allocation')
    if (grant.expires < Date.now()) throw new AccessDeniedError('the grant has expired; ask the FAT for a new allocation')
  }

  const applyOrder = async (order: M.Order): Promise<void> => {
    if (!fatIds.has(order.fat)) throw new AccessDeniedError(`the order is signed by ${order.fat}, which is not a FAT server of this network`)
    await verify(order.fat, 'order', order)
    if (order.vendor !== self) throw new AccessDeniedError('the order is for another vendor')
    if (await doneOrders.get(order.id) != null) return
    const erased = order.kind === 'erase'
      ? await store.eraseFile(order.scope)
      : order.kind === 'erase-chunks'
        ? await store.eraseChunks(order.scope, order.chunks ?? [])
        : await store.settle(order.scope, new Set(order.keep))
    await opts.db.batch([doneOrders.put(order.id, Date.now())])
    log('order %s: %s %s, %d chunks erased', order.id, order.kind, order.scope, erased)
  }

  await serve(node, STORE_PROTOCOL, { checks: { store: M.Store }, maxMessage: MAX_VENDOR_MESSAGE, maxBuffer: MAX_DATA_BUFFER, maxInboundStreams: 64, timeoutMs: 300_000, log, reuse: CHUNK_STREAM_REUSE, onServed: opts.metrics?.served }, async ({ msg, remotePeer, fs, signal }) => {
    const { header, hop } = msg
    const me = header.route[hop]
    if (me == null || me.vendor !== self) throw new AccessDeniedError(`hop ${hop} of the route is not this vendor`)
    const sender = hop === 0 ? header.owner : header.route[hop - 1].vendor
    if (remotePeer !== sender) throw new AccessDeniedError(`hop ${hop} must come from ${sender}`)
    await verify(header.owner, 'header', header)
    await checkGrant(me.grant, header.owner, header.allocationId)
    const started = performance.now()
    inflight++
    try {
      // the sender waits for a go-ahead, so refused chunks cost it no bytes
      await delay()
      // the next hop, if any, gets the bytes as they arrive, and checks them itself
      const next = header.route[hop + 1]
      const relay = next != null ? relayChunk(node, next, header, hop + 1, signal) : undefined
      const downstream = relay == null
        ? Promise.resolve({ receipts: [], failed: [] })
        : relay.reply.catch(err => ({ receipts: [], failed: [{ vendor: (next as M.Hop).vendor, reason: String(err.message).slice(0, 500) }] }))
      // the next hop's stream holds views of the buffer until it has them all: after a failure
      // there, or here, the buffer is left to the collector instead of going back to the pool
      const bytes = buffers.take(header.size)
      try {
        await fs.write(encode({ t: 'ok' }), { signal })
        await fs.readData(header.size, { signal, onData: relay?.push, into: bytes })
        if (sha256(bytes) !== header.chunkId) throw new IntegrityError(`chunk bytes do not match chunk id ${header.chunkId}`)
      } catch (err: any) {
        relay?.abort(err)
        throw err
      }
      const [, passed] = await Promise.all([store.put(header, bytes, header.pieces, me.grant), downstream])
      if (passed.failed.length === 0) buffers.give(bytes)
      const seconds = (performance.now() - started) / 1000
      opts.metrics?.received('store', header.size, seconds)
      if (next != null && passed.failed.length === 0) opts.metrics?.sent('relay', header.size, seconds)
      const receipt = await sign<M.Receipt>(key, 'receipt', { vendor: self, fileId: header.fileId, chunkId: header.chunkId, size: header.size })
      return { t: 'stored', receipts: [receipt, ...passed.receipts], failed: passed.failed }
    } finally {
      inflight--
    }
  })

  /** A transfer order counts only if a FAT of this network signed it and it has not expired. */
  const checkTransfer = async (t: M.Transfer): Promise<void> => {
    if (!fatIds.has(t.fat)) throw new AccessDeniedError(`the transfer is signed by ${t.fat}, which is not a FAT server of this network`)
    await verify(t.fat, 'transfer', t)
    if (t.expires < Date.now()) throw new AccessDeniedError('the transfer order has expired')
  }

  const transfers = new Transfers({
    log,
    check: async t => {
      await checkTransfer(t)
      if (t.to !== self) throw new AccessDeniedError('the transfer is for another target vendor')
    },
    copy: async t => {
      const have = await store.get(t.fileId, t.chunkId)
      if (have != null && have.damaged == null) return
      const started = performance.now()
      const bytes = await copyChunk(node, t, AbortSignal.timeout(120_000))
      if (sha256(bytes) !== t.chunkId) throw new IntegrityError(`chunk ${t.chunkId} from ${t.from} does not match its hash`)
      await store.putCopy({ owner: t.owner, allocationId: t.id, fileId: t.fileId, chunkId: t.chunkId }, bytes, COPY_PIECES)
      opts.metrics?.received('copy', bytes.byteLength, (performance.now() - started) / 1000)
    },
    confirm: async t => {
      const receipt = await sign<M.Receipt>(key, 'receipt', { vendor: self, fileId: t.fileId, chunkId: t.chunkId, size: t.size })
      // the order's signer, wherever it is now, else any replica
      const fat = fats.get(t.fat) ?? [...fats.values()][0]
      try {
        await call(node, fat, FAT_PROTOCOL, { t: 'copied', transfer: t, receipt }, { ok: M.Ok }, { maxReply: MAX_VENDOR_MESSAGE, signal: AbortSignal.timeout(30_000) })
      } catch (err) {
        // the FAT no longer wants this copy (the file was released, the order expired): drop it
        if (err instanceof NotFoundError) {
          const rec = await store.get(t.fileId, t.chunkId)
          if (rec?.allocationId === t.id) await store.eraseChunks(t.fileId, [t.chunkId])
        }
        throw err
      }
    }
  })

  const guard = new ReplayGuard()
  await serve(node, FETCH_PROTOCOL, { checks: { fetch: M.Fetch, copy: M.Copy }, maxMessage: MAX_VENDOR_MESSAGE, maxInboundStreams: 64, timeoutMs: 300_000, log, reuse: CHUNK_STREAM_REUSE, onServed: opts.metrics?.served }, async ({ msg, remotePeer, fs, signal, delivered }) => {
    const started = performance.now()
    let rec
    if (msg.t === 'copy') {
      // another vendor copies a chunk on a FAT's order: it must be the order's target
      const t = msg.transfer
      await checkTransfer(t)
      if (t.from !== self) throw new AccessDeniedError('the transfer names another source vendor')
      if (t.to !== remotePeer) throw new AccessDeniedError('the transfer is for another target vendor')
      rec = await store.get(t.fileId, t.chunkId)
      if (rec == null) throw new NotFoundError(`this vendor holds no chunk ${t.chunkId} of file ${t.fileId}`)
      if (rec.owner !== t.owner || rec.size !== t.size) throw new AccessDeniedError('the transfer does not match the chunk held here')
    } else {
      await guard.check(msg, remotePeer)
      rec = await store.get(msg.fileId, msg.chunkId)
      if (rec == null) throw new NotFoundError(`this vendor holds no chunk ${msg.chunkId} of file ${msg.fileId}`)
      if (rec.owner !== remotePeer) throw new AccessDeniedError('only the owner may fetch this chunk')
    }
    // the chunk is read into a pooled buffer (page-aligned, so the pieces come straight from disk);
    // once bytes of it are handed to the stream, it goes back only when the fetcher provably has
    // every byte (its next request, or a clean close), so nothing queued below the stream still views it
    const bytes = buffers.take(rec.size)
    let handed = false
    try {
      await store.read(rec, bytes).catch(async err => {
        // a piece that no longer reads back is damage: stop serving it and report it
        if (err.code === 'ENOENT' || err instanceof IntegrityError) {
          await store.markDamaged(rec.fileId, rec.chunkId, `read: ${err.message}`, now => now.stored !== rec.stored)
          throw new IntegrityError(`chunk ${rec.chunkId} is damaged here: ${err.message}`)
        }
        throw err
      })
      await delay()
      await fs.write(encode({ t: 'chunk', size: bytes.byteLength }), { signal })
      handed = true
      void delivered.then(whole => { if (whole) buffers.give(bytes) })
      await fs.writeData(bytes, { signal })
      opts.metrics?.sent(msg.t, bytes.byteLength, (performance.now() - started) / 1000)
    } finally {
      if (!handed) buffers.give(bytes)
    }
    return undefined
  })

  await serveEcho(node, { log, delayMs })

  await serve(node, ORDER_PROTOCOL, { checks: { order: M.OrderMsg, transfer: M.TransferMsg }, maxMessage: MAX_FAT_MESSAGE, maxInboundStreams: 8, timeoutMs: 60_000, log, onServed: opts.metrics?.served }, async ({ msg }) => {
    if (msg.t === 'transfer') await transfers.accept(msg.transfer)
    else await applyOrder(msg.order)
    return { t: 'ok' }
  })

  const scrubber = startScrubber(store, devices, { rate: opts.scrubRate ?? DEFAULT_SCRUB_RATE, intervalMs: opts.scrubIntervalMs ?? DEFAULT_SCRUB_INTERVAL_MS, log, metrics: opts.metrics?.scrub })

  let done: string[] = []
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let heartbeatMs = 2000
  /** When a FAT replica last answered a heartbeat. */
  let lastHeard = 0
  let firstAnnounce: () => void
  const announced = new Promise<void>(resolve => { firstAnnounce = resolve })

  const heartbeat = async (): Promise<void> => {
    await devices.probe()
    const used = devices.used()
    const msg = {
      t: 'announce',
      addrs: fullAddrs(node),
      capacity: devices.capacity(),
      free: devices.free(),
      devices: devices.info().map(d => ({ path: d.path, capacity: d.capacity, free: Math.max(0, d.free), failed: d.failed })),
      inflight: inflight + transfers.running,
      done,
      held: store.size(),
      room: Math.max(0, limit() - used),
      over: Math.max(0, used - limit()),
      lost: store.damaged(LOST_PER_HEARTBEAT),
      restore: store.restorable(LOST_PER_HEARTBEAT)
    }
    const errors: string[] = []
    const applied: string[] = []
    let reached = false
    // every replica at once: one slow or dead replica must not make this vendor look silent to the others
    await Promise.all([...fats.values()].map(async fat => {
      try {
        const reply = await call(node, fat, FAT_PROTOCOL, msg, { announced: M.Announced }, { maxReply: MAX_FAT_MESSAGE, signal: AbortSignal.timeout(Math.max(1000, heartbeatMs)) })
        reached = true
        lastHeard = Date.now()
        for (const r of reply.fats) {
          const had = fats.get(r.peer)
          if (had == null || ('addrs' in had && had.addrs.join() !== r.addrs.join())) {
            fats.set(r.peer, { peer: r.peer, addrs: r.addrs })
            await opts.db.batch([knownFats.put(r.peer, r.addrs)])
          }
        }
        heartbeatMs = reply.heartbeatMs
        for (const order of reply.orders) {
          try {
            await applyOrder(order)
            applied.push(order.id)
          } catch (err: any) {
            log.error('order %s refused: %s', order.id, err.message)
          }
        }
        for (const t of reply.transfers) await transfers.accept(t).catch(err => { log.error('transfer %s refused: %s', t.id, err.message) })
      } catch (err: any) {
        errors.push(err.message)
        const peer = 'peer' in fat ? fat.peer : undefined
        if (err instanceof UnreachableError && peer != null) relocate(peer)
      }
    }))
    if (reached) {
      done = applied
      firstAnnounce()
    }
    else opts.onWarning?.(`no FAT server answered: ${errors.join('; ')}`)
  }

  /** Beats keep their pace from start to start, so a slow replica does not stretch the period. */
  const loop = (): void => {
    if (stopped) return
    const started = Date.now()
    heartbeat().catch(err => { log.error('heartbeat: %s', err.message) }).finally(() => {
      if (!stopped) timer = setTimeout(loop, Math.max(0, heartbeatMs - (Date.now() - started)))
    })
  }
  loop()

  const health = (): Health => {
    const failed = devices.info().filter(d => d.failed).map(d => d.path)
    if (failed.length > 0) return { ok: false, reason: `device ${failed.join(', ')} failed: replace it, or restart without it` }
    // the same allowance the FAT gives a vendor before it counts it silent
    const silentMs = Math.max(3 * heartbeatMs, 5000)
    if (Date.now() - lastHeard > silentMs) return { ok: false, reason: lastHeard === 0 ? 'no FAT replica has answered yet' : `no FAT replica answered for ${Math.round((Date.now() - lastHeard) / 1000)} s` }
    return { ok: true, reason: `${devices.info().length} devices healthy; a FAT replica answered ${Math.round((Date.now() - lastHeard) / 1000)} s ago` }
  }

  return {
    store,
    announced,
    health,
    overview: () => ({
      devices: devices.info(),
      chunks: store.size(),
      damaged: store.damaged(Number.MAX_SAFE_INTEGER).length,
      inflight: inflight + transfers.running,
      scrubProgress: scrubber.progress,
      lastHeard
    }),
    heartbeat,
    async stop () {
      stopped = true
      clearTimeout(timer)
      await scrubber.stop()
      transfers.stop()
      await Promise.all([STORE_PROTOCOL, FETCH_PROTOCOL, ORDER_PROTOCOL, ECHO_PROTOCOL].map(async p => { await node.unhandle(p) }))
      await devices.close()
      await closeChunkStreams(node)
    }
  }
}
