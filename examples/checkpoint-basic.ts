/**
 * Lazy multi-level checkpoints in one process: a toy training loop snapshots every step to an L0
 * snapshot holder (here in-process over the memory transport; in production a separate process on
 * an ipc:// ZeroMQ endpoint) and every 5th snapshot to durable L2 checkpoints on disk. Then the
 * "crashed" trainer restores from the best tier, and the L2 checkpoint is resharded to 3 workers.
 *
 * Run: npx tsx examples/checkpoint-basic.ts
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStateDict, flattenStateDict, type StateDict } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import {
  createCheckpointStore, createHolderClient, createSnapshotHolder, createSnapshotter, listCheckpoints,
  pinStateDict, restoreBest, shardRange, verifyCheckpoint
} from '@phalanx/checkpoint'

const dir = await mkdtemp(join(tmpdir(), 'phalanx-example-'))
const transport = memoryTransport({ network: createMemoryNetwork() })
const holderEndpoint = await transport.open({ id: 'holder', job: 'example' })
const trainerEndpoint = await transport.open({ id: 'trainer-0', job: 'example' })
const holder = createSnapshotHolder({ dir: join(dir, 'shm') }, { endpoint: holderEndpoint })
await holder.start()

const store = createCheckpointStore({ dir: join(dir, 'ckpt'), keep: 2 })
const client = createHolderClient({ owner: 'rank-0', address: holderEndpoint.address }, { endpoint: trainerEndpoint })
const snapshotter = createSnapshotter({ l2Every: 5 }, { holder: client, store })

try {
  // A toy "model": two tensors updated by a fixed rule each step.
  let state: StateDict = createStateDict([
    { name: 'dense/kernel', shape: [256, 128], dtype: 'float32', data: new Float32Array(256 * 128).fill(0.5) },
    { name: 'dense/bias', shape: [128], dtype: 'float32', data: new Float32Array(128) }
  ], { step: 0, epoch: 0, cursor: 0 })

  for (let step = 1; step <= 12; step++) {
    state = createStateDict(state.tensors.map((t) => ({ ...t, data: t.data.map((v, i) => v * 0.99 + (i % 7) * 1e-3) })), { step, epoch: 0, cursor: step * 64 })
    // Returns at once; the drain runs in the background. Skipped when the previous one is still draining.
    const { accepted } = snapshotter.capture(pinStateDict(state))
    if (!accepted) console.log(`step ${step}: snapshot skipped (previous still draining)`)
    await snapshotter.flush() // only so this demo's output is deterministic; a trainer would not wait
  }
  console.log('snapshotter stats:', snapshotter.stats())

  // The trainer "crashes"; its replacement restores from the best tier.
  const restored = await restoreBest({ holder: client, store })
  console.log(`restored step ${restored.step} from ${restored.tier}`)

  // Durable checkpoints: list and verify them as the CLI does.
  console.log((await listCheckpoints(join(dir, 'ckpt'))).text)
  console.log((await verifyCheckpoint(join(dir, 'ckpt'))).text)

  // Reshard the newest L2 checkpoint onto 3 workers: each reads its slice of the flat state.
  const reader = await store.open((await store.list())[0]?.id ?? '')
  const total = reader.info.elements
  const flat = flattenStateDict((await store.restore()).state)
  for (let rank = 0; rank < 3; rank++) {
    const { offset, length } = shardRange(total, rank, 3)
    const slice = await reader.readSlice(offset, length)
    const exact = slice.every((v, i) => Object.is(v, flat[offset + i]))
    console.log(`worker ${rank}/3 owns [${offset}, ${offset + length}): exact=${exact}`)
  }
} finally {
  await snapshotter.stop()
  await holder.stop()
  await trainerEndpoint.close()
  await holderEndpoint.close()
  await rm(dir, { recursive: true, force: true })
}
