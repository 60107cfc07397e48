/**
 * Byzantine behaviour for a worker: a gradient hook that replaces what the worker hands to
 * `step.reduce` by an attack from `@phalanx/aggregate` (sign flip, ALIE, IPM, Gaussian, ...), and a
 * label hook for label flipping. A worker only sees its own micro-batch gradients, so the attack is
 * computed from those ("non-omniscient"): ALIE and IPM use this worker's micro-batch mean and spread
 * rather than the honest population's.
 *
 * @module
 */
import { createAttack, flipLabels, parseAttackSpec, type AttackSpec } from '@phalanx/aggregate'
import type { ChaosLog } from './event-log.js'

/** Context of one call of a {@link GradientHook}. */
export interface GradientHookContext {
  /** Step being computed. */
  step: number
  /** Worker id (for the log). */
  worker: string
}

/** Replaces a worker's per-micro-batch gradients (returns arrays of the same count and lengths). */
export type GradientHook = (gradients: readonly Float32Array[], context: GradientHookContext) => Float32Array[]

/** Options of {@link createByzantineHook}. */
export interface ByzantineInit {
  /** Attack spec, validated by `parseAttackSpec` (aliases `ALIE`, `IPM`, `SignFlip` accepted). */
  attack: AttackSpec | Record<string, unknown>
  /** Seed of random attacks (mixed with the step). @default 0 */
  seed?: number
  /** Attack only from this step on. @default 0 */
  fromStep?: number
}

/**
 * Creates a gradient hook applying `attack`: every micro-batch gradient the worker reports is
 * replaced by the attack vector computed from all of them.
 */
export function createByzantineHook (init: ByzantineInit, components: { log?: ChaosLog } = {}): GradientHook {
  const spec = parseAttackSpec(init.attack)
  const attack = createAttack(spec)
  const seed = init.seed ?? 0
  return (gradients, context) => {
    if (context.step < (init.fromStep ?? 0) || gradients.length === 0) return gradients.map((g) => g)
    const out = attack.generate(gradients, gradients.length, { seed: seed * 1_000_003 + context.step })
    components.log?.append({ class: 'byzantine', kind: attack.name, target: context.worker, step: context.step, details: { microBatches: gradients.length } })
    return out
  }
}

/** A label hook: labels in, the labels the worker trains on out. */
export type LabelHook = (labels: ArrayLike<number>, context: GradientHookContext) => Int32Array

/** Creates a label-flipping hook (y → C − 1 − y, from `@phalanx/aggregate`'s `flipLabels`). */
export function createLabelFlipHook (init: { classes: number, fromStep?: number }, components: { log?: ChaosLog } = {}): LabelHook {
  return (labels, context) => {
    if (context.step < (init.fromStep ?? 0)) return Int32Array.from(labels)
    components.log?.append({ class: 'byzantine', kind: 'LabelFlipping', target: context.worker, step: context.step, details: { labels: labels.length } })
    return flipLabels(labels, init.classes)
  }
}
