import { randomBytes } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { toString as toHex, fromString as fromHex } from 'uint8arrays'
import { peerIdFromString } from '@libp2p/peer-id'
import { AccessDeniedError, LimitError } from '../errors.ts'
import { canonical } from './sign.ts'

/** The owner's signature over a request, with a nonce and a time so it cannot be replayed. */
export interface Auth { owner: string, nonce: string, time: number, sig: string }

/** How far a request's time may be from ours; nonces are remembered this long. */
export const REQUEST_WINDOW_MS = 120_000
const MAX_NONCES = 200_000

function requestBytes (msg: { auth: Omit<Auth, 'sig'> }): Uint8Array {
  return new TextEncoder().encode(`stor:request:v1\n${canonical(msg)}`)
}

function unsigned<T extends { auth: Auth }> (msg: T): Omit<T, 'auth'> & { auth: Omit<Auth, 'sig'> } {
  const { sig: _sig, ...auth } = msg.auth
  return { ...msg, auth }
}

export async function signRequest<T extends object> (key: PrivateKey, owner: string, msg: T): Promise<T & { auth: Auth }> {
  const auth = { owner, nonce: randomBytes(16).toString('hex'), time: Date.now() }
  const sig = await key.sign(requestBytes({ ...msg, auth }))
  return { ...msg, auth: { ...auth, sig: toHex(sig, 'base16') } }
}

/** Checks requests' signatures, times and nonces; remembers nonces for the window. */
export class ReplayGuard {
  private readonly seen = new Map<string, number>()

  /** Throws unless `msg` is signed by `expectedOwner`, recent, and not seen before. */
  async check (msg: { auth: Auth }, expectedOwner: string, now = Date.now()): Promise<void> {
    const { auth } = msg
    if (auth.owner !== expectedOwner) throw new AccessDeniedError(`the request is signed for ${auth.owner}, not for the peer that sent it`)
    if (Math.abs(now - auth.time) > REQUEST_WINDOW_MS) throw new AccessDeniedError(`the request's time is ${Math.round((auth.time - now) / 1000)} s from ours; check the clock (at most ${REQUEST_WINDOW_MS / 1000} s allowed)`)
    let ok = false
    try {
      ok = await peerIdFromString(auth.owner).publicKey?.verify(requestBytes(unsigned(msg)), fromHex(auth.sig, 'base16')) ?? false
    } catch {}
    if (!ok) throw new AccessDeniedError('the request signature is not the owner\'s')
    this.expire(now)
    const key = `${auth.owner}/${auth.nonce}`
    if (this.seen.has(key)) throw new AccessDeniedError('the request was replayed: its nonce has been used already')
    if (this.seen.size >= MAX_NONCES) throw new LimitError('too many requests in flight; try again shortly')
    this.seen.set(key, auth.time + REQUEST_WINDOW_MS)
  }

  private expire (now: number): void {
    for (const [k, until] of this.seen) {
      if (until > now) break
      this.seen.delete(k)
    }
  }
}
