import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { stateDictsBitEqual, type Endpoint } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import {
  checkpointId, createCheckpointStore, createHolderClient, createSnapshotHolder, createSnapshotter, inspectCheckpoint, listCheckpoints,
  pinStateDict, restoreBest, restoreCheckpoint, stateFromShardFile, verifyCheckpoint, type L1Source, type SnapshotHolder
} from '../src/index.js'
import { makeState, tempDir } from './helpers.js'

describe('restoreBest and the CLI functions', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let holderEp: Endpoint
  let trainerEp: Endpoint
  let holder: SnapshotHolder
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('phx-restore-'))
    const transport = memoryTransport({ network: createMemoryNetwork() })
    holderEp = await transport.open({ id: 'holder', job: 't' })
    trainerEp = await transport.open({ id: 'trainer', job: 't' })
    holder = createSnapshotHolder({ dir: join(dir, 'shm') }, { endpoint: holderEp })
    await holder.start()
  })
  afterEach(async () => {
    await holder.stop()
    await trainerEp.close()
    await holderEp.close()
    await cleanup()
  })

  it('prefers the newest step, then the fastest tier, and falls back past failures', async () => {
    const store = createCheckpointStore({ dir: join(dir, 'l2'), chunkBytes: 4096 })
    const client = createHolderClient({ owner: 'rank-0', address: holderEp.address }, { endpoint: trainerEp })
    await store.save(makeState(4))
    const snap = createSnapshotter({ l2Every: 0, chunkBytes: 4096 }, { holder: client })
    try {
      snap.capture(pinStateDict(makeState(4)))
      await snap.flush()
      let r = await restoreBest({ holder: client, store })
      expect(r).toMatchObject({ tier: 'L0', step: 4 })
      expect(stateDictsBitEqual(r.state, makeState(4))).toBe(true)
      await store.save(makeState(6))
      r = await restoreBest({ holder: client, store })
      expect(r).toMatchObject({ tier: 'L2', step: 6 })
      const broken: L1Source = { latestStep: async () => 9, restore: async () => { throw new Error('peers gone') } }
      r = await restoreBest({ holder: client, store, l1: broken })
      expect(r).toMatchObject({ tier: 'L2', step: 6, skipped: [{ tier: 'L1', step: 9, error: 'Error: peers gone' }] })
    } finally {
      await snap.stop()
    }
    const empty = createHolderClient({ owner: 'nobody', address: holderEp.address }, { endpoint: trainerEp })
    await expect(restoreBest({ holder: empty })).rejects.toMatchObject({ name: 'NotFoundError' })
  })

  it('lists, verifies (naming the chunk), inspects and restores to a file', async () => {
    const l2 = join(dir, 'l2')
    const store = createCheckpointStore({ dir: l2, chunkBytes: 4096 })
    await store.save(makeState(1))
    const second = await store.save(makeState(2))
    const ls = await listCheckpoints(l2)
    expect(ls.rows.map((r) => [r.id, r.latest, r.status])).toEqual([[checkpointId(2), true, 'ok'], [checkpointId(1), false, 'ok']])
    expect(ls.text).toContain(`${checkpointId(2)}*`)
    expect((await verifyCheckpoint(l2)).ok).toBe(true)
    const ins = await inspectCheckpoint(l2, '2')
    expect(ins.text).toContain('layer2/w')
    expect(ins.manifest.step).toBe(2)
    const fh = await open(join(l2, second.id, 'rank-00000.bin'), 'r+')
    await fh.write(Buffer.from([0xff]), 0, 1, 9000)
    await fh.close()
    const bad = await verifyCheckpoint(l2, second.id)
    expect(bad).toMatchObject({ ok: false, error: { name: 'ChecksumMismatchError', details: { chunk: 2 } } })
    expect(bad.text).toContain('chunk 2')
    const out = join(dir, 'restored.bin')
    const res = await restoreCheckpoint(l2, undefined, out)
    expect(res.info.step).toBe(1)
    expect(res.skipped).toEqual([second.id])
    expect(res.text).toContain(`skipped ${second.id}: ChecksumMismatchError`)
    expect(stateDictsBitEqual(stateFromShardFile(new Uint8Array(await readFile(out))), makeState(1))).toBe(true)
  })
})
