import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/**
 * js-yamux 8 sends a window update after every data frame it receives: on a busy stream one more
 * frame, one more noise encryption and one more socket write for every frame of data (about 12%
 * of a download's CPU in the CLI, --cpu-prof). Like go-yamux, a plain update (no SYN or ACK to
 * carry) here waits until half the receive window is used: the sender always keeps at least half
 * the window to send into, and gets it back in one update.
 */
let patched = false
export function batchWindowUpdates (): void {
  if (patched) return
  patched = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: () => void }
  const sendEveryTime = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: { state: StreamState, recvWindow: number, recvWindowCapacity: number }) {
    if (this.state === StreamState.Established && this.recvWindowCapacity > this.recvWindow / 2) return
    sendEveryTime.call(this)
  }
}
