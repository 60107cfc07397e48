/**
 * A plain TensorFlow.js MNIST training loop, no Phalanx: the starting point that
 * examples/train-phalanx.ts wraps with a handful of changed lines (the diff is in docs/elastic.md,
 * "High-level API"). Run: `npx tsx examples/train-plain.ts`.
 */
import { accuracy, createMnistMlp, mnistDataset, mnistLoss, selectBackend, tf, type TfModel } from '@phalanx/tfjs'

const SEED = 1
const STEPS = 100
const BATCH = 256

async function testAccuracy (model: TfModel): Promise<number> {
  const test = await mnistDataset({ split: 'test', seed: SEED })
  const all = test.batch(Array.from({ length: test.size }, (_, i) => i))
  const logits = tf.tidy(() => model.apply(tf.tensor2d(all.xs, [all.size, 784])))
  try { return await accuracy(logits, all.labels) } finally { logits.dispose() }
}

async function trainMnist (): Promise<TfModel> {
  const data = await mnistDataset({ split: 'train', seed: SEED })
  const model = createMnistMlp({ hidden: 128, seed: SEED })
  const optimizer = tf.train.adam(2e-3)
  const order = data.order(0)
  for (let step = 0; step < STEPS; step++) {
    const batch = data.batch(order.subarray((step * BATCH) % (order.length - BATCH), (step * BATCH) % (order.length - BATCH) + BATCH))
    optimizer.minimize(() => mnistLoss(model, batch), false, model.params.map((p) => p.variable))
  }
  return model
}

await selectBackend({ prefer: 'wasm' })
const started = performance.now()
const model = await trainMnist()
const seconds = (performance.now() - started) / 1000
process.stdout.write(`trained ${STEPS} steps of ${BATCH} samples in ${seconds.toFixed(1)} s; test accuracy ${(100 * await testAccuracy(model)).toFixed(1)}%\n`)
model.dispose()
