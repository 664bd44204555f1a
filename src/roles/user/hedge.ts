/**
 * Asks several targets for the same answer without waiting on a dead one: the first is asked at
 * once, each next one `delayMs` after the last was started (at once when one fails), and the first
 * answer wins; the attempts still running are then aborted. With one of three FAT replicas cut
 * off, a command waits `delayMs` longer, not the cut-off replica's connection timeout.
 */
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
