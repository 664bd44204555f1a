import assert from 'node:assert/strict'
import { cutOffReason, type Hearing } from '../src/roles/fat/cut-off.ts'

/** Replica a of {a, b, c} (or of `members`), 10 s after it started, hearing as given. */
const hearing = (over: Partial<Hearing>): Hearing => ({
  self: 'a',
  members: ['a', 'b', 'c'],
  leading: false,
  member: true,
  lead: null,
  heard: new Map(),
  now: 10_000,
  awakeSince: 0,
  lastTickAt: 9_900,
  silenceMs: 3000,
  ...over
})

describe('a FAT replica knows when it is cut off from a majority', function () {
  it('alone for longer than the silence, with no leader: cut off, saying how many it heard', function () {
    assert.match(cutOffReason(hearing({ heard: new Map([['b', 5000]]) })) ?? '', /^FAT replica a cannot reach a majority of its replica set \(it heard 1 of 3 replicas, itself included, in the last 3 s\) and knows no leader/)
  })

  it('not cut off while it hears a majority (an election among replicas that hear each other)', function () {
    assert.equal(cutOffReason(hearing({ heard: new Map([['b', 9000]]) })), undefined)
  })

  it('not cut off while it hears its leader, even if that is short of a majority (a follower of five)', function () {
    assert.equal(cutOffReason(hearing({ members: ['a', 'b', 'c', 'd', 'e'], lead: 'b', heard: new Map([['b', 9500]]) })), undefined)
    // a leader not heard for the whole silence does not count
    assert.notEqual(cutOffReason(hearing({ members: ['a', 'b', 'c', 'd', 'e'], lead: 'b', heard: new Map([['b', 6000]]) })), undefined)
  })

  it('silence right after a start or a pause proves nothing', function () {
    assert.equal(cutOffReason(hearing({ awakeSince: 8000 })), undefined)
    // the ticker has not run since the pause: not noticed yet, still a pause
    assert.equal(cutOffReason(hearing({ lastTickAt: 5000 })), undefined)
  })

  it('a leader (check-quorum decides for it) and a non-member are never judged', function () {
    assert.equal(cutOffReason(hearing({ leading: true })), undefined)
    assert.equal(cutOffReason(hearing({ member: false })), undefined)
  })
})
