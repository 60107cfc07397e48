/**
 * Softmax cross-entropy losses and accuracy, written with ops every backend has gradients for.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'

/** Mean softmax cross-entropy of `logits` `[n, c]` against one-hot (or soft) `labels` `[n, c]`. */
export function softmaxCrossEntropy (logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const c = logits.shape[logits.shape.length - 1] as number
    const flat = logits.reshape([-1, c])
    return tf.neg(tf.mean(tf.sum(tf.mul(labels.reshape([-1, c]), tf.logSoftmax(flat)), -1))) as tf.Scalar
  })
}

/**
 * Mean softmax cross-entropy of `logits` `[..., c]` against integer class ids `labels` `[...]`
 * (int32). Uses a one-hot product rather than `gather`, whose gradient some backends lack.
 */
export function sparseSoftmaxCrossEntropy (logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const c = logits.shape[logits.shape.length - 1] as number
    const oneHot = tf.oneHot(labels.reshape([-1]).toInt(), c).toFloat()
    return softmaxCrossEntropy(logits.reshape([-1, c]), oneHot)
  })
}

/** Fraction of rows of `logits` `[n, c]` whose argmax equals `labels` (class ids). */
export async function accuracy (logits: tf.Tensor, labels: ArrayLike<number>): Promise<number> {
  const predicted = tf.tidy(() => tf.argMax(logits.reshape([-1, logits.shape[logits.shape.length - 1] as number]), -1))
  try {
    const p = await predicted.data()
    let hits = 0
    for (let i = 0; i < p.length; i++) if (p[i] === labels[i]) hits++
    return p.length === 0 ? 0 : hits / p.length
  } finally {
    predicted.dispose()
  }
}
