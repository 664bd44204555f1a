/** Runs fn(0..count-1) with at most `limit` running at once; the first failure stops new work and is thrown. */
export async function parallel (limit: number, count: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  let failed: unknown
  const worker = async (): Promise<void> => {
    while (failed == null && next < count) {
      const i = next++
      try {
        await fn(i)
      } catch (err) {
        failed ??= err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker))
  if (failed != null) throw failed
}
