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
  const isFirst = init.stage === 0
  const isLast = init.stage === init.stages - 1
  const { embed, blocks, head } = own.segments

  const run = (parts: readonly Segment[], x: tf.Tensor): tf.Tensor => {
    for (const part of parts) {
      if (part === 'embed' && !isFirst) throw new InvalidParametersError(`Stage ${init.stage} has no embedding`)
      if (part === 'head' && !isLast) throw new InvalidParametersError(`Stage ${init.stage} has no head`)
    }
    return tf.tidy(() => {
      let h = x
      for (const part of parts) {
        if (part === 'embed') h = (embed as (ids: tf.Tensor) => tf.Tensor)(h)
        else if (part === 'head') h = (head as (x: tf.Tensor) => tf.Tensor)(h)
        else h = blocks(h)
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
