import { InvalidParametersError, LayoutMismatchError } from './errors.js'

/** The element type of every tensor Phalanx moves, stores or aggregates. */
export type DType = 'float32'

/** Any value that survives `JSON.stringify` / msgpack unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** Name, shape and dtype of a tensor: what two state dicts must share to be combined. */
export interface TensorSpec {
  /** Unique within a state dict, stable across processes (e.g. `dense_1/kernel`, `adam/m/dense_1/kernel`). */
  readonly name: string
  readonly shape: readonly number[]
  readonly dtype: DType
}

/** A named tensor whose values live in a plain `Float32Array` (row-major, little-endian). */
export interface NamedTensor extends TensorSpec {
  readonly data: Float32Array
}

/**
 * Small JSON-able state that travels with the tensors. `step` and `epoch` are always present;
 * the rest is what a restored trainer needs to continue exactly where it stopped.
 */
export interface StateMeta {
  /** Number of committed optimiser steps. */
  step: number
  /** Membership epoch the state was committed in. */
  epoch: number
  /** Index of the next global sample (or micro-batch) to train on. */
  cursor?: number
  /** Serialised RNG state. */
  rng?: JsonValue
  /** Learning-rate schedule state. */
  lrSchedule?: JsonValue
  /** Anything else a package needs (keep it small: it is sent with every heal). */
  [key: string]: JsonValue | undefined
}

/**
 * The unit of state in Phalanx: an ordered list of named float32 tensors plus {@link StateMeta}.
 * Model weights, optimiser slots, gradients and snapshots are all `StateDict`s; algorithms work on
 * the `Float32Array`s and never on framework tensors.
 */
export interface StateDict {
  readonly tensors: readonly NamedTensor[]
  meta: StateMeta
}

/** Number of elements of a tensor of this shape. Throws on negative or fractional dimensions. */
export function shapeSize (shape: readonly number[]): number {
  let n = 1
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new InvalidParametersError(`Invalid dimension ${d} in shape [${shape.join(', ')}]`)
    n *= d
  }
  return n
}

/**
 * Builds a validated state dict: names unique and non-empty, each `data.length` matching its shape.
 * The arrays are kept, not copied.
 */
export function createStateDict (tensors: readonly NamedTensor[], meta: StateMeta = { step: 0, epoch: 0 }): StateDict {
  const seen = new Set<string>()
  for (const t of tensors) {
    if (t.name.length === 0) throw new InvalidParametersError('Tensor name must not be empty')
    if (seen.has(t.name)) throw new InvalidParametersError(`Duplicate tensor name "${t.name}"`)
    seen.add(t.name)
    if (t.dtype !== 'float32') throw new InvalidParametersError(`Tensor "${t.name}" has unsupported dtype ${String(t.dtype)}`)
    const expected = shapeSize(t.shape)
    if (t.data.length !== expected) {
      throw new InvalidParametersError(`Tensor "${t.name}" has ${t.data.length} values, shape [${t.shape.join(', ')}] needs ${expected}`)
    }
  }
  return { tensors, meta }
}

/** Total number of float32 elements over all tensors. */
export function stateDictSize (state: Pick<StateDict, 'tensors'>): number {
  let n = 0
  for (const t of state.tensors) n += t.data.length
  return n
}

/** The layout (specs without data) of a state dict. */
export function stateDictSpecs (state: Pick<StateDict, 'tensors'>): TensorSpec[] {
  return state.tensors.map(({ name, shape, dtype }) => ({ name, shape: [...shape], dtype }))
}

/** Throws {@link LayoutMismatchError} naming the first difference when `a` and `b` differ in layout. */
export function assertSameLayout (a: readonly TensorSpec[], b: readonly TensorSpec[]): void {
  if (a.length !== b.length) throw new LayoutMismatchError(`Tensor count differs: ${a.length} vs ${b.length}`)
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as TensorSpec
    const y = b[i] as TensorSpec
    if (x.name !== y.name || x.dtype !== y.dtype || x.shape.length !== y.shape.length || x.shape.some((d, j) => d !== y.shape[j])) {
      throw new LayoutMismatchError(`Tensor ${i} differs: ${x.name}[${x.shape.join(',')}] vs ${y.name}[${y.shape.join(',')}]`,
        { details: { index: i, a: x.name, b: y.name } })
    }
  }
}

/**
 * Copies every tensor, in order, into one flat array (reusing `out` when given, which must have
 * exactly {@link stateDictSize} elements).
 */
export function flattenStateDict (state: Pick<StateDict, 'tensors'>, out?: Float32Array): Float32Array {
  const size = stateDictSize(state)
  const flat = out ?? new Float32Array(size)
  if (flat.length !== size) throw new InvalidParametersError(`Output has ${flat.length} elements, state needs ${size}`)
  let offset = 0
  for (const t of state.tensors) {
    flat.set(t.data, offset)
    offset += t.data.length
  }
  return flat
}

/** Copies a flat array produced by {@link flattenStateDict} back into the tensors of `state`, in place. */
export function unflattenInto (state: Pick<StateDict, 'tensors'>, flat: Float32Array): void {
  const size = stateDictSize(state)
  if (flat.length !== size) throw new InvalidParametersError(`Flat array has ${flat.length} elements, state needs ${size}`)
  let offset = 0
  for (const t of state.tensors) {
    t.data.set(flat.subarray(offset, offset + t.data.length))
    offset += t.data.length
  }
}

/** A deep copy: new arrays, same values, meta cloned through JSON. */
export function cloneStateDict (state: StateDict): StateDict {
  return {
    tensors: state.tensors.map((t) => ({ name: t.name, shape: [...t.shape], dtype: t.dtype, data: t.data.slice() })),
    meta: structuredClone(state.meta)
  }
}

/**
 * True when both have the same layout and every value is bit-identical (NaN payloads and the sign
 * of zero included). This is the check behind the "bit-identical after failures" promise.
 */
export function stateDictsBitEqual (a: Pick<StateDict, 'tensors'>, b: Pick<StateDict, 'tensors'>): boolean {
  if (a.tensors.length !== b.tensors.length) return false
  for (let i = 0; i < a.tensors.length; i++) {
    const x = a.tensors[i] as NamedTensor
    const y = b.tensors[i] as NamedTensor
    if (x.name !== y.name || x.data.length !== y.data.length) return false
    const xi = new Uint32Array(x.data.buffer, x.data.byteOffset, x.data.length)
    const yi = new Uint32Array(y.data.buffer, y.data.byteOffset, y.data.length)
    for (let j = 0; j < xi.length; j++) if (xi[j] !== yi[j]) return false
  }
  return true
}
