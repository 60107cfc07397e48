import { afterEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type PinnedState } from '@phalanx/core'
import { createSnapshotter, pinStateDict, stateFromShardFile, type ShardImage, type SnapshotSink, type Snapshotter } from '../src/index.js'
import { makeState } from './helpers.js'

/** A sink that keeps a copy of every image it is handed (the staging buffer is reused). */
function keepingSink (): SnapshotSink & { images: Array<{ bytes: Uint8Array, crcs: readonly number[] }> } {
  const images: Array<{ bytes: Uint8Array, crcs: readonly number[] }> = []
  return {
    images,
    async put (image: ShardImage) { images.push({ bytes: image.bytes.slice(), crcs: [...image.crcs] }) }
  }
}

/** `pinned` without `readRange`: the drain must fall back to whole-tensor reads. */
function wholeReadsOnly (pinned: PinnedState): PinnedState {
  return { specs: pinned.specs, meta: pinned.meta, read: pinned.read.bind(pinned), release: pinned.release.bind(pinned) }
}

/** Counts event-loop turns (setImmediate callbacks) until stopped. */
function turnCounter (): { turns: () => number, stop: () => void } {
  let turns = 0
  let running = true
  const tick = (): void => { if (running) { turns++; setImmediate(tick) } }
  setImmediate(tick)
  return { turns: () => turns, stop: () => { running = false } }
}

describe('snapshot drain in bounded ranges', () => {
  const toStop: Snapshotter[] = []
  afterEach(async () => {
    for (const s of toStop.splice(0)) await s.stop()
  })

  it('capture() returns before any of the drain runs: nothing is read or handed to a sink in the caller\'s turn', async () => {
    const sink = keepingSink()
    const snap = createSnapshotter({ l2Every: 0, chunkBytes: 65536 }, { holder: sink })
    toStop.push(snap)
    const base = pinStateDict(makeState(3, [4096, 17]))
    const reads: number[] = []
    let layoutLooks = 0
    const pinned: PinnedState = {
      // The drain's first act is to lay the image out from the specs.
      get specs () { layoutLooks++; return base.specs },
      meta: base.meta,
      read: async (index, out) => { reads.push(index); await base.read(index, out) },
      readRange: async (index, offset, out) => { reads.push(index); await base.readRange?.(index, offset, out) },
      release: () => { base.release() }
    }
    expect(snap.capture(pinned).accepted).toBe(true)
    expect(layoutLooks).toBe(0)
    // Still in the caller's turn, and after its microtasks: the drain waits for the next loop turn.
    await Promise.resolve()
    await Promise.resolve()
    expect(layoutLooks).toBe(0)
    expect(reads).toEqual([])
    expect(sink.images).toEqual([])
    expect(await snap.flush()).toEqual({ step: 3, l0: true })
    expect(reads.length).toBeGreaterThan(0)
    expect(sink.images).toHaveLength(1)
  })

  it('copies a large tensor in pieces, yielding between them, into the same image as whole reads', async () => {
    // One 4 MiB tensor among small ones, and sizes that leave alignment padding.
    const state = makeState(7, [1 << 20, 37, 4099, 1])
    const ranged = keepingSink()
    const whole = keepingSink()
    // sliceMs 0: yield before every piece, so the split is deterministic whatever the machine's speed.
    const a = createSnapshotter({ l2Every: 0, chunkBytes: 65536, sliceMs: 0 }, { holder: ranged })
    const b = createSnapshotter({ l2Every: 0, chunkBytes: 65536, sliceMs: 0 }, { holder: whole })
    toStop.push(a, b)
    const base = pinStateDict(state)
    const pieces: Array<{ index: number, offset: number, length: number }> = []
    const counted: PinnedState = {
      specs: base.specs,
      meta: base.meta,
      read: async () => { throw new Error('whole read used although readRange exists') },
      readRange: async (index, offset, out) => { pieces.push({ index, offset, length: out.length }); await base.readRange?.(index, offset, out) },
      release: () => { base.release() }
    }
    const ticks = turnCounter()
    try {
      expect(a.capture(counted).accepted).toBe(true)
      expect(await a.flush()).toEqual({ step: 7, l0: true })
    } finally {
      ticks.stop()
    }
    const big = pieces.filter((p) => p.index === 0)
    // Contiguous, complete and bounded: 64 KiB pieces, a loop turn before each.
    expect(big.length).toBeGreaterThanOrEqual(64)
    expect(Math.max(...big.map((p) => p.length))).toBeLessThan(1 << 20)
    big.forEach((p, k) => { expect(p.offset).toBe(k === 0 ? 0 : (big[k - 1]?.offset ?? 0) + (big[k - 1]?.length ?? 0)) })
    expect((big.at(-1)?.offset ?? 0) + (big.at(-1)?.length ?? 0)).toBe(1 << 20)
    expect(ticks.turns()).toBeGreaterThanOrEqual(big.length - 1)

    // The same state through whole-tensor reads (the fallback): byte-identical image and checksums.
    expect(b.capture(wholeReadsOnly(pinStateDict(state))).accepted).toBe(true)
    await b.flush()
    const [x, y] = [ranged.images[0], whole.images[0]]
    expect(x !== undefined && y !== undefined).toBe(true)
    if (x === undefined || y === undefined) return
    expect(Buffer.from(x.bytes).equals(Buffer.from(y.bytes))).toBe(true)
    expect(x.crcs).toEqual(y.crcs)
    expect(stateDictsBitEqual(stateFromShardFile(x.bytes), state)).toBe(true)
  })

  it('sizes pieces from the measured copy rate so a slow source still yields within a tensor', async () => {
    // A source copying ~100 floats per microsecond: the 1 Mi-float tensor is ~10 ms of copying,
    // ten 1 ms slices or more, however the first piece was sized.
    const state = makeState(3, [1 << 20])
    const base = pinStateDict(state)
    const lengths: number[] = []
    const slow: PinnedState = {
      specs: base.specs,
      meta: base.meta,
      read: base.read.bind(base),
      readRange: async (index, offset, out) => {
        lengths.push(out.length)
        const until = performance.now() + out.length / 100_000
        while (performance.now() < until) { /* a slow memory, as seen from this thread */ }
        await base.readRange?.(index, offset, out)
      },
      release: () => { base.release() }
    }
    const sink = keepingSink()
    const snap = createSnapshotter({ l2Every: 0, chunkBytes: 65536, sliceMs: 1 }, { holder: sink })
    toStop.push(snap)
    const ticks = turnCounter()
    try {
      snap.capture(slow)
      await snap.flush()
    } finally {
      ticks.stop()
    }
    expect(lengths.reduce((s, n) => s + n, 0)).toBe(1 << 20)
    // After the first piece the rate is known: the rest fit half a slice at that rate (<= 50 K floats).
    expect(Math.max(...lengths.slice(1))).toBeLessThanOrEqual(50_000)
    expect(ticks.turns()).toBeGreaterThanOrEqual(6)
    const got = sink.images[0]
    expect(got !== undefined && stateDictsBitEqual(stateFromShardFile(got.bytes), state)).toBe(true)
  })

  it('pinStateDict.readRange checks its range and refuses after release', async () => {
    const pin = pinStateDict(makeState(1, [100]))
    const out = new Float32Array(10)
    await pin.readRange?.(0, 90, out)
    expect(out[9]).toBe(makeState(1, [100]).tensors[0]?.data[99])
    await expect(pin.readRange?.(0, 91, out)).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(pin.readRange?.(0, 0.5, out)).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(pin.readRange?.(1, 0, out)).rejects.toMatchObject({ name: 'InvalidParametersError' })
    pin.release()
    await expect(pin.readRange?.(0, 0, out)).rejects.toMatchObject({ name: 'ClosedError' })
  })
})
