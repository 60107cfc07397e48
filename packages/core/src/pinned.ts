import type { StateMeta, TensorSpec } from './state-dict.js'

/**
 * State captured at a step boundary without copying it yet: the producer (the tf bridge) keeps the
 * tensors alive (a clone is a refcount, about a millisecond whatever the size) and a consumer (a
 * snapshot drain) reads them later, off the trainer's hot path, tensor by tensor into its own
 * buffers. The trainer never waits for the read.
 */
export interface PinnedState {
  /** Layout of the pinned tensors, in order. */
  readonly specs: readonly TensorSpec[]
  /** Step, epoch, cursor, RNG and schedule state at the moment of the pin. */
  readonly meta: StateMeta
  /** Copies tensor `index`'s values into `out` (exactly its size). May wait for a device download. */
  read(index: number, out: Float32Array): Promise<void>
  /** Lets go of the pinned tensors. Idempotent; `read` after release rejects. */
  release(): void
}
