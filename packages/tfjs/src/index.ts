/**
 * @packageDocumentation
 * The TensorFlow.js bridge of Phalanx, and the only package that touches tf tensors.
 *
 * - **Backend ladder**: {@link selectBackend} picks `tensorflow` (tfjs-node) → `webgpu` (Dawn, real
 *   adapters only) → `wasm` (with the fast `BatchMatMul` override) → `cpu`, and says why.
 * - **State**: {@link extractState} / {@link loadState} move model weights and optimiser slots
 *   to and from a `StateDict`; {@link computeGradients} / {@link applyGradients} work on flat
 *   `Float32Array` gradients; {@link pinState} captures a step boundary without copying.
 * - **Data**: {@link mnistDataset} and {@link charCorpus}, sample-indexed, no download;
 *   {@link sampleOrder} gives every worker the same epoch order.
 * - **Reference models**: {@link createMnistMlp} and {@link createTransformerLm} (with
 *   pipeline stages).
 *
 * @example
 * ```ts
 * import { selectBackend, createMnistMlp, mnistDataset, mnistLoss, computeGradients, applyGradients, tf } from '@phalanx/tfjs'
 *
 * await selectBackend({ prefer: 'wasm' })
 * const data = await mnistDataset({ split: 'train', seed: 1 })
 * const model = createMnistMlp({ hidden: 128 })
 * const optimizer = tf.train.adam(1e-3)
 * const order = data.order(0)
 * const { loss, grads } = await computeGradients(model, mnistLoss, data.batch(order.subarray(0, 64)))
 * applyGradients(model, optimizer, grads)
 * ```
 */
import * as tf from '@tensorflow/tfjs'

/** The TensorFlow.js namespace this package is built on (use it to build models and optimisers). */
export { tf }
export * from './backend.js'
export * from './model.js'
export * from './optimizer-slots.js'
export * from './state.js'
export * from './losses.js'
export * from './mlp.js'
export * from './transformer.js'
export * from './datasets.js'
export * from './random.js'
export type { GpuAdapterInfo } from './webgpu-setup.js'
