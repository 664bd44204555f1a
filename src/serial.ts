/** Runs async jobs one at a time, in the order they were queued. */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve()

  run<T> (job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job)
    this.tail = next.catch(() => {})
    return next
  }
}
