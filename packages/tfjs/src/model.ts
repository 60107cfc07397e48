/**
 * The model shape every function of this package works with: an ordered list of named variables
 * and a forward function. Reference models implement it directly; a `tf.LayersModel` is adapted.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import { InvalidParametersError } from '@phalanx/core'

/** A trainable variable with its Phalanx name (stable across processes, unlike tf's variable names). */
export interface ModelParam {
  /** Unique within the model, e.g. `block0/attn/wq` or `0.dense/kernel`. */
  readonly name: string
  readonly variable: tf.Variable
}

/** A model as Phalanx sees it. */
export interface TfModel {
  /** Trainable parameters in a fixed order: the order of the model's `StateDict` and flat gradients. */
  readonly params: readonly ModelParam[]
  /** Forward pass to logits. Called under `tf.tidy`/`tf.variableGrads`; must not keep tensors. */
  apply(x: tf.Tensor): tf.Tensor
  /** Disposes the variables. */
  dispose(): void
}

/** Anything the state and gradient functions accept: a {@link TfModel} or a `tf.LayersModel`. */
export type ModelLike = TfModel | tf.LayersModel

function isLayersModel (model: ModelLike): model is tf.LayersModel {
  return typeof (model as tf.LayersModel).predict === 'function' && Array.isArray((model as tf.LayersModel).layers)
}

/**
 * Adapts a `tf.LayersModel`. Parameter names are `<layer index>.<layer class>/<weight>` (e.g.
 * `1.dense/kernel`): tf's own layer names carry a process-wide counter (`dense_Dense3`) and so
 * differ between processes that build the same model.
 */
export function fromLayersModel (model: tf.LayersModel): TfModel {
  const params: ModelParam[] = []
  model.layers.forEach((layer, i) => {
    for (const w of layer.trainableWeights) {
      const short = w.originalName.split('/').pop() ?? w.originalName
      params.push({ name: `${i}.${layer.getClassName().toLowerCase()}/${short}`, variable: w.read() as tf.Variable })
    }
  })
  assertUniqueNames(params)
  return {
    params,
    apply: (x) => model.apply(x, { training: true }) as tf.Tensor,
    dispose: () => { model.dispose() }
  }
}

/** The {@link TfModel} view of `model` (itself when it already is one). */
export function asTfModel (model: ModelLike): TfModel {
  return isLayersModel(model) ? fromLayersModel(model) : model
}

/** Throws `InvalidParametersError` on an empty or duplicate parameter name. */
export function assertUniqueNames (params: readonly ModelParam[]): void {
  const seen = new Set<string>()
  for (const p of params) {
    if (p.name.length === 0 || seen.has(p.name)) throw new InvalidParametersError(`Parameter name "${p.name}" is empty or duplicated`)
    seen.add(p.name)
  }
}

/** Number of float32 values in all parameters. */
export function paramCount (model: ModelLike): number {
  let n = 0
  for (const p of asTfModel(model).params) n += p.variable.size
  return n
}

/**
 * A tensor holding a copy of `data`. The cpu and webgpu backends keep the caller's array as the
 * tensor's storage (an alias: later writes to it would silently change the tensor), so they get a
 * copy; wasm copies into its own heap anyway.
 */
export function tensorFrom (data: Float32Array, shape: readonly number[]): tf.Tensor {
  return tf.tensor(tf.getBackend() === 'wasm' ? data : data.slice(), [...shape], 'float32')
}
