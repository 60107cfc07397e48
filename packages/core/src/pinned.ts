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
  /**
   * Optional: copies `out.length` values of tensor `index`, starting at value `offset`, into `out`
   * (`offset + out.length` must not pass the tensor's size). A drain uses it to copy a large tensor
   * in bounded pieces, so no single synchronous copy on the trainer's thread outlasts its time slice
   * whatever the tensor's size. Ranges read together give exactly what {@link PinnedState.read} gives.
   * Implementations copy straight from the pinned storage where they can (no whole-tensor copy per
   * call); one that must download the tensor first (a GPU backend) caches one download per tensor
   * until another tensor is read or the state is released. Consumers fall back to `read` when absent.
   */
  readRange?(index: number, offset: number, out: Float32Array): Promise<void>
  /** Lets go of the pinned tensors. Idempotent; `read` after release rejects. */
  release(): void
}
