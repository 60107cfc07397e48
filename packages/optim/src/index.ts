/**
 * @packageDocumentation
 * Outer / low-communication optimisers: DiLoCo, NoLoCo, gossip, local SGD (FedAvg) and no sync, as
 * one family over flat `Float32Array` parameter vectors or `StateDict`s.
 *
 * Every `interval` inner steps a replica forms a target mean over its group (all replicas through an
 * injected all-reduce, the step's random partner over an `Endpoint`, or nobody) and moves its anchor
 * towards it with outer learning rate α and momentum μ (Nesterov or heavy-ball). The inner optimiser
 * is the user's and its state is never averaged.
 *
 * @example
 * ```ts
 * import { createOuterOptimizer } from '@phalanx/optim'
 *
 * const outer = createOuterOptimizer({ spec: { preset: 'noloco', interval: 20 }, initial: weights, members }, { endpoint })
 * outer.start()
 * for (let step = 0; step < steps; step++) {
 *   innerStep(weights)            // the user's optimiser
 *   await outer.step(weights)     // every 20th call exchanges with one partner and writes the new anchor
 * }
 * await outer.stop()
 * ```
 */
export {
  OUTER_PRESET_NAMES, OUTER_PRESETS, outerSpecSchema, resolveOuterSpec,
  type OuterPresetName, type OuterGroup, type MomentumKind, type OuterSpec, type OuterSpecInput
} from './spec.js'
export { pairFor, partnerOf, seededPermutation, type Pairing } from './pairing.js'
export { applyOuterStep, meanInto, ringAllReduceCost, pairExchangeCost, type OuterStepParams, type SyncCost } from './outer-step.js'
export {
  createOuterOptimizer, parameterCount,
  type AllReduce, type AllReduceOptions, type OuterOptimizer, type OuterOptimizerInit, type OuterOptimizerComponents,
  type OuterMetrics, type SyncReport, type MembershipView, type SetMembersOptions
} from './outer-optimizer.js'
export { createRingAllReduce, type RingAllReduce, type RingAllReduceInit, type RingAllReduceComponents } from './ring-all-reduce.js'
export { createMembershipClient, type MembershipClient, type MembershipClientComponents, type MembershipClientInit, type MembershipClientMetrics } from './membership-client.js'
