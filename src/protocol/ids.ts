/** Protocol ids and limits: versioned strings, one per conversation. */
export const FAT_PROTOCOL = '/stor/fat/1.0.0'
export const FAT_SYNC_PROTOCOL = '/stor/fat-sync/2.0.0'
/** 3.0.0: many chunks one after the other on one stream (CHUNK_STREAM_REUSE); 2.0.0 carried one. */
export const STORE_PROTOCOL = '/stor/vendor/store/3.0.0'
export const FETCH_PROTOCOL = '/stor/vendor/fetch/3.0.0'
export const ORDER_PROTOCOL = '/stor/vendor/order/1.0.0'
export const ECHO_PROTOCOL = '/stor/vendor/echo/1.0.0'
export const DHT_PROTOCOL = '/stor/kad/1.0.0'

export const KiB = 1024
export const MiB = 1024 * 1024

/** Largest plaintext chunk a user may cut; vendors buffer one chunk per stream. */
export const MAX_CHUNK_SIZE = 16 * MiB
/** AES-GCM adds a 12-byte nonce and a 16-byte tag to every chunk. */
export const CHUNK_OVERHEAD = 28
export const MAX_WIRE_CHUNK = MAX_CHUNK_SIZE + CHUNK_OVERHEAD
/**
 * Chunk bytes travel raw after their control frame, handed to the stream in blocks of this size.
 * Each block is one muxer frame, and yamux answers every frame it receives with a window update
 * (a frame and a socket write of its own): 1 MiB blocks, two in a 2 MiB window, send a quarter of
 * the updates 256 KiB blocks did.
 */
export const SEND_BLOCK = 1 * MiB
/** What a chunk's receiver may hold queued: a whole chunk and some slack. */
export const MAX_DATA_BUFFER = MAX_WIRE_CHUNK + 512 * KiB
/**
 * Store and fetch streams carry many chunks each: a vendor takes at most this many requests on one
 * stream and closes it after this long without one (the client retires streams before either).
 */
export const CHUNK_STREAM_REUSE = { maxRequests: 1024, idleMs: 30_000 }
/** Streams to one vendor a client keeps open between chunks. */
export const MAX_IDLE_CHUNK_STREAMS = 16
/** Largest control message per protocol. */
export const MAX_FAT_MESSAGE = 16 * MiB
export const MAX_VENDOR_MESSAGE = 64 * KiB
/** A stream's read buffer; the muxer window is half of it. */
export const MAX_STREAM_BUFFER = 4 * MiB
export const MAX_PIECES = 64
export const MAX_REPLICAS = 16
export const MAX_CANDIDATES = 64
export const MAX_ADDRS = 16
