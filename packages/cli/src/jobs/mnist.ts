/**
 * The built-in MNIST job: everything a `phalanx worker` process needs to call `train()` of
 * `@phalanx/worker` — the reference MLP, an optimiser, the sample-indexed training split, the loss,
 * and an `evaluate()` giving test accuracy. Every worker built from the same init starts from the
 * same weights (seeded initialisation) and reads the same samples (seeded split and order).
 *
 * @module
 */
import { componentLogger, type AbortOptions, type Logger } from '@phalanx/core'
import {
  accuracy, createMnistMlp, mnistDataset, mnistLoss, selectBackend, softmaxCrossEntropy, tf,
  type BackendName, type BackendSelection, type LossFn, type MnistBatch, type MnistDataset, type TfModel
} from '@phalanx/tfjs'

/** Tunables of {@link createMnistJob}. */
export interface MnistJobInit {
  /**
   * Seed of the weight initialisation, the train/test split and the data order (pass the job seed).
   * @default 0
   */
  seed?: number
  /**
   * Hidden units of the 784 → hidden → 10 MLP.
   * @default 128
   */
  hidden?: number
  /**
   * Adam learning rate.
   * @default 0.002
   */
  learningRate?: number
  /**
   * Compute backend. `wasm` (with the fast `BatchMatMul` override) is bit-reproducible across
   * processes and fast for this model; `auto` walks the backend ladder.
   * @default 'wasm'
   */
  backend?: 'auto' | BackendName
  /**
   * Test samples `evaluate()` uses (the first of the test split; at most its 2000).
   * @default 2000
   */
  testSamples?: number
}

/** Collaborators of {@link createMnistJob}. */
export interface MnistJobComponents {
  /** Receives the backend line. @default silent */
  logger?: Logger
}

/**
 * The parts of a `train()` spec for MNIST, plus the chosen backend. Spread it into the spec:
 * `train({ ...job, coordinatorAddress }, { endpoint })`.
 */
export interface MnistJob {
  /** The MLP (`dense1/kernel`, `dense1/bias`, `dense2/kernel`, `dense2/bias`). */
  readonly model: TfModel
  /** Adam with {@link MnistJobInit.learningRate}. */
  readonly optimizer: tf.Optimizer
  /** The training split (8000 digits). */
  readonly data: MnistDataset
  /** Softmax cross-entropy on one-hot labels. */
  readonly loss: LossFn<MnistBatch>
  /** Seed of the data order. */
  readonly seed: number
  /** Test-split accuracy (fraction in [0, 1]) and mean loss of the model as it is now. */
  evaluate(): Promise<{ accuracy: number, loss: number }>
  /** The compute backend in use and why. */
  readonly backend: BackendSelection
  /** Disposes the model and the optimiser. */
  dispose(): void
}

/**
 * Creates the built-in MNIST job: selects the backend, loads both splits (about half a second),
 * and builds the seeded model and optimiser. Sized so that four workers on two cores train about
 * five or more steps a second with a global batch of 256 in micro-batches of 32 (see docs/elastic.md).
 */
export async function createMnistJob (init: MnistJobInit = {}, components: MnistJobComponents = {}, options: AbortOptions = {}): Promise<MnistJob> {
  const seed = init.seed ?? 0
  const log = componentLogger(components.logger, 'mnist-job')
  const backend = await selectBackend({ prefer: init.backend ?? 'wasm' }, { logger: log }, options)
  const data = await mnistDataset({ split: 'train', seed }, options)
  const test = await mnistDataset({ split: 'test', seed }, options)
  const n = Math.max(1, Math.min(test.size, init.testSamples ?? 2000))
  const testBatch = test.batch(Array.from({ length: n }, (_, i) => i))
  const model = createMnistMlp({ hidden: init.hidden ?? 128, seed })
  const optimizer = tf.train.adam(init.learningRate ?? 0.002)
  return {
    model,
    optimizer,
    data,
    loss: mnistLoss,
    seed,
    backend,
    async evaluate () {
      const x = tf.tensor2d(testBatch.xs, [n, testBatch.xs.length / n])
      const y = tf.tensor2d(testBatch.ys, [n, testBatch.ys.length / n])
      const logits = tf.tidy(() => model.apply(x))
      const loss = softmaxCrossEntropy(logits, y)
      try {
        return { accuracy: await accuracy(logits, testBatch.labels), loss: (await loss.data())[0] ?? Number.NaN }
      } finally {
        tf.dispose([x, y, logits, loss])
      }
    },
    dispose () {
      model.dispose()
      optimizer.dispose()
    }
  }
}
