/**
 * One pipeline stage of the `@phalanx/tfjs` transformer LM, with its forward pass cut into
 * segments (`embed`, `blocks`, `head`) so a micro-batch may visit a stage more than once (the
 * CheckFree+ out-of-order schedule runs the embedding of stage 0, then stage 1's blocks, then
 * stage 0's blocks).
 *
 * `createTransformerLm` exposes a stage's forward only as a whole (embedding and blocks fused on
 * the first stage), so the segments are re-implemented here over the same named variables; a unit
 * test checks that running them in order equals the model's own `apply` and gradients.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'
import { createTransformerLm, sparseSoftmaxCrossEntropy, tf, type ModelParam, type TfModel, type TransformerLmInit } from '@phalanx/tfjs'

/** A part of a stage's forward pass. `embed` exists only on stage 0, `head` only on the last stage. */
export type Segment = 'embed' | 'blocks' | 'head'

/** Tunables of {@link createStageModel}. */
export interface StageModelInit {
  /** The whole model's configuration (every stage builds it with the same seed, so initial weights agree). */
  lm: TransformerLmInit
  /** Number of pipeline stages (1 ≤ stages ≤ layers). */
  stages: number
  /** This stage's 0-based index. */
  stage: number
}

/** The variables and forward segments of one stage. Its `params` are the stage's state, in a fixed order. */
export interface StageModel extends TfModel {
  readonly stage: number
  readonly stages: number
  /** The whole model's resolved configuration. */
  readonly config: { readonly vocab: number, readonly dModel: number, readonly heads: number, readonly layers: number, readonly seqLen: number, readonly ffn: number }
  /** Indices of the transformer blocks this stage runs. */
  readonly blockIds: readonly number[]
  /** The stage's parameters by role: token/position embedding (stage 0), blocks, final norm + head (last stage). */
  readonly groups: Readonly<Record<Segment, readonly ModelParam[]>>
  /**
   * Runs `parts` in order on `x`: token ids `[batch, T]` (int32) when `parts` starts with `embed`,
   * hidden states `[batch, T, dModel]` otherwise. Returns logits when `parts` ends with `head`.
   */
  run(parts: readonly Segment[], x: tf.Tensor): tf.Tensor
}

interface BlockVars {
  ln1g: tf.Variable, ln1b: tf.Variable, wq: tf.Variable, wk: tf.Variable, wv: tf.Variable, wo: tf.Variable
  ln2g: tf.Variable, ln2b: tf.Variable, w1: tf.Variable, b1: tf.Variable, w2: tf.Variable, b2: tf.Variable
}

function layerNorm (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true)
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), gamma), beta)
}

function causalMask (t: number): tf.Tensor {
  const m = new Float32Array(t * t)
  for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = -1e9
  return tf.tensor2d(m, [t, t])
}

/**
 * Builds stage `stage` of `stages` of the transformer LM described by `lm`. The block split and
 * parameter names are those of `TransformerLm.splitStages`.
 */
export function createStageModel (init: StageModelInit): StageModel {
  const lm = createTransformerLm(init.lm)
  if (!Number.isInteger(init.stage) || init.stage < 0 || init.stage >= init.stages) {
    lm.dispose()
    throw new InvalidParametersError(`stage must be an integer in [0, ${init.stages}), got ${init.stage}`)
  }
  let split
  try {
    split = lm.splitStages(init.stages)
  } catch (err) {
    lm.dispose()
    throw err
  }
  const own = split[init.stage] as (typeof split)[number]
  const { vocab, dModel, heads, seqLen } = lm.config
  const dHead = dModel / heads
  const byName = new Map(lm.params.map((p) => [p.name, p.variable]))
  const v = (name: string): tf.Variable => {
    const variable = byName.get(name)
    if (variable === undefined) throw new InvalidParametersError(`The transformer has no parameter "${name}"`)
    return variable
  }
  const isFirst = init.stage === 0
  const isLast = init.stage === init.stages - 1
  const blockVars = new Map<number, BlockVars>(own.blocks.map((i) => {
    const p = `block${i}`
    return [i, {
      ln1g: v(`${p}/ln1/gamma`), ln1b: v(`${p}/ln1/beta`), wq: v(`${p}/attn/wq`), wk: v(`${p}/attn/wk`), wv: v(`${p}/attn/wv`),
      wo: v(`${p}/attn/wo`), ln2g: v(`${p}/ln2/gamma`), ln2b: v(`${p}/ln2/beta`), w1: v(`${p}/mlp/w1`), b1: v(`${p}/mlp/b1`),
      w2: v(`${p}/mlp/w2`), b2: v(`${p}/mlp/b2`)
    }]
  }))

  const embed = (ids: tf.Tensor): tf.Tensor => {
    const [b, t] = ids.shape as [number, number]
    if (t > seqLen) throw new InvalidParametersError(`Sequence length ${t} exceeds the model's ${seqLen}`)
    const oneHot = tf.oneHot(ids.reshape([-1]).toInt(), vocab).toFloat()
    const tok = tf.matMul(oneHot, v('embed/token')).reshape([b, t, dModel])
    return tf.add(tok, tf.slice(v('embed/position'), [0, 0], [t, dModel]))
  }

  const block = (x: tf.Tensor, w: BlockVars): tf.Tensor => {
    const [b, t] = x.shape as [number, number, number]
    const h = layerNorm(x, w.ln1g, w.ln1b).reshape([b * t, dModel])
    const split = (m: tf.Tensor): tf.Tensor =>
      tf.matMul(h, m).reshape([b, t, heads, dHead]).transpose([0, 2, 1, 3]).reshape([b * heads, t, dHead])
    const q = split(w.wq)
    const k = split(w.wk)
    const val = split(w.wv)
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dHead)), causalMask(t))
    const attn = tf.matMul(tf.softmax(scores), val)
      .reshape([b, heads, t, dHead]).transpose([0, 2, 1, 3]).reshape([b * t, dModel])
    const x1 = tf.add(x, tf.matMul(attn, w.wo).reshape([b, t, dModel]))
    const h2 = layerNorm(x1, w.ln2g, w.ln2b).reshape([b * t, dModel])
    const m = tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(h2, w.w1), w.b1)), w.w2), w.b2)
    return tf.add(x1, m.reshape([b, t, dModel]))
  }

  const head = (x: tf.Tensor): tf.Tensor => {
    const [b, t] = x.shape as [number, number, number]
    const h = layerNorm(x, v('head/ln/gamma'), v('head/ln/beta')).reshape([b * t, dModel])
    return tf.add(tf.matMul(h, v('head/w')), v('head/b')).reshape([b, t, vocab])
  }

  const run = (parts: readonly Segment[], x: tf.Tensor): tf.Tensor => {
    for (const part of parts) {
      if (part === 'embed' && !isFirst) throw new InvalidParametersError(`Stage ${init.stage} has no embedding`)
      if (part === 'head' && !isLast) throw new InvalidParametersError(`Stage ${init.stage} has no head`)
    }
    return tf.tidy(() => {
      let h = x
      for (const part of parts) {
        if (part === 'embed') h = embed(h)
        else if (part === 'head') h = head(h)
        else for (const i of own.blocks) h = block(h, blockVars.get(i) as BlockVars)
      }
      return h
    })
  }

  const groups: Record<Segment, ModelParam[]> = {
    embed: own.params.filter((p) => p.name.startsWith('embed/')),
    head: own.params.filter((p) => p.name.startsWith('head/')),
    blocks: own.params.filter((p) => p.name.startsWith('block'))
  }
  const fullParts: Segment[] = [...(isFirst ? ['embed' as const] : []), 'blocks', ...(isLast ? ['head' as const] : [])]
  return {
    stage: init.stage,
    stages: init.stages,
    config: lm.config,
    blockIds: own.blocks,
    params: own.params,
    groups,
    run,
    apply: (x) => run(fullParts, x),
    dispose: () => { lm.dispose() }
  }
}

/** Next-token cross-entropy of `logits` `[batch, T, vocab]` against `targets` (int32 `[batch, T]`). */
export function lmCrossEntropy (logits: tf.Tensor, targets: tf.Tensor): tf.Scalar {
  return sparseSoftmaxCrossEntropy(logits, targets)
}
