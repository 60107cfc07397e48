/**
 * @packageDocumentation
 * Lazy asynchronous multi-level checkpoints and the snapshot holder process.
 *
 * - **L2 durable checkpoints**: {@link createCheckpointStore} writes per-rank data files with 64 B
 *   aligned tensors and a manifest committed last (tmp + fsync + rename + directory fsync), keeps the
 *   last K, verifies every chunk's CRC-32C and falls back to the newest checkpoint that verifies.
 * - **Lazy capture**: {@link createSnapshotter} takes a {@link PinnedState} and returns at once; a
 *   background drain stages it into a reused double-buffered pool, checksums it in a worker thread and
 *   hands it to the L0 holder and, every Nth time, to the L2 store (written and committed by that
 *   worker thread, from the shared staging memory).
 * - **L0 snapshot holder**: {@link createSnapshotHolder} keeps the last committed snapshots of each
 *   trainer in tmpfs slot files, outside the trainer's process, and serves restores.
 * - **Restore and reshard**: {@link restoreBest} picks the best tier; readers expose
 *   `readSlice(globalOffset, length)` so a state saved by W ranks restores onto any other world size.
 *
 * @example
 * ```ts
 * import { createCheckpointStore } from '@phalanx/checkpoint'
 *
 * const store = createCheckpointStore({ dir: '/var/lib/phalanx/ckpt', keep: 3 })
 * await store.save(state)
 * const { state: restored } = await store.restore()
 * ```
 */
import type { PinnedState } from '@phalanx/core'
export type { PinnedState }
export * from './format.js'
export * from './manifest.js'
export * from './pin.js'
export * from './reshard.js'
export * from './storage.js'
export * from './store.js'
export * from './checksum-worker.js'
export * from './snapshotter.js'
export * from './holder.js'
export * from './holder-client.js'
export * from './restore.js'
export * from './cli.js'
