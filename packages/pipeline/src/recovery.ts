/**
 * Stage recovery rules: which state a replacement for a lost stage starts from.
 *
 * The rule of CheckFree (gensyn-ai/CheckFree, `ours-grad-avg`) generalised to S stages, where our
 * stage 0 holds the embedding and the first blocks and stage S-1 the last blocks and the head:
 * - a surviving data-parallel replica of the stage exists → copy it (weights, optimiser, lr scale): exact;
 * - interior stage i → `W_i = (a·W_{i+1} + b·W_{i-1}) / (a + b)` with `a = ω_{i+1} + 1e-4`,
 *   `b = ω_{i-1} + 1e-4`, ω = the neighbour's last *clipped* gradient norm (`gradNorm`), or 1/2 each
 *   (`uniform`);
 * - edge stages copy the blocks of their neighbour; the embedding (head) comes from the copy the
 *   neighbour keeps when edge replication is on (CheckFree+), and is re-initialised otherwise;
 * - with out-of-order training the swap partners (stages 1 and S-2) copy their edge neighbour;
 * - every non-exact recovery gets a fresh optimiser at `lr × lrScale`.
 * Baselines: `random` re-initialises the stage; `rollback` restores every stage from the last
 * in-memory snapshot (checkpoint-and-restart).
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'

/** What a lost stage is recovered with when no exact copy exists. */
export type RecoveryStrategy = 'checkfree' | 'checkfree-plus' | 'random' | 'rollback'

/** How CheckFree weighs the two neighbours of an interior stage. */
export type AverageWeighting = 'gradNorm' | 'uniform'

/** Recovery tunables. */
export interface RecoveryPolicy {
  /** Strategy for a stage that lost every replica. @default 'checkfree-plus' */
  strategy: RecoveryStrategy
  /** Neighbour weighting of the CheckFree average. @default 'gradNorm' (the reference rule) */
  weighting: AverageWeighting
  /** Learning-rate multiplier of a recovered stage's fresh optimiser (not compounding). @default 1.1 */
  lrScale: number
  /** Copy from a surviving data-parallel replica of the stage when one exists. @default true */
  preferReplica: boolean
}

/** The defaults of {@link RecoveryPolicy}. */
export const DEFAULT_RECOVERY_POLICY: Readonly<RecoveryPolicy> = Object.freeze({
  strategy: 'checkfree-plus',
  weighting: 'gradNorm',
  lrScale: 1.1,
  preferReplica: true
})

/** One state a replacement pulls: `part` of stage `stage` (a replica index is chosen by the caller). */
export interface RecoverySource {
  readonly stage: number
  /** `blocks`: the stage's blocks; `full`: weights + optimiser; `edge`: the neighbour's copy of the embedding/head. */
  readonly part: 'blocks' | 'full' | 'edge'
  /** Weight in the average (1 for a copy). */
  readonly weight: number
}

/** What to do for a lost stage. */
export type RecoveryPlan =
  | { readonly kind: 'replica-copy', readonly stage: number, readonly sources: readonly RecoverySource[] }
  | { readonly kind: 'average', readonly stage: number, readonly sources: readonly RecoverySource[] }
  | { readonly kind: 'copy', readonly stage: number, readonly sources: readonly RecoverySource[] }
  | { readonly kind: 'random', readonly stage: number, readonly sources: readonly RecoverySource[] }
  | { readonly kind: 'rollback', readonly stage: number, readonly sources: readonly RecoverySource[] }

/** Inputs of {@link planRecovery}. */
export interface PlanRecoveryInput {
  /** The lost stage. */
  stage: number
  /** Number of stages. */
  stages: number
  /** Surviving replicas of the lost stage. */
  survivors: number
  /** Last clipped gradient norm of every stage (ω). */
  gradNorms: readonly number[]
  /** Whether the pipeline trains with out-of-order execution (CheckFree+ swaps). */
  outOfOrder: boolean
  /** Whether neighbours keep copies of the embedding and head. */
  edgeReplicas: boolean
  policy: RecoveryPolicy
}

/** The CheckFree neighbour weights `[w_prev, w_next]` (summing to 1) for an interior stage. */
export function checkfreeWeights (normPrev: number, normNext: number, weighting: AverageWeighting): [number, number] {
  if (weighting === 'uniform') return [0.5, 0.5]
  // As in the reference: the *next* neighbour's norm weighs the next neighbour's weights.
  const a = (Number.isFinite(normNext) ? normNext : 0) + 1e-4
  const b = (Number.isFinite(normPrev) ? normPrev : 0) + 1e-4
  return [b / (a + b), a / (a + b)]
}

/** Decides how stage `input.stage` is recovered. */
export function planRecovery (input: PlanRecoveryInput): RecoveryPlan {
  const { stage, stages, policy } = input
  if (!Number.isInteger(stage) || stage < 0 || stage >= stages) throw new InvalidParametersError(`stage ${stage} is not in [0, ${stages})`)
  if (input.survivors > 0 && policy.preferReplica) return { kind: 'replica-copy', stage, sources: [{ stage, part: 'full', weight: 1 }] }
  if (policy.strategy === 'random') return { kind: 'random', stage, sources: [] }
  if (policy.strategy === 'rollback') return { kind: 'rollback', stage, sources: [] }
  if (stages === 1) return { kind: 'random', stage, sources: [] }
  const copy = (from: number): RecoveryPlan => {
    const sources: RecoverySource[] = [{ stage: from, part: 'blocks', weight: 1 }]
    const isEdge = stage === 0 || stage === stages - 1
    if (isEdge && input.edgeReplicas) sources.push({ stage: from, part: 'edge', weight: 1 })
    return { kind: 'copy', stage, sources }
  }
  if (stage === 0) return copy(1)
  if (stage === stages - 1) return copy(stages - 2)
  if (input.outOfOrder && stages >= 4) {
    if (stage === 1) return copy(0)
    if (stage === stages - 2) return copy(stages - 1)
  }
  const [wPrev, wNext] = checkfreeWeights(input.gradNorms[stage - 1] ?? 0, input.gradNorms[stage + 1] ?? 0, policy.weighting)
  return {
    kind: 'average',
    stage,
    sources: [{ stage: stage - 1, part: 'blocks', weight: wPrev }, { stage: stage + 1, part: 'blocks', weight: wNext }]
  }
}

/**
 * `out[k] = Σ_j weights[j] · inputs[j][k]`, accumulated in float64 (all inputs and `out` the same
 * length; `out` may alias none of the inputs).
 */
export function weightedAverage (inputs: readonly Float32Array[], weights: readonly number[], out?: Float32Array): Float32Array {
  const first = inputs[0]
  if (first === undefined || inputs.length !== weights.length) throw new InvalidParametersError('weightedAverage needs as many weights as inputs, and at least one input')
  const n = first.length
  for (const x of inputs) if (x.length !== n) throw new InvalidParametersError(`Inputs differ in length: ${x.length} vs ${n}`)
  const result = out ?? new Float32Array(n)
  if (result.length !== n) throw new InvalidParametersError(`Output has ${result.length} values, inputs ${n}`)
  for (let k = 0; k < n; k++) {
    let sum = 0
    for (let j = 0; j < inputs.length; j++) sum += (weights[j] as number) * ((inputs[j] as Float32Array)[k] as number)
    result[k] = sum
  }
  return result
}
