import { open, readFile, readdir, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { flattenStateDict, stateDictsBitEqual } from '@phalanx/core'
import { createCheckpointStore, layoutOf, layoutSize, piecesOfRange, shardRange, checkpointId, type CheckpointStore } from '../src/index.js'
import { makeState, tempDir } from './helpers.js'

async function flipByte (file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, at)
    b[0] = (b[0] as number) ^ 0x10
    await fh.write(b, 0, 1, at)
  } finally {
    await fh.close()
  }
}

describe('checkpoint store (L2)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let store: CheckpointStore
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir())
    store = createCheckpointStore({ dir, keep: 2, chunkBytes: 4096 })
  })
  afterEach(async () => { await cleanup() })

  it('saves and restores bit-exact with meta, aligned tensors, LATEST and keep', async () => {
    for (const step of [1, 2, 3]) await store.save(makeState(step))
    const list = await store.list()
    expect(list.map((c) => c.step)).toEqual([3, 2])
    expect(await store.latestId()).toBe(checkpointId(3))
    const { state, info, skipped } = await store.restore()
    expect(info.step).toBe(3)
    expect(skipped).toEqual([])
    expect(stateDictsBitEqual(state, makeState(3))).toBe(true)
    expect(state.meta).toEqual(makeState(3).meta)
    const m = await store.manifest(info.id)
    expect(m.tensors.every((t) => t.offset % 64 === 0)).toBe(true)
    expect(m.files[0]?.crcs.length).toBe(Math.ceil((m.files[0]?.bytes ?? 0) / 4096))
    expect(await readdir(dir)).toEqual(expect.arrayContaining(['LATEST', checkpointId(2), checkpointId(3)]))
    expect(await readdir(dir)).not.toContain(checkpointId(1))
  })

  it('names the chunk of a flipped byte and falls back to the previous checkpoint', async () => {
    await store.save(makeState(1))
    const info = await store.save(makeState(2))
    const m = await store.manifest(info.id)
    const t = m.tensors.find((x) => x.name === 'layer2/w')
    if (t === undefined) throw new Error('layout')
    const at = t.offset + 4 * 1500
    await flipByte(join(dir, info.id, t.file), at)
    await expect(store.verify(info.id)).rejects.toMatchObject({ name: 'ChecksumMismatchError', details: { chunk: Math.floor(at / 4096), file: expect.stringContaining(t.file) } })
    const { info: restored, state, skipped } = await store.restore()
    expect(restored.step).toBe(1)
    expect(stateDictsBitEqual(state, makeState(1))).toBe(true)
    expect(skipped).toEqual([{ id: info.id, error: expect.objectContaining({ name: 'ChecksumMismatchError' }) }])
  })

  it('detects truncated files and corrupt manifests', async () => {
    await store.save(makeState(1))
    const second = await store.save(makeState(2))
    const file = join(dir, second.id, 'rank-00000.bin')
    await truncate(file, second.bytes - 100)
    await expect(store.verify(second.id)).rejects.toMatchObject({ name: 'CorruptCheckpointError', details: { expected: second.bytes, actual: second.bytes - 100 } })
    expect((await store.restore()).info.step).toBe(1)
    const mf = join(dir, checkpointId(1), 'manifest.json')
    const text = await readFile(mf, 'utf8')
    await writeFile(mf, text.replace('"step":1', '"step":7'))
    await expect(store.verify(checkpointId(1))).rejects.toMatchObject({ name: 'CorruptCheckpointError' })
    await expect(store.restore()).rejects.toMatchObject({ name: 'NotFoundError' })
  })

  it('ignores uncommitted attempts and verifies the header against the manifest', async () => {
    await store.save(makeState(5))
    const state = makeState(6)
    const layout = layoutOf(state.tensors)
    await store.writeShard({ step: 6, meta: state.meta, layout, pieces: piecesOfRange(layout, { offset: 0, length: layoutSize(layout) }, { tensors: state.tensors }) })
    expect((await store.list()).map((c) => c.step)).toEqual([5])
    expect((await store.restore()).info.step).toBe(5)
    expect(await store.verify(checkpointId(5))).toMatchObject({ files: 1 })
  })

  it('commits a sharded multi-rank checkpoint from a shared directory and reshards it exactly', async () => {
    const shared = createCheckpointStore({ dir, chunkBytes: 4096, commitTimeoutMs: 5000, pollIntervalMs: 5 })
    const full = makeState(9, [3001, 17, 999, 64])
    const flat = flattenStateDict(full)
    const layout = layoutOf(full.tensors)
    const total = layoutSize(layout)
    const W = 4
    const ranks = Array.from({ length: W }, (_, r) => r)
    // Each rank holds only its shard of the flat space (a sharded optimizer state).
    const commit = shared.commit(9, { worldSize: W })
    await Promise.all(ranks.map(async (rank) => {
      const range = shardRange(total, rank, W)
      const source = flat.slice(range.offset, range.offset + range.length)
      await createCheckpointStore({ dir, chunkBytes: 4096 }).writeShard({ step: 9, rank, worldSize: W, meta: full.meta, layout, pieces: piecesOfRange(layout, range, { source }) })
    }))
    const info = await commit
    expect(info.worldSize).toBe(W)
    const reader = await shared.open(info.id)
    for (const newWorld of [3, 6, 1]) {
      const parts = await Promise.all(Array.from({ length: newWorld }, async (_, r) => {
        const range = shardRange(total, r, newWorld)
        return await reader.readSlice(range.offset, range.length)
      }))
      const joined = new Float32Array(total)
      let at = 0
      for (const p of parts) { joined.set(p, at); at += p.length }
      expect(Buffer.from(joined.buffer).equals(Buffer.from(flat.buffer))).toBe(true)
    }
    const restored = await shared.restore()
    expect(stateDictsBitEqual(restored.state, full)).toBe(true)
    expect(Buffer.from((await reader.readTensor('layer2/w')).buffer).equals(Buffer.from((full.tensors[2]?.data as Float32Array).slice().buffer))).toBe(true)
  })

  it('times out a commit when a rank never writes, and rejects incomplete coverage', async () => {
    const s = createCheckpointStore({ dir, chunkBytes: 4096, commitTimeoutMs: 30, pollIntervalMs: 5 })
    const full = makeState(3)
    const layout = layoutOf(full.tensors)
    const total = layoutSize(layout)
    const r0 = await s.writeShard({ step: 3, rank: 0, worldSize: 2, meta: full.meta, layout, pieces: piecesOfRange(layout, shardRange(total, 0, 2), { tensors: full.tensors }) })
    await expect(s.commit(3, { worldSize: 2 })).rejects.toMatchObject({ name: 'TimeoutError', details: { missing: [1] } })
    await expect(s.commit(3, { worldSize: 1, records: [r0] })).rejects.toMatchObject({ name: 'CorruptCheckpointError' })
    expect(await s.list()).toEqual([])
  })
})
