/**
 * @packageDocumentation
 * Byzantine-robust aggregators and attack generators over Float32Array inputs.
 *
 * Every rule implements the `Aggregator` contract of `@phalanx/core` and runs sharded: each owner
 * of a coordinate slice aggregates its slice given the Gram matrix of the whole inputs (the sum of
 * the per-slice {@link gramPartial} matrices). Distance-based rules derive their weights from that
 * Gram matrix only, so slices agree bit for bit.
 *
 * @example
 * ```ts
 * import { aggregate, createAggregator } from '@phalanx/aggregate'
 *
 * const rule = createAggregator({ name: 'TrMean', f: 2 })
 * const robust = aggregate(rule, gradients)
 * ```
 */
export { createAggregator, aggregate, aggregateWithReport } from './create.js'
export type { RobustAggregator, AggregationResult } from './create.js'
export { gramPartial } from './kernels.js'
export { parseAggregatorSpec, AGGREGATOR_NAMES, PRE_AGGREGATOR_NAMES } from './spec.js'
export type { AggregatorSpec, PreAggregatorSpec } from './spec.js'
export { createRng, seededPermutation } from './rng.js'
export type { Rng } from './rng.js'
export { createAttack, flipLabels, parseAttackSpec, alieZ, honestMoments, inverseNormalCdf, ATTACK_NAMES } from './attacks.js'
export type { Attack, AttackSpec, AttackOptions } from './attacks.js'
