import { watch, writeFileSync } from 'node:fs'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createFakeClock, stateDictsBitEqual } from '@phalanx/core'
import {
  buildShardFile, checkpointId, chunkCrcs, createCheckpointStore, createChecksumWorker, createLocalStorage, createSnapshotter, layoutOf, pinStateDict,
  type CheckpointStorage
} from '../src/index.js'
import { makeState, tempDir } from './helpers.js'

/** A storage decorator as chaos disk faults build it: inherits everything, overrides the data file write. */
function failingDataWrites (inner: CheckpointStorage): CheckpointStorage & { attempts: string[] } {
  const attempts: string[] = []
  const wrapper = Object.create(inner) as CheckpointStorage & { attempts: string[] }
  Object.defineProperties(wrapper, {
    attempts: { value: attempts },
    writeFile: {
      value: async (path: string): Promise<void> => {
        attempts.push(path)
        throw Object.assign(new Error(`ENOSPC: no space left on device, write '${path}'`), { code: 'ENOSPC' })
      }
    }
  })
  return wrapper
}

describe('L2 checkpoints written and committed by the snapshotter\'s worker thread', () => {
  let dir: string
  let cleanup: () => Promise<void>
  const toStop: Array<{ stop: () => Promise<void> }> = []

  beforeEach(async () => { ({ dir, cleanup } = await tempDir('phx-l2-thread-')) })
  afterEach(async () => {
    for (const s of toStop.splice(0)) await s.stop()
    await cleanup()
  })

  it('commits in the thread with every store guarantee: bit-exact, keep-K, LATEST, nothing of the store on this thread', async () => {
    const store = createCheckpointStore({ dir, keep: 2, chunkBytes: 4096 })
    const onThisThread = [vi.spyOn(store, 'writeShardImage'), vi.spyOn(store, 'commit'), vi.spyOn(store.storage, 'writeFile'), vi.spyOn(store.storage, 'writeAtomic'), vi.spyOn(store.storage, 'rename')]
    const snap = createSnapshotter({ l2Every: 1, chunkBytes: 4096 }, { store })
    toStop.push(snap)
    for (const step of [1, 2, 3]) {
      snap.capture(pinStateDict(makeState(step)))
      expect(await snap.flush()).toMatchObject({ step, l0: false, l2: { id: checkpointId(step), step, worldSize: 1 } })
    }
    expect(snap.stats()).toMatchObject({ l2: 3, l2InThread: 3, completed: 3, failed: 0 })
    for (const spy of onThisThread) expect(spy).not.toHaveBeenCalled()
    expect((await store.list()).map((c) => c.step)).toEqual([3, 2])
    expect(await store.latestId()).toBe(checkpointId(3))
    await store.verify(checkpointId(3))
    const { state } = await store.restore()
    expect(stateDictsBitEqual(state, makeState(3))).toBe(true)
    expect(state.meta).toEqual(makeState(3).meta)
    // The thread left no attempt behind.
    expect((await store.storage.list('.')).sort()).toEqual(['LATEST', checkpointId(2), checkpointId(3)])
  })

  it('keeps a storage decorator (disk faults) in force: such a store commits on this thread', async () => {
    const storage = failingDataWrites(createLocalStorage({ dir }))
    expect(storage.describe?.()).toBeUndefined()
    const spread: CheckpointStorage = { ...createLocalStorage({ dir }) }
    expect(spread.describe?.()).toBeUndefined()
    const store = createCheckpointStore({ chunkBytes: 4096 }, { storage })
    expect(store.portable?.()).toBeUndefined()
    const snap = createSnapshotter({ l2Every: 1, chunkBytes: 4096 }, { store })
    toStop.push(snap)
    snap.capture(pinStateDict(makeState(1)))
    expect(await snap.flush()).toEqual({ step: 1, l0: false })
    expect(storage.attempts).toEqual([`${checkpointId(1)}.tmp/rank-00000.bin`])
    expect(snap.stats()).toMatchObject({ l2: 0, l2InThread: 0, failed: 1 })
    expect(await store.list()).toEqual([])
  })

  it('stays on this thread with l2Thread: false, with an injected clock, or without the checksum thread', async () => {
    const plain = createCheckpointStore({ dir: `${dir}/a`, chunkBytes: 4096 })
    expect(plain.portable?.()).toMatchObject({ storage: { dir: `${dir}/a`, shared: false }, keep: 3, chunkBytes: 4096 })
    expect(createCheckpointStore({ dir: `${dir}/b` }, { clock: createFakeClock() }).portable?.()).toBeUndefined()
    for (const init of [{ l2Thread: false }, { checksumWorker: false }]) {
      const store = createCheckpointStore({ dir: `${dir}/${Object.keys(init)[0] ?? 'x'}`, chunkBytes: 4096 })
      const commit = vi.spyOn(store, 'commit')
      const snap = createSnapshotter({ ...init, l2Every: 1, chunkBytes: 4096 }, { store })
      toStop.push(snap)
      snap.capture(pinStateDict(makeState(7)))
      expect(await snap.flush()).toMatchObject({ step: 7, l2: { step: 7 } })
      expect(commit).toHaveBeenCalledTimes(1)
      expect(snap.stats()).toMatchObject({ l2: 1, l2InThread: 0 })
      expect(stateDictsBitEqual((await store.restore()).state, makeState(7))).toBe(true)
    }
  })

  it('reports a failure in the thread as an error with its code, and the previous checkpoint stays', async () => {
    const store = createCheckpointStore({ dir, chunkBytes: 4096 })
    const portable = store.portable?.()
    if (portable === undefined) throw new Error('a plain directory store must be portable')
    const worker = createChecksumWorker()
    toStop.push({ stop: async () => { await worker.close() } })
    const image = async (step: number): Promise<Parameters<typeof worker.commitL2>[2]> => {
      const s = makeState(step)
      const layout = layoutOf(s.tensors)
      const pieces = s.tensors.map((t) => ({ name: t.name, tensorOffset: 0, length: t.data.length, data: t.data }))
      const { plan, bytes } = buildShardFile({ rank: 0, worldSize: 1, meta: s.meta, layout, pieces }, new Uint8Array(new SharedArrayBuffer(64 * 1024)))
      return { header: plan.header, dataStart: plan.dataStart, bytes, chunkBytes: 4096, crcs: await worker.crcs(bytes, 4096) }
    }
    const first = await image(1)
    expect(first.crcs).toEqual(chunkCrcs(first.bytes, 4096))
    expect(await worker.commitL2(portable, 1, first)).toMatchObject({ id: checkpointId(1), step: 1 })
    // A file where step 2's attempt directory must go: the thread's mkdir fails.
    writeFileSync(`${dir}/${checkpointId(2)}.tmp`, 'in the way')
    await expect(worker.commitL2(portable, 2, await image(2))).rejects.toMatchObject({ name: 'RemoteError', details: { code: 'EEXIST' } })
    const { info, state } = await store.restore()
    expect(info.step).toBe(1)
    expect(stateDictsBitEqual(state, makeState(1))).toBe(true)
    await expect(worker.commitL2(portable, 3, { ...first, bytes: new Uint8Array(first.bytes) })).rejects.toMatchObject({ name: 'InvalidParametersError' })
  })

  it('stop() during a write in the thread aborts it there, waits for it, and the previous checkpoint stays', async () => {
    // Small write slices: the thread checks for an abort every 4 KiB of a 16 MiB file (4096 writes), so
    // the abort, sent as soon as the attempt directory appears, lands long before the commit could.
    const store = createCheckpointStore({ keep: 3 }, { storage: createLocalStorage({ dir, writeSliceBytes: 4096 }) })
    const sizes = [4 * 1024 * 1024]
    const snap = createSnapshotter({ l2Every: 1 }, { store })
    toStop.push(snap)
    snap.capture(pinStateDict(makeState(1, sizes)))
    expect(await snap.flush()).toMatchObject({ l2: { step: 1 } })
    const attempt = `${checkpointId(2)}.tmp`
    const watcher = watch(dir)
    try {
      const started = new Promise<void>((resolve) => { watcher.on('change', (_type, name) => { if (name === attempt) resolve() }) })
      snap.capture(pinStateDict(makeState(2, sizes)))
      await started
      await snap.stop()
    } finally {
      watcher.close()
    }
    expect(snap.stats()).toMatchObject({ l2: 1, l2InThread: 1 })
    // stop() resolved only after the thread acknowledged the abort: the attempt never committed.
    expect(await store.latestId()).toBe(checkpointId(1))
    expect((await store.list()).map((c) => c.step)).toEqual([1])
    const { info, state } = await store.restore()
    expect(info.step).toBe(1)
    expect(stateDictsBitEqual(state, makeState(1, sizes))).toBe(true)
  })
})
