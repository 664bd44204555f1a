/**
 * Asks several targets for the same answer without waiting on a dead one: the first is asked at
 * once, each next one `delayMs` after the last was started (at once when one fails), and the first
 * answer wins; the attempts still running are then aborted. With one of three FAT replicas cut
 * off, a command waits `delayMs` longer, not the cut-off replica's connection timeout.
 */
import { AccessDeniedError, NoQuorumError, UnavailableError, UnreachableError } from '../../errors.ts'

export type Hedged<T, R> = { value: R, target: T } | { errors: unknown[] }

export async function hedged<T, R> (targets: T[], delayMs: number, attempt: (target: T, signal: AbortSignal) => Promise<R>): Promise<Hedged<T, R>> {
  return await new Promise(resolve => {
    const ctrl = new AbortController()
    const errors: unknown[] = []
    let next = 0
    let running = 0
    let done = false
    let timer: NodeJS.Timeout | undefined
    const finish = (result: Hedged<T, R>): void => {
      done = true
      clearTimeout(timer)
      ctrl.abort()
      resolve(result)
    }
    const launch = (): void => {
      clearTimeout(timer)
      if (done) return
      if (next >= targets.length) {
        if (running === 0) finish({ errors })
        return
      }
      const target = targets[next++]
      running++
      attempt(target, ctrl.signal).then(value => { if (!done) finish({ value, target }) }, err => {
        running--
        if (done) return
        errors.push(err)
        launch()
      })
      timer = setTimeout(launch, delayMs)
    }
    launch()
  })
}

/**
 * What a round of FAT requests in which no replica answered means: `final` (an error to throw
 * as it is), `cut-off` (every replica that answered knows it is cut off from a majority and the
 * others did not answer at all: no election is under way that waiting would end), or `retry`
 * (unreachable replicas, an election, or a replay refusal: the echo of a copy that reached the
 * leader another way).
 */
export function roundVerdict (errors: unknown[]): { verdict: 'final' | 'cut-off', error: Error } | { verdict: 'retry' } {
  const retry = (e: unknown): boolean => e instanceof UnreachableError || e instanceof UnavailableError || e instanceof NoQuorumError
  const final = errors.find(e => !retry(e) && !(e instanceof AccessDeniedError && /replayed/.test(e.message)))
  if (final != null) return { verdict: 'final', error: final as Error }
  const cutOff = errors.find(e => e instanceof NoQuorumError)
  if (cutOff != null && errors.every(e => e instanceof NoQuorumError || e instanceof UnreachableError)) return { verdict: 'cut-off', error: cutOff as Error }
  return { verdict: 'retry' }
}
