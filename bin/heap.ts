import { setFlagsFromString } from 'node:v8'

/**
 * Lets the JavaScript heap grow to four times what survived the last full collection before the
 * next one (V8 picks a factor of about 1.1-2 from its measured speeds). A transfer keeps little
 * alive (~17 MiB of heap; chunk bytes live outside it) but allocates fast, and with a small factor
 * the limit lands within one young generation of the heap's size, so V8 starts marking the whole
 * heap again right after each full collection: 27-31 full collections per 256 MiB download here,
 * against 2 with this factor, and 1.45-1.6 s of CPU against 1.1-1.3 (upload: 18 against 2). Peak
 * memory did not change (chunk buffers dominate it). For the CLI's commands, vendors and the S3 gateway; a FAT
 * replica, whose tables live in its heap, keeps V8's own choice.
 */
export function heapForTransfers (): void {
  setFlagsFromString('--heap-growing-percent=300')
}
