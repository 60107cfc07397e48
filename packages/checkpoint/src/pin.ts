import { ClosedError, InvalidParametersError, createStateDict, stateDictSpecs, type PinnedState, type StateDict } from '@phalanx/core'

/**
 * Pins a plain {@link StateDict}: copies its tensors (and meta) now, so the caller may keep changing
 * its arrays, and serves them through the {@link PinnedState} contract a snapshot drain consumes.
 *
 * The copy costs one memcpy of the state on the caller's thread. Producers whose tensors are
 * immutable between steps (the tf bridge) pin by reference count instead and cost ~1 ms whatever the size.
 */
export function pinStateDict (state: StateDict): PinnedState {
  createStateDict(state.tensors, state.meta)
  let copies: Float32Array[] | undefined = state.tensors.map((t) => t.data.slice())
  const specs = stateDictSpecs(state)
  const meta = structuredClone(state.meta)
  return {
    specs,
    meta,
    async read (index, out) {
      const src = copies?.[index]
      if (copies === undefined) throw new ClosedError('Pinned state was released')
      if (src === undefined) throw new InvalidParametersError(`No pinned tensor ${index}`)
      if (out.length !== src.length) throw new InvalidParametersError(`Output has ${out.length} values, tensor ${index} has ${src.length}`)
      out.set(src)
    },
    async readRange (index, offset, out) {
      const src = copies?.[index]
      if (copies === undefined) throw new ClosedError('Pinned state was released')
      if (src === undefined) throw new InvalidParametersError(`No pinned tensor ${index}`)
      if (!Number.isInteger(offset) || offset < 0 || offset + out.length > src.length) throw new InvalidParametersError(`Range [${offset}, ${offset + out.length}) is outside tensor ${index} (${src.length} values)`)
      out.set(src.subarray(offset, offset + out.length))
    },
    release () { copies = undefined }
  }
}
