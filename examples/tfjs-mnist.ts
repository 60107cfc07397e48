/**
 * Trains the reference MNIST MLP for a few hundred steps on the wasm backend (with the fast
 * BatchMatMul override), using the Phalanx step primitives: sample-indexed data in a seeded global
 * order, flat Float32Array gradients, a StateDict round trip and a lazy pin. Prints test accuracy.
 *
 *   npx tsx examples/tfjs-mnist.ts [steps]
 */
import { stateDictSize } from '@phalanx/core'
import {
  accuracy, applyGradients, computeGradients, createMnistMlp, extractState, loadState, mnistDataset,
  mnistLoss, pinState, selectBackend, tf
} from '@phalanx/tfjs'

const steps = Number(process.argv[2] ?? 300)
const batchSize = 64
const seed = 1

const backend = await selectBackend({ prefer: 'wasm' })
const train = await mnistDataset({ split: 'train', seed })
const test = await mnistDataset({ split: 'test', seed })
const model = createMnistMlp({ hidden: 128, seed })
const optimizer = tf.train.adam(2e-3)

async function testAccuracy (): Promise<number> {
  const all = test.batch(Array.from({ length: test.size }, (_, i) => i))
  const logits = tf.tidy(() => model.apply(tf.tensor2d(all.xs, [all.size, 784])))
  try {
    return await accuracy(logits, all.labels)
  } finally {
    logits.dispose()
  }
}

process.stdout.write(`backend ${backend.name} (${backend.reason}; matmul override: ${backend.matMulOverride}); train ${train.size}, test ${test.size}\n`)
process.stdout.write(`accuracy before training: ${(100 * await testAccuracy()).toFixed(1)}%\n`)
const started = performance.now()
let cursor = 0
let epoch = 0
let order = train.order(epoch)
for (let step = 1; step <= steps; step++) {
  if (cursor + batchSize > order.length) { epoch++; cursor = 0; order = train.order(epoch) }
  const batch = train.batch(order.subarray(cursor, cursor + batchSize))
  cursor += batchSize
  const { loss, grads } = await computeGradients(model, mnistLoss, batch)
  applyGradients(model, optimizer, grads)
  if (step % 100 === 0) process.stdout.write(`step ${step}: loss ${loss.toFixed(4)}\n`)
}
const ms = (performance.now() - started) / steps
process.stdout.write(`${steps} steps, ${ms.toFixed(1)} ms/step\n`)

// A step boundary: pin (no copy), then read it back as a snapshot would, and restore from a StateDict.
const pin = pinState(model, optimizer, { step: steps, epoch, cursor })
const state = await extractState(model, optimizer, { meta: { step: steps, epoch, cursor } })
const first = new Float32Array(state.tensors[0]?.data.length ?? 0)
await pin.read(0, first)
pin.release()
loadState(model, optimizer, state)
process.stdout.write(`state: ${state.tensors.length} tensors, ${stateDictSize(state)} floats; pinned copy matches: ${first.every((v, i) => v === state.tensors[0]?.data[i])}\n`)
process.stdout.write(`test accuracy after ${steps} steps: ${(100 * await testAccuracy()).toFixed(1)}%\n`)
model.dispose()
optimizer.dispose()
