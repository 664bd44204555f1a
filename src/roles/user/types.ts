/** A progress report of a long transfer: `bytes` of `total` done. */
export interface Progress {
  phase: 'upload' | 'download'
  bytes: number
  total: number
}
