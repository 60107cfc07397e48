/**
 * Model and optimiser state <-> {@link StateDict}, gradients as flat `Float32Array`s, and the lazy
 * pin used by snapshots. These are the only functions through which the rest of Phalanx reaches tf
 * tensors.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import {
  ClosedError, InvalidParametersError, LayoutMismatchError, assertSameLayout, createStateDict,
  raceSignal, shapeSize, stateDictSpecs, throwIfAborted,
  type AbortOptions, type NamedTensor, type PinnedState, type StateDict, type StateMeta, type TensorSpec
} from '@phalanx/core'
import { asTfModel, tensorFrom, type ModelLike, type TfModel } from './model.js'
import { optimizerSlots, type SlotRef } from './optimizer-slots.js'

/** Layout of `model`'s parameters, then `optimizer`'s slots: the layout of its `StateDict`. */
export function stateSpecs (model: ModelLike, optimizer?: tf.Optimizer): TensorSpec[] {
  const m = asTfModel(model)
  const specs: TensorSpec[] = m.params.map((p) => ({ name: p.name, shape: [...p.variable.shape], dtype: 'float32' }))
  if (optimizer !== undefined) {
    for (const s of optimizerSlots(optimizer, m.params)) specs.push({ name: s.name, shape: [...s.shape], dtype: 'float32' })
  }
  return specs
}

async function readInto (t: tf.Tensor, out: Float32Array): Promise<void> {
  if (t.dtype !== 'float32') throw new InvalidParametersError(`Tensor has dtype ${t.dtype}, only float32 is supported`)
  // On cpu data() returns the tensor's own storage (an alias): copying it out is what makes the
  // result safe to keep. On wasm/webgpu it is already a fresh copy.
  out.set(await t.data() as Float32Array)
}

async function readSlot (slot: SlotRef, out: Float32Array): Promise<void> {
  const scalar = slot.scalar()
  if (scalar !== undefined) { out[0] = scalar; return }
  const t = slot.tensor()
  if (t === undefined) { out.fill(slot.initial); return }
  await readInto(t, out)
}

/** Options of {@link extractState}. */
export interface ExtractOptions extends AbortOptions {
  /**
   * Meta to attach.
   * @default { step: optimizer iterations (0 without optimizer), epoch: 0 }
   */
  meta?: StateMeta
}

/**
 * Copies the model's parameters and the optimiser's slots (see `optimizerSlots`) into a new
 * {@link StateDict}. Slots that do not exist yet (Adam before its first step) are exported as their
 * implicit value (zeros), so the layout never depends on whether a step has run.
 */
export async function extractState (model: ModelLike, optimizer?: tf.Optimizer, options: ExtractOptions = {}): Promise<StateDict> {
  throwIfAborted(options.signal)
  const m = asTfModel(model)
  const tensors: NamedTensor[] = []
  for (const p of m.params) {
    const data = new Float32Array(p.variable.size)
    await raceSignal(readInto(p.variable, data), options.signal)
    tensors.push({ name: p.name, shape: [...p.variable.shape], dtype: 'float32', data })
  }
  let step = 0
  if (optimizer !== undefined) {
    for (const s of optimizerSlots(optimizer, m.params)) {
      const data = new Float32Array(shapeSize(s.shape))
      await raceSignal(readSlot(s, data), options.signal)
      if (s.name.endsWith('/iter')) step = data[0] ?? 0
      tensors.push({ name: s.name, shape: [...s.shape], dtype: 'float32', data })
    }
  }
  return createStateDict(tensors, options.meta ?? { step, epoch: 0 })
}

/**
 * Writes `state` into the model's variables and the optimiser's slots (values are copied; `state`
 * may be reused afterwards). With an optimiser the layout must match {@link stateSpecs} exactly;
 * without one, the parameters must match and any trailing optimiser slots are ignored.
 *
 * @throws LayoutMismatchError naming the first tensor that differs.
 */
export function loadState (model: ModelLike, optimizer: tf.Optimizer | undefined, state: Pick<StateDict, 'tensors'>): void {
  const m = asTfModel(model)
  const expected = stateSpecs(m, optimizer)
  const actual = stateDictSpecs(state)
  if (optimizer === undefined && actual.length > expected.length) {
    assertSameLayout(expected, actual.slice(0, expected.length))
  } else {
    assertSameLayout(expected, actual)
  }
  // Validate every size before touching anything, so a bad state leaves the model unchanged.
  state.tensors.forEach((t, i) => {
    if (i < expected.length && t.data.length !== shapeSize(t.shape)) {
      throw new LayoutMismatchError(`Tensor ${t.name} has ${t.data.length} values for shape [${t.shape.join(',')}]`)
    }
  })
  m.params.forEach((p, i) => {
    const t = tensorFrom((state.tensors[i] as NamedTensor).data, p.variable.shape)
    p.variable.assign(t)
    t.dispose()
  })
  if (optimizer !== undefined) {
    optimizerSlots(optimizer, m.params).forEach((s, j) => {
      s.write((state.tensors[m.params.length + j] as NamedTensor).data)
    })
  }
}

/** A loss: a scalar tensor computed from the model's forward pass on one batch. */
export type LossFn<B> = (model: TfModel, batch: B) => tf.Scalar

/** Result of {@link computeGradients}. */
export interface GradientResult {
  /** The batch loss. */
  loss: number
  /** d loss / d params, flattened in `model.params` order (the order of {@link stateSpecs}). */
  grads: Float32Array
}

/** Options of {@link computeGradients}. */
export interface GradientOptions extends AbortOptions {
  /** Reused output buffer of exactly `paramCount(model)` floats; a new one is allocated otherwise. */
  out?: Float32Array
}

/**
 * Forward + backward on one batch. Deterministic: the same parameters and batch give bit-identical
 * gradients on the same backend. Parameters the loss does not depend on get zero gradients.
 */
export async function computeGradients<B> (model: ModelLike, lossFn: LossFn<B>, batch: B, options: GradientOptions = {}): Promise<GradientResult> {
  throwIfAborted(options.signal)
  const m = asTfModel(model)
  let total = 0
  for (const p of m.params) total += p.variable.size
  const grads = options.out ?? new Float32Array(total)
  if (grads.length !== total) throw new InvalidParametersError(`Gradient buffer has ${grads.length} floats, the model needs ${total}`)
  const { value, grads: byName } = tf.variableGrads(() => lossFn(m, batch), m.params.map((p) => p.variable))
  try {
    let offset = 0
    for (const p of m.params) {
      const g = byName[p.variable.name]
      const view = grads.subarray(offset, offset + p.variable.size)
      if (g === undefined) view.fill(0)
      else await raceSignal(readInto(g, view), options.signal)
      offset += p.variable.size
    }
    const loss = (await raceSignal(value.data(), options.signal))[0] ?? Number.NaN
    return { loss, grads }
  } finally {
    value.dispose()
    tf.dispose(Object.values(byName))
  }
}

/**
 * Applies flat gradients (in `model.params` order) with `optimizer`. Synchronous: when it returns,
 * the variables hold the new values.
 */
export function applyGradients (model: ModelLike, optimizer: tf.Optimizer, flatGrads: Float32Array): void {
  const m = asTfModel(model)
  let total = 0
  for (const p of m.params) total += p.variable.size
  if (flatGrads.length !== total) throw new InvalidParametersError(`Gradient has ${flatGrads.length} floats, the model needs ${total}`)
  let offset = 0
  const named = m.params.map((p) => {
    const tensor = tensorFrom(flatGrads.subarray(offset, offset + p.variable.size), p.variable.shape)
    offset += p.variable.size
    // tf's optimisers look variables up by their engine name and index slots by position.
    return { name: p.variable.name, tensor }
  })
  try {
    optimizer.applyGradients(named)
  } finally {
    tf.dispose(named.map((n) => n.tensor))
  }
}

type Pinned = { kind: 'tensor', tensor: tf.Tensor } | { kind: 'values', values: Float32Array }

/**
 * A second reference to `t`'s storage, without copying: the backend refcount goes up, so when a
 * variable is later assigned a new value its old buffer stays alive for us. tf's own `clone()`
 * does this on cpu only (wasm's Identity kernel copies), so the engine is asked directly; a
 * backend without refcounts falls back to `clone()`.
 */
function pinTensor (t: tf.Tensor): tf.Tensor {
  const engine = tf.engine() as unknown as {
    backend: { incRef?: (dataId: tf.DataId) => void }
    makeTensorFromTensorInfo: (info: tf.TensorInfo) => tf.Tensor
  }
  if (typeof engine.backend.incRef !== 'function') return tf.keep(tf.clone(t))
  engine.backend.incRef(t.dataId)
  return tf.keep(engine.makeTensorFromTensorInfo({ dataId: t.dataId, shape: t.shape, dtype: t.dtype }))
}

/** What `pinState` reaches inside tf's own backends to copy straight out of a tensor's storage. */
interface StorageBackends {
  /** wasm (tfjs-backend-wasm 4.x): a Float32Array view of the tensor's bytes in the wasm heap. */
  typedArrayFromHeap?: (info: tf.TensorInfo) => Float32Array
  /** cpu (tfjs-backend-cpu 4.x): the backend's DataStorage; `values` is the tensor's own array. */
  data?: { get?: (dataId: tf.DataId) => { values?: unknown } | undefined }
}

/**
 * The pinned tensor's values in place, without a copy, where the backend keeps them in this
 * thread's memory: wasm (a view of the heap at the tensor's `memoryOffset`, fetched on every call
 * because a heap growth replaces the heap's ArrayBuffer) and cpu (the stored TypedArray). Undefined
 * elsewhere (webgpu, webgl, tensorflow), where the values must be downloaded.
 */
function storageView (t: tf.Tensor): Float32Array | undefined {
  if (t.dtype !== 'float32') return undefined
  const name = tf.getBackend()
  const backend = tf.backend() as unknown as StorageBackends
  if (name === 'wasm' && typeof backend.typedArrayFromHeap === 'function') return backend.typedArrayFromHeap(t)
  if (name === 'cpu' && typeof backend.data?.get === 'function') {
    const values = backend.data.get(t.dataId)?.values
    if (values instanceof Float32Array && values.length === t.size) return values
  }
  return undefined
}

/**
 * Pins the model's parameters and optimiser slots at a step boundary, in O(number of tensors) and
 * without copying any values (the step that follows assigns new buffers to the variables; the
 * pinned ones stay as they were). Call it after the step's update and before the next one; do not
 * call it inside `tf.tidy`. `read` and `readRange` copy values out later, off the hot path: on wasm
 * and cpu straight from the backend's storage (one copy of just the requested values), elsewhere
 * through one `data()` download per tensor (`readRange` keeps the last download until another
 * tensor is read or the pin is released). `release` drops the references.
 */
export function pinState (model: ModelLike, optimizer: tf.Optimizer | undefined, meta: StateMeta): PinnedState {
  const m = asTfModel(model)
  const specs = stateSpecs(m, optimizer)
  const pinned: Pinned[] = m.params.map((p) => ({ kind: 'tensor', tensor: pinTensor(p.variable) }))
  if (optimizer !== undefined) {
    for (const s of optimizerSlots(optimizer, m.params)) {
      const scalar = s.scalar()
      const t = s.tensor()
      if (scalar !== undefined) pinned.push({ kind: 'values', values: Float32Array.of(scalar) })
      else if (t !== undefined) pinned.push({ kind: 'tensor', tensor: pinTensor(t) })
      else pinned.push({ kind: 'values', values: new Float32Array(shapeSize(s.shape)).fill(s.initial) })
    }
  }
  const frozenMeta = structuredClone(meta)
  let released = false
  // One downloaded tensor for readRange on backends without a storage view.
  let download: { index: number, values: Float32Array } | undefined
  const entry = (index: number): { p: Pinned, spec: TensorSpec, size: number } => {
    if (released) throw new ClosedError('Pinned state was released')
    const p = pinned[index]
    const spec = specs[index]
    if (p === undefined || spec === undefined) throw new InvalidParametersError(`No pinned tensor ${index} (have ${pinned.length})`)
    return { p, spec, size: shapeSize(spec.shape) }
  }
  return {
    specs,
    meta: frozenMeta,
    async read (index, out) {
      const { p, spec, size } = entry(index)
      if (out.length !== size) throw new InvalidParametersError(`Output for ${spec.name} has ${out.length} floats, needs ${size}`)
      if (p.kind === 'values') { out.set(p.values); return }
      const view = storageView(p.tensor)
      if (view !== undefined) { out.set(view); return }
      await readInto(p.tensor, out)
    },
    async readRange (index, offset, out) {
      const { p, spec, size } = entry(index)
      if (!Number.isInteger(offset) || offset < 0 || offset + out.length > size) {
        throw new InvalidParametersError(`Range [${offset}, ${offset + out.length}) is outside ${spec.name} (${size} floats)`)
      }
      const end = offset + out.length
      if (p.kind === 'values') { out.set(p.values.subarray(offset, end)); return }
      const view = storageView(p.tensor)
      if (view !== undefined) { out.set(view.subarray(offset, end)); return }
      if (download?.index !== index) {
        download = undefined
        if (p.tensor.dtype !== 'float32') throw new InvalidParametersError(`Tensor has dtype ${p.tensor.dtype}, only float32 is supported`)
        const values = await p.tensor.data() as Float32Array
        if (released) throw new ClosedError('Pinned state was released')
        download = { index, values }
      }
      out.set(download.values.subarray(offset, end))
    },
    release () {
      if (released) return
      released = true
      download = undefined
      for (const p of pinned) if (p.kind === 'tensor') p.tensor.dispose()
    }
  }
}
