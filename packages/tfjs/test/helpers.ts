import { type MnistBatch, type SequenceBatch, createRng } from '@phalanx/tfjs'

/** A deterministic synthetic MNIST-shaped batch (no dataset load needed). */
export function syntheticMnistBatch (size: number, seed: number): MnistBatch {
  const rng = createRng(seed)
  const batch: MnistBatch = { size, xs: new Float32Array(size * 784), ys: new Float32Array(size * 10), labels: new Uint8Array(size) }
  for (let i = 0; i < batch.xs.length; i++) batch.xs[i] = rng.next()
  for (let i = 0; i < size; i++) {
    const label = rng.int(10)
    batch.labels[i] = label
    batch.ys[i * 10 + label] = 1
  }
  return batch
}

/** A deterministic synthetic token batch. */
export function syntheticTokens (size: number, seqLen: number, vocab: number, seed: number): SequenceBatch {
  const rng = createRng(seed)
  const batch: SequenceBatch = { size, seqLen, inputs: new Int32Array(size * seqLen), targets: new Int32Array(size * seqLen) }
  for (let i = 0; i < batch.inputs.length; i++) {
    batch.inputs[i] = rng.int(vocab)
    batch.targets[i] = rng.int(vocab)
  }
  return batch
}

/** Largest absolute difference, scaled by max(1, |b|). */
export function maxRelDiff (a: Float32Array, b: Float32Array): number {
  let worst = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number)) / Math.max(1, Math.abs(b[i] as number))
    if (d > worst || Number.isNaN(d)) worst = Number.isNaN(d) ? Infinity : d
  }
  return worst
}
