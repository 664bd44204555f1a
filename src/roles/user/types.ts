/**
 * A progress report of a long transfer: `bytes` of `total` plaintext bytes and `chunks` of
 * `chunksTotal` chunks done (those an interrupted earlier run already did included), over `files`
 * files. Rate and time left are for the caller to derive (bin/progress.ts does). A migration
 * (`stordaemon drain`) counts the bytes and chunks moved off the vendor since it began.
 */
export interface Progress {
  phase: 'upload' | 'download' | 'migrate'
  bytes: number
  total: number
  chunks: number
  chunksTotal: number
  files: number
}
