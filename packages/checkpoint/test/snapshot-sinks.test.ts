import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint, type OutboundMessage } from '@phalanx/core'
import {
  createCheckpointStore, createHolderClient, createLocalStorage, createSnapshotter, layoutOf, pinStateDict, planShard,
  type CheckpointStorage, type ShardImage, type SnapshotSink
} from '../src/index.js'
import { makeState, tempDir } from './helpers.js'

/** What the trainer's thread hands to the holder, seen through a fake endpoint. */
interface SentChunk { offset: number, data: Float32Array }

/** An endpoint that answers the holder protocol at once and records every chunk message. */
function recordingEndpoint (): { endpoint: Endpoint, chunks: SentChunk[], maxInFlight: () => number, types: string[] } {
  const chunks: SentChunk[] = []
  const types: string[] = []
  let inFlight = 0
  let maxInFlight = 0
  const endpoint = {
    async request (_to: string, message: OutboundMessage) {
      types.push(message.type)
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      try {
        // One macrotask per request, as a real round trip: lets the client's window fill up.
        await new Promise<void>((resolve) => { setImmediate(resolve) })
        if (message.type === 'snap.chunk') {
          const body = message.body as { offset: number }
          const t = message.tensors?.[0]
          if (t === undefined) throw new Error('chunk without data')
          chunks.push({ offset: body.offset, data: t.data })
        }
        return { header: { body: message.type === 'snap.prepare' ? { transfer: 7 } : {} } }
      } finally {
        inFlight--
      }
    }
  }
  return { endpoint: endpoint as unknown as Endpoint, chunks, maxInFlight: () => maxInFlight, types }
}

/** A staged image of `bytes` bytes (what the snapshotter hands to its sinks). */
function image (bytes: number, chunkBytes: number): ShardImage {
  const state = makeState(5, [bytes / 4 - 64])
  const plan = planShard({ rank: 0, worldSize: 1, meta: state.meta, layout: layoutOf(state.tensors), pieces: [{ name: 'layer0/w', tensorOffset: 0, length: bytes / 4 - 64 }] })
  const buf = new Uint8Array(new SharedArrayBuffer(plan.totalBytes + 4096), 1024, plan.totalBytes)
  for (let i = 0; i < buf.length; i += 997) buf[i] = i & 0xff
  return { header: plan.header, dataStart: plan.dataStart, bytes: buf, chunkBytes, crcs: Array.from({ length: Math.ceil(buf.byteLength / chunkBytes) }, () => 0) }
}

describe('snapshot sinks on the trainer thread', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const toStop: Array<{ stop: () => Promise<void> }> = []

  beforeEach(async () => { ({ dir, cleanup } = await tempDir('phx-sinks-')) })
  afterEach(async () => {
    for (const s of toStop.splice(0)) await s.stop()
    await cleanup()
  })

  it('the holder client sends views of the staging image, never copies, in frames of at most 8 MiB', async () => {
    const { endpoint, chunks, maxInFlight, types } = recordingEndpoint()
    const client = createHolderClient({ owner: 'rank-0', window: 2 }, { endpoint })
    const img = image(20 * 1024 * 1024 + 4096, 1024 * 1024)
    await client.put(img)
    expect(types[0]).toBe('snap.prepare')
    expect(types[types.length - 1]).toBe('snap.commit')
    expect(chunks.length).toBe(3)
    expect(maxInFlight()).toBe(2)
    let covered = 0
    for (const c of [...chunks].sort((a, b) => a.offset - b.offset)) {
      // Same memory as the staging image at the chunk's offset: a view, so nothing was copied.
      expect(c.data.buffer).toBe(img.bytes.buffer)
      expect(c.data.byteOffset).toBe(img.bytes.byteOffset + c.offset)
      expect(c.data.byteLength).toBeLessThanOrEqual(8 * 1024 * 1024)
      expect(c.offset).toBe(covered)
      covered += c.data.byteLength
    }
    expect(covered).toBe(img.bytes.byteLength)
  })

  it('commits L2 from the record it just wrote, without reading it back', async () => {
    const base = createLocalStorage({ dir: `${dir}/l2` })
    const reads: string[] = []
    const storage: CheckpointStorage = { ...base, read: async (path, position, length, options) => { reads.push(path); return await base.read(path, position, length, options) } }
    const store = createCheckpointStore({ chunkBytes: 4096 }, { storage })
    const snap = createSnapshotter({ l2Every: 1, chunkBytes: 4096 }, { store })
    toStop.push(snap)
    snap.capture(pinStateDict(makeState(4)))
    expect(await snap.flush()).toMatchObject({ step: 4, l0: false, l2: { step: 4 } })
    expect(reads).toEqual([])
    expect(stateDictsBitEqual((await store.restore()).state, makeState(4))).toBe(true)
  })

  it('counts the synchronous part of a sink call as a block of the trainer thread, apart from the copy slices', async () => {
    const busyMs = 25
    const sink: SnapshotSink = {
      put: async () => {
        // Synchronous work before the first await: it runs in the drain's turn, on the trainer's thread.
        const until = performance.now() + busyMs
        while (performance.now() < until) { /* spin for busyMs */ }
        await new Promise<void>((resolve) => { setImmediate(resolve) })
      }
    }
    const snap = createSnapshotter({ sliceMs: 1 }, { holder: sink })
    toStop.push(snap)
    snap.capture(pinStateDict(makeState(2)))
    expect(await snap.flush()).toEqual({ step: 2, l0: true })
    const st = snap.stats()
    expect(st.lastMaxSyncMs).toBeGreaterThanOrEqual(busyMs)
    expect(st.maxSyncMs).toBeGreaterThanOrEqual(st.lastMaxSyncMs)
    expect(st.mainThreadMs).toBeGreaterThanOrEqual(busyMs)
    // The copies of this small state are one short slice: the sink's stretch is not counted as one.
    expect(st.lastMaxSliceMs).toBeLessThan(busyMs)
  })

  it('rejects a commit whose record names a tensor outside the layout', async () => {
    const store = createCheckpointStore({ dir: `${dir}/l2`, chunkBytes: 4096 })
    const full = makeState(3)
    const layout = layoutOf(full.tensors)
    const record = await store.writeShard({ step: 3, meta: full.meta, layout, pieces: full.tensors.map((t) => ({ name: t.name, tensorOffset: 0, length: t.data.length, data: t.data })) })
    const forged = { ...record, header: { ...record.header, entries: record.header.entries.map((e, i) => (i === 1 ? { ...e, name: 'nope' } : e)) } }
    await expect(store.commit(3, { worldSize: 1, records: [forged] })).rejects.toMatchObject({ name: 'CorruptCheckpointError' })
    expect(await store.list()).toEqual([])
  })
})
