import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint, type PinnedState } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import {
  createCheckpointStore, createHolderClient, createSnapshotHolder, createSnapshotter, createChecksumWorker, chunkCrcs, pinStateDict,
  type SnapshotHolder
} from '../src/index.js'
import { makeState, tempDir } from './helpers.js'

describe('snapshotter, holder and client (memory transport)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let holderEp: Endpoint
  let trainerEp: Endpoint
  let holder: SnapshotHolder
  const transport = memoryTransport({ network: createMemoryNetwork() })
  const toStop: Array<{ stop: () => Promise<void> | void }> = []

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('phx-holder-'))
    holderEp = await transport.open({ id: 'holder', job: 't', limits: { maxFrameBytes: 8 * 1024 * 1024 } })
    trainerEp = await transport.open({ id: 'trainer', job: 't' })
    holder = createSnapshotHolder({ dir: `${dir}/shm` }, { endpoint: holderEp })
    await holder.start()
  })
  afterEach(async () => {
    for (const s of toStop.splice(0)) await s.stop()
    await holder.stop()
    await trainerEp.close()
    await holderEp.close()
    await cleanup()
  })

  it('checksums in a worker thread exactly as inline', async () => {
    const w = createChecksumWorker()
    toStop.push({ stop: async () => { await w.close() } })
    const shared = new Uint8Array(new SharedArrayBuffer(100_000))
    for (let i = 0; i < shared.length; i++) shared[i] = (i * 31) & 0xff
    expect(await w.crcs(shared, 4096)).toEqual(chunkCrcs(shared, 4096))
  })

  it('captures without waiting, skips while draining, and lands in L0 and L2', async () => {
    const client = createHolderClient({ owner: 'rank-0', address: holderEp.address }, { endpoint: trainerEp })
    const store = createCheckpointStore({ dir: `${dir}/l2`, chunkBytes: 4096 })
    const snap = createSnapshotter({ l2Every: 2, chunkBytes: 4096 }, { holder: client, store })
    toStop.push(snap)
    const first = snap.capture(pinStateDict(makeState(1)))
    expect(first).toEqual({ accepted: true, step: 1 })
    let released = false
    const p = pinStateDict(makeState(2))
    const second = snap.capture({ ...p, specs: p.specs, meta: p.meta, read: p.read, release: () => { released = true; p.release() } })
    expect(second).toEqual({ accepted: false, step: 2, reason: 'busy' })
    expect(released).toBe(true)
    expect(await snap.flush()).toEqual({ step: 1, l0: true })
    snap.capture(pinStateDict(makeState(3)))
    const out = await snap.flush()
    expect(out).toMatchObject({ step: 3, l0: true, l2: { step: 3 } })
    expect(snap.stats()).toMatchObject({ captured: 2, skipped: 1, completed: 2, l0: 2, l2: 1, lastStep: 3 })
    const restored = await client.restore()
    expect(restored.held.step).toBe(3)
    expect(stateDictsBitEqual(restored.state, makeState(3))).toBe(true)
    expect(restored.state.meta).toEqual(makeState(3).meta)
    const fromDisk = await store.restore()
    expect(stateDictsBitEqual(fromDisk.state, makeState(3))).toBe(true)
    expect(holder.list().map((h) => h.step)).toEqual([3, 1])
  })

  it('keeps the previous snapshot when a transfer is never committed, and re-indexes after a restart', async () => {
    const client = createHolderClient({ owner: 'rank-1', address: holderEp.address }, { endpoint: trainerEp })
    const snap = createSnapshotter({ l2Every: 0, chunkBytes: 4096 }, { holder: client })
    toStop.push(snap)
    snap.capture(pinStateDict(makeState(10)))
    await snap.flush()
    // A trainer that dies mid-transfer: prepare and one chunk, never a commit.
    await trainerEp.request('holder', { type: 'snap.prepare', body: { owner: 'rank-1', step: 11, bytes: 8192, chunkBytes: 4096, crcs: [1, 2] } })
    expect((await client.latest())?.step).toBe(10)
    expect(stateDictsBitEqual((await client.restore()).state, makeState(10))).toBe(true)
    // Restart the holder: a fresh process re-indexes the slots from their manifests.
    await holder.stop()
    const ep2 = await transport.open({ id: 'holder2', job: 't' })
    const holder2 = createSnapshotHolder({ dir: `${dir}/shm` }, { endpoint: ep2 })
    toStop.push({ stop: async () => { await holder2.stop(); await ep2.close() } })
    await holder2.start()
    expect(holder2.list().map((h) => [h.owner, h.step])).toEqual([['rank-1', 10]])
    const client2 = createHolderClient({ owner: 'rank-1', holder: 'holder2', address: ep2.address }, { endpoint: trainerEp })
    expect(stateDictsBitEqual((await client2.restore()).state, makeState(10))).toBe(true)
  })

  it('rejects chunks that fail their checksum and bad owners', async () => {
    await trainerEp.connect('holder', holderEp.address)
    const prep = await trainerEp.request('holder', { type: 'snap.prepare', body: { owner: 'o', step: 1, bytes: 64, chunkBytes: 64, crcs: [123] } })
    const transfer = (prep.header.body as { transfer: number }).transfer
    await expect(trainerEp.request('holder', { type: 'snap.chunk', body: { owner: 'o', transfer, offset: 0 }, tensors: [{ name: 'bytes', shape: [16], dtype: 'float32', data: new Float32Array(16) }] }))
      .rejects.toMatchObject({ name: 'CorruptCheckpointError' })
    await expect(trainerEp.request('holder', { type: 'snap.commit', body: { owner: 'o', transfer } })).rejects.toMatchObject({ name: 'CorruptCheckpointError' })
    await expect(trainerEp.request('holder', { type: 'snap.latest', body: { owner: '../etc' } })).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(trainerEp.request('holder', { type: 'snap.latest', body: { owner: 'o' } })).rejects.toMatchObject({ name: 'NotFoundError' })
  })

  it('skips captures that would exceed the overhead budget', async () => {
    const client = createHolderClient({ owner: 'rank-2', address: holderEp.address }, { endpoint: trainerEp })
    const snap = createSnapshotter({ l2Every: 0, chunkBytes: 4096, overheadBudget: 1e-6 }, { holder: client })
    toStop.push(snap)
    expect(snap.capture(pinStateDict(makeState(1))).accepted).toBe(true)
    await snap.flush()
    expect(snap.capture(pinStateDict(makeState(2)))).toMatchObject({ accepted: false, reason: 'budget' })
    expect(snap.stats().skipped).toBe(1)
  })

  it('releases the pinned state and stops cleanly when stopped mid-drain', async () => {
    let released = 0
    const base = pinStateDict(makeState(4))
    const pinned: PinnedState = { specs: base.specs, meta: base.meta, read: base.read, release: () => { released++; base.release() } }
    const snap = createSnapshotter({ l2Every: 0 }, {})
    snap.capture(pinned)
    await snap.stop()
    await snap.stop()
    expect(released).toBeGreaterThan(0)
    expect(() => snap.capture(pinStateDict(makeState(5)))).toThrow(expect.objectContaining({ name: 'ClosedError' }))
  })
})
