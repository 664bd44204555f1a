import { peerIdFromString } from '@libp2p/peer-id'
import { MalformedMessageError } from '../errors.ts'

/** A strict decoder for one field: returns the value typed, or throws naming the path. */
export type Check<T> = (value: unknown, path: string) => T
export type Infer<C> = C extends Check<infer T> ? T : never

function fail (path: string, what: string): never {
  throw new MalformedMessageError(`${path}: ${what}`)
}

export const str = (max: number, pattern?: RegExp): Check<string> => (v, p) => {
  if (typeof v !== 'string') fail(p, 'expected a string')
  if (v.length > max) fail(p, `longer than ${max}`)
  if (pattern != null && !pattern.test(v)) fail(p, 'has the wrong form')
  return v
}

export const int = (min: number, max: number): Check<number> => (v, p) => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(p, 'expected an integer')
  if (v < min || v > max) fail(p, `out of range ${min}..${max}`)
  return v
}

export const bool: Check<boolean> = (v, p) => {
  if (typeof v !== 'boolean') fail(p, 'expected true or false')
  return v
}

/** Lower-case hex of exactly `bytes` bytes (or up to `bytes` when `upTo`). */
export const hex = (bytes: number, upTo = false): Check<string> => {
  const re = upTo ? new RegExp(`^(?:[0-9a-f]{2}){0,${bytes}}$`) : new RegExp(`^[0-9a-f]{${bytes * 2}}$`)
  return str(bytes * 2, re)
}

const peerIdCache = new Map<string, boolean>()
/** A libp2p peer id string that parses as one. */
export const peer: Check<string> = (v, p) => {
  const s = str(128, /^[1-9A-HJ-NP-Za-km-z]+$/)(v, p)
  let ok = peerIdCache.get(s)
  if (ok == null) {
    // only the canonical form, so one identity has one string
    try { ok = peerIdFromString(s).toString() === s } catch { ok = false }
    if (peerIdCache.size > 10_000) peerIdCache.clear()
    peerIdCache.set(s, ok)
  }
  if (!ok) fail(p, 'is not a peer id')
  return s
}

export const oneOf = <T extends string>(...values: T[]): Check<T> => (v, p) => {
  if (!values.includes(v as T)) fail(p, `expected one of ${values.join(', ')}`)
  return v as T
}

export const arr = <T>(item: Check<T>, max: number): Check<T[]> => (v, p) => {
  if (!Array.isArray(v)) fail(p, 'expected a list')
  if (v.length > max) fail(p, `more than ${max} items`)
  return v.map((x, i) => item(x, `${p}[${i}]`))
}

/** A field that may be left out (undefined); when present it must pass `check`. */
export const opt = <T>(check: Check<T>): Check<T | undefined> => (v, p) => v === undefined ? undefined : check(v, p)

type Shape = Record<string, Check<any>>
type OptKeys<S extends Shape> = { [K in keyof S]: undefined extends Infer<S[K]> ? K : never }[keyof S]
/** Fields decoded with `opt` may be left out; all others are required. */
type FromShape<S extends Shape> = { [K in Exclude<keyof S, OptKeys<S>>]: Infer<S[K]> } & { [K in OptKeys<S>]?: Infer<S[K]> } extends infer O ? { [K in keyof O]: O[K] } : never

/** An object with exactly these fields: a missing or an unknown field is an error. */
export const obj = <S extends Shape>(shape: S): Check<FromShape<S>> => (v, p) => {
  if (typeof v !== 'object' || v == null || Array.isArray(v)) fail(p, 'expected an object')
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(v)) {
    if (!Object.hasOwn(shape, key)) fail(`${p}.${key}`, 'unknown field')
  }
  for (const [key, check] of Object.entries(shape)) {
    const value = check(Object.hasOwn(v, key) ? (v as Record<string, unknown>)[key] : undefined, `${p}.${key}`)
    // a field left out (optional) stays out, so a decoded message equals what was sent
    if (value !== undefined) out[key] = value
  }
  return out as FromShape<S>
}

/** A map from keys to values, both checked, with at most `max` entries. */
export const dict = <V>(key: Check<string>, value: Check<V>, max: number): Check<Record<string, V>> => (v, p) => {
  if (typeof v !== 'object' || v == null || Array.isArray(v)) fail(p, 'expected an object')
  const entries = Object.keys(v)
  if (entries.length > max) fail(p, `more than ${max} entries`)
  // built from entries, so a key like __proto__ stays a plain key and never becomes the prototype
  return Object.fromEntries(entries.map(k => [key(k, `${p} key`), value((v as Record<string, unknown>)[k], `${p}.${k}`)]))
}

/** One of several object shapes, chosen by the string in field `tag`. */
export const union = <C extends Check<any>>(tag: string, checks: Record<string, C>): Check<Infer<C>> => (v, p) => {
  const kind = (v as Record<string, unknown> | null)?.[tag]
  if (typeof kind !== 'string' || !Object.hasOwn(checks, kind)) fail(`${p}.${tag}`, `expected one of ${Object.keys(checks).join(', ')}`)
  return checks[kind](v, p)
}
