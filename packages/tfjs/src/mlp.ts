/**
 * The reference MNIST model: 784 → hidden (ReLU) → 10, written with tf ops on named variables and
 * initialised from a seed with a portable generator (same initial weights on every backend).
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import { InvalidParametersError } from '@phalanx/core'
import type { MnistBatch } from './datasets.js'
import { softmaxCrossEntropy } from './losses.js'
import type { ModelParam, TfModel } from './model.js'
import { deriveSeed, uniformArray } from './random.js'

/** Tunables of {@link createMnistMlp}. */
export interface MnistMlpInit {
  /** Hidden units. @default 128 */
  hidden?: number
  /** Input features. @default 784 */
  inputs?: number
  /** Classes. @default 10 */
  classes?: number
  /** Initialisation seed. @default 0 */
  seed?: number
}

/** Glorot-uniform `[fanIn, fanOut]` kernel and zero bias as a named pair of variables. */
export function denseParams (prefix: string, fanIn: number, fanOut: number, seed: number): ModelParam[] {
  const limit = Math.sqrt(6 / (fanIn + fanOut))
  const kernel = tf.tensor(uniformArray(seed, fanIn * fanOut, limit), [fanIn, fanOut])
  const bias = tf.zeros([fanOut])
  // A variable shares its initial tensor's buffer; disposing the tensor drops only its reference.
  const params = [
    { name: `${prefix}/kernel`, variable: tf.variable(kernel, true) },
    { name: `${prefix}/bias`, variable: tf.variable(bias, true) }
  ]
  tf.dispose([kernel, bias])
  return params
}

function disposeAll (params: readonly ModelParam[]): void {
  for (const p of params) p.variable.dispose()
}

/**
 * A two-layer perceptron: `dense1/kernel [784, hidden]`, `dense1/bias`, `dense2/kernel
 * [hidden, 10]`, `dense2/bias`. `apply(x [n, 784])` returns logits `[n, 10]`.
 */
export function createMnistMlp (init: MnistMlpInit = {}): TfModel {
  const hidden = init.hidden ?? 128
  const inputs = init.inputs ?? 784
  const classes = init.classes ?? 10
  const seed = init.seed ?? 0
  for (const [k, v] of Object.entries({ hidden, inputs, classes })) {
    if (!Number.isInteger(v) || v < 1) throw new InvalidParametersError(`${k} must be a positive integer, got ${v}`)
  }
  const params = [
    ...denseParams('dense1', inputs, hidden, deriveSeed(seed, 1)),
    ...denseParams('dense2', hidden, classes, deriveSeed(seed, 2))
  ]
  const [w1, b1, w2, b2] = params.map((p) => p.variable) as [tf.Variable, tf.Variable, tf.Variable, tf.Variable]
  return {
    params,
    apply: (x) => tf.tidy(() => tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, w1), b1)), w2), b2)),
    dispose: () => { disposeAll(params) }
  }
}

/** Loss of the MNIST MLP on a batch from `mnistDataset`: softmax cross-entropy on one-hot labels. */
export function mnistLoss (model: TfModel, batch: MnistBatch): tf.Scalar {
  const x = tf.tensor2d(batch.xs, [batch.size, batch.xs.length / batch.size])
  const y = tf.tensor2d(batch.ys, [batch.size, batch.ys.length / batch.size])
  return softmaxCrossEntropy(model.apply(x), y)
}
