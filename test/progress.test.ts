import assert from 'node:assert/strict'
import { progressBar } from '../bin/progress.ts'
import type { Progress } from '../src/index.ts'

/** A stand-in for stderr that records what is written, a terminal or not. */
function fakeStream (isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, columns: 100, text: '', write (chunk: string) { s.text += chunk; return true } }
  return s as unknown as NodeJS.WriteStream & { text: string }
}

const at = (phase: Progress['phase'], bytes: number, total: number): Progress => ({ phase, bytes, total, chunks: 0, chunksTotal: 1, files: 1 })

describe('progress bar', function () {
  it('on a terminal shows the phase, share, bytes, rate and time left, and clears its line when done', async function () {
    const out = fakeStream(true)
    const bar = progressBar(true, out)
    bar.update(at('migrate', 0, 10 * 1024 * 1024))
    await new Promise(resolve => setTimeout(resolve, 150))
    bar.update(at('migrate', 5 * 1024 * 1024, 10 * 1024 * 1024))
    const last = out.text.split('\r').pop() as string
    assert.match(last, /^migrate \[#+\.+\]\s+50% 5(\.0)? MiB\/10(\.0)? MiB \S+ \S+\/s \d+:\d\d left/)
    bar.done()
    assert.ok(out.text.endsWith('\r\x1b[K'))
  })

  it('writes nothing when the output is not a terminal, or with --json', function () {
    for (const [tty, enabled] of [[false, true], [true, false]]) {
      const out = fakeStream(tty)
      const bar = progressBar(enabled, out)
      bar.update(at('upload', 1, 2))
      bar.update(at('upload', 2, 2))
      bar.done()
      assert.equal(out.text, '', `terminal ${tty}, enabled ${enabled}`)
    }
  })
})
