/**
 * A tiny decoder-only transformer language model (pre-LayerNorm, causal multi-head attention,
 * ReLU MLP) on plain tf ops and named variables, split into pipeline stages.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import { InvalidParametersError } from '@phalanx/core'
import type { SequenceBatch } from './datasets.js'
import { sparseSoftmaxCrossEntropy } from './losses.js'
import type { ModelParam, TfModel } from './model.js'
import { deriveSeed, normalArray } from './random.js'

/** Tunables of {@link createTransformerLm}. */
export interface TransformerLmInit {
  /** Vocabulary size. */
  vocab: number
  /** Model width. @default 64 */
  dModel?: number
  /** Attention heads (must divide `dModel`). @default 4 */
  heads?: number
  /** Transformer blocks. @default 2 */
  layers?: number
  /** Maximum sequence length (positional table size). @default 64 */
  seqLen?: number
  /** MLP hidden width. @default 4 × dModel */
  ffn?: number
  /** Initialisation seed. @default 0 */
  seed?: number
}

/** One pipeline stage of a {@link TransformerLm}. */
export interface Stage {
  /** 0-based stage index. */
  readonly index: number
  /** The stage's variables (a subset of the model's, same names). */
  readonly params: readonly ModelParam[]
  /** Indices of the transformer blocks this stage runs. */
  readonly blocks: readonly number[]
  /**
   * The stage's forward pass. The first stage takes token ids (int32 `[batch, T]`); every other
   * takes hidden states `[batch, T, dModel]`. The last returns logits `[batch, T, vocab]`, the
   * others hidden states.
   */
  forward(x: tf.Tensor): tf.Tensor
  /**
   * The stage's parts, run separately (CheckFree+ executes block stages out of order and copies
   * embedding and head to neighbours): `embed` (first stage only) maps token ids to hidden states,
   * `blocks` runs this stage's transformer blocks, `head` (last stage only) maps hidden states to
   * logits. Not wrapped in `tf.tidy`: call them inside one.
   */
  readonly segments: {
    readonly embed?: (ids: tf.Tensor) => tf.Tensor
    readonly blocks: (x: tf.Tensor) => tf.Tensor
    readonly head?: (x: tf.Tensor) => tf.Tensor
  }
}

/** The transformer LM: a {@link TfModel} whose `apply(ids [batch, T])` returns logits `[batch, T, vocab]`. */
export interface TransformerLm extends TfModel {
  readonly config: Readonly<Required<Omit<TransformerLmInit, 'seed'>>>
  /**
   * Groups the parameters into `stages` consecutive stages (1 ≤ stages ≤ layers) for pipeline
   * parallelism: the blocks are divided as evenly as possible; the token and position embeddings
   * belong to the first stage and the final LayerNorm and output head to the last. Running the
   * stages' `forward`s in order equals `apply`.
   */
  splitStages(stages: number): Stage[]
}

interface BlockVars {
  ln1g: tf.Variable, ln1b: tf.Variable, wq: tf.Variable, wk: tf.Variable, wv: tf.Variable, wo: tf.Variable
  ln2g: tf.Variable, ln2b: tf.Variable, w1: tf.Variable, b1: tf.Variable, w2: tf.Variable, b2: tf.Variable
}

function layerNorm (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true)
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), gamma), beta)
}

/** Additive causal mask `[T, T]`: 0 on and below the diagonal, -1e9 above. */
function causalMask (t: number): tf.Tensor {
  const m = new Float32Array(t * t)
  for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = -1e9
  return tf.tensor2d(m, [t, t])
}

/** Creates the model with seeded N(0, 0.02²) weights (output projections scaled by 1/√(2·layers)). */
export function createTransformerLm (init: TransformerLmInit): TransformerLm {
  const vocab = init.vocab
  const dModel = init.dModel ?? 64
  const heads = init.heads ?? 4
  const layers = init.layers ?? 2
  const seqLen = init.seqLen ?? 64
  const ffn = init.ffn ?? 4 * dModel
  const seed = init.seed ?? 0
  for (const [k, v] of Object.entries({ vocab, dModel, heads, layers, seqLen, ffn })) {
    if (!Number.isInteger(v) || v < 1) throw new InvalidParametersError(`${k} must be a positive integer, got ${v}`)
  }
  if (dModel % heads !== 0) throw new InvalidParametersError(`heads (${heads}) must divide dModel (${dModel})`)
  const dHead = dModel / heads
  const params: ModelParam[] = []
  let salt = 0
  const add = (name: string, shape: number[], kind: 'normal' | 'zeros' | 'ones', std = 0.02): tf.Variable => {
    salt++
    const size = shape.reduce((a, b) => a * b, 1)
    const values = kind === 'normal' ? normalArray(deriveSeed(seed, salt), size, std) : new Float32Array(size).fill(kind === 'ones' ? 1 : 0)
    const t = tf.tensor(values, shape)
    const variable = tf.variable(t, true)
    t.dispose()
    params.push({ name, variable })
    return variable
  }
  const residualStd = 0.02 / Math.sqrt(2 * layers)
  const tokEmbed = add('embed/token', [vocab, dModel], 'normal')
  const posEmbed = add('embed/position', [seqLen, dModel], 'normal')
  const blocks: BlockVars[] = []
  for (let l = 0; l < layers; l++) {
    const p = `block${l}`
    blocks.push({
      ln1g: add(`${p}/ln1/gamma`, [dModel], 'ones'),
      ln1b: add(`${p}/ln1/beta`, [dModel], 'zeros'),
      wq: add(`${p}/attn/wq`, [dModel, dModel], 'normal'),
      wk: add(`${p}/attn/wk`, [dModel, dModel], 'normal'),
      wv: add(`${p}/attn/wv`, [dModel, dModel], 'normal'),
      wo: add(`${p}/attn/wo`, [dModel, dModel], 'normal', residualStd),
      ln2g: add(`${p}/ln2/gamma`, [dModel], 'ones'),
      ln2b: add(`${p}/ln2/beta`, [dModel], 'zeros'),
      w1: add(`${p}/mlp/w1`, [dModel, ffn], 'normal'),
      b1: add(`${p}/mlp/b1`, [ffn], 'zeros'),
      w2: add(`${p}/mlp/w2`, [ffn, dModel], 'normal', residualStd),
      b2: add(`${p}/mlp/b2`, [dModel], 'zeros')
    })
  }
  const lnfG = add('head/ln/gamma', [dModel], 'ones')
  const lnfB = add('head/ln/beta', [dModel], 'zeros')
  const wOut = add('head/w', [dModel, vocab], 'normal')
  const bOut = add('head/b', [vocab], 'zeros')

  const embed = (ids: tf.Tensor): tf.Tensor => {
    const [b, t] = ids.shape as [number, number]
    if (t > seqLen) throw new InvalidParametersError(`Sequence length ${t} exceeds the model's ${seqLen}`)
    // One-hot matMul instead of gather: gather's gradient is missing on some backends.
    const oneHot = tf.oneHot(ids.reshape([-1]).toInt(), vocab).toFloat()
    const tok = tf.matMul(oneHot, tokEmbed).reshape([b, t, dModel])
    return tf.add(tok, tf.slice(posEmbed, [0, 0], [t, dModel]))
  }

  const block = (x: tf.Tensor, v: BlockVars): tf.Tensor => {
    const [b, t] = x.shape as [number, number, number]
    const h = layerNorm(x, v.ln1g, v.ln1b).reshape([b * t, dModel])
    const split = (w: tf.Tensor): tf.Tensor =>
      tf.matMul(h, w).reshape([b, t, heads, dHead]).transpose([0, 2, 1, 3]).reshape([b * heads, t, dHead])
    const q = split(v.wq)
    const k = split(v.wk)
    const val = split(v.wv)
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dHead)), causalMask(t))
    const attn = tf.matMul(tf.softmax(scores), val)
      .reshape([b, heads, t, dHead]).transpose([0, 2, 1, 3]).reshape([b * t, dModel])
    const x1 = tf.add(x, tf.matMul(attn, v.wo).reshape([b, t, dModel]))
    const h2 = layerNorm(x1, v.ln2g, v.ln2b).reshape([b * t, dModel])
    const m = tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(h2, v.w1), v.b1)), v.w2), v.b2)
    return tf.add(x1, m.reshape([b, t, dModel]))
  }

  const head = (x: tf.Tensor): tf.Tensor => {
    const [b, t] = x.shape as [number, number, number]
    const h = layerNorm(x, lnfG, lnfB).reshape([b * t, dModel])
    return tf.add(tf.matMul(h, wOut), bOut).reshape([b, t, vocab])
  }

  const paramsOf = (names: (n: string) => boolean): ModelParam[] => params.filter((p) => names(p.name))

  const splitStages = (count: number): Stage[] => {
    if (!Number.isInteger(count) || count < 1 || count > layers) {
      throw new InvalidParametersError(`stages must be an integer in [1, ${layers}], got ${count}`)
    }
    const stages: Stage[] = []
    for (let s = 0; s < count; s++) {
      const first = Math.floor((s * layers) / count)
      const end = Math.floor(((s + 1) * layers) / count)
      const ids = Array.from({ length: end - first }, (_, i) => first + i)
      const isFirst = s === 0
      const isLast = s === count - 1
      const prefixes = ids.map((i) => `block${i}/`)
      const runBlocks = (x: tf.Tensor): tf.Tensor => {
        let h = x
        for (const i of ids) h = block(h, blocks[i] as BlockVars)
        return h
      }
      stages.push({
        index: s,
        blocks: ids,
        params: paramsOf((n) => (isFirst && n.startsWith('embed/')) || (isLast && n.startsWith('head/')) || prefixes.some((p) => n.startsWith(p))),
        forward: (x) => tf.tidy(() => {
          const h = runBlocks(isFirst ? embed(x) : x)
          return isLast ? head(h) : h
        }),
        segments: { blocks: runBlocks, ...(isFirst ? { embed } : {}), ...(isLast ? { head } : {}) }
      })
    }
    return stages
  }

  const whole = splitStages(1)[0] as Stage
  return {
    params,
    config: { vocab, dModel, heads, layers, seqLen, ffn },
    apply: (ids) => whole.forward(ids),
    splitStages,
    dispose: () => { for (const p of params) p.variable.dispose() }
  }
}

/** Loss of a language model on a batch from `charCorpus`: next-token cross-entropy. */
export function lmLoss (model: TfModel, batch: SequenceBatch): tf.Scalar {
  const inputs = tf.tensor2d(batch.inputs, [batch.size, batch.seqLen], 'int32')
  const targets = tf.tensor2d(batch.targets, [batch.size, batch.seqLen], 'int32')
  return sparseSoftmaxCrossEntropy(model.apply(inputs), targets)
}
