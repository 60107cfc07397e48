/**
 * Optimiser state as named tensors. tf.js exposes it only through async `getWeights`/`setWeights`,
 * which leak the replaced slot variables, rebuild Adam's bias-correction powers with `pow` (not
 * bit-identical to the running product) and show no slots before the first step. So this module
 * reads and writes the slots of the optimisers it knows (pinned tfjs 4.22.0 internals) directly.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs'
import { InvalidParametersError } from '@phalanx/core'
import type { ModelParam } from './model.js'

/** One optimiser slot: a variable per parameter, or a scalar. */
export interface SlotRef {
  /** State-dict name, e.g. `adam/m/block0/attn/wq`, `adam/iter`. */
  readonly name: string
  readonly shape: readonly number[]
  /** The live tensor, or undefined when the slot does not exist yet (its value is then {@link initial}). */
  tensor(): tf.Tensor | undefined
  /** Value of a scalar held as a JS number (the iteration counter), else undefined. */
  scalar(): number | undefined
  /** The value a missing slot stands for (zeros for moments and accumulators). */
  readonly initial: number
  /** Replaces the slot's value with `values` (a copy is taken). */
  write(values: Float32Array): void
}

interface SlotEntry { originalName: string, variable: tf.Variable }

interface AdamInternals {
  accumulatedFirstMoment: Array<SlotEntry | undefined>
  accumulatedSecondMoment: Array<SlotEntry | undefined>
  accBeta1: tf.Variable
  accBeta2: tf.Variable
  iterations_?: number
}

interface MomentumInternals {
  accumulations: Array<SlotEntry | undefined>
  iterations_?: number
}

/** The optimiser class names whose state this package can capture and restore. */
export const SUPPORTED_OPTIMIZERS: readonly string[] = ['SGD', 'Momentum', 'Adam']

function iterationSlot (prefix: string, o: { iterations_?: number }): SlotRef {
  return {
    name: `${prefix}/iter`,
    shape: [],
    initial: 0,
    tensor: () => undefined,
    scalar: () => o.iterations_ ?? 0,
    write: (values) => { o.iterations_ = values[0] ?? 0 }
  }
}

function variableSlot (name: string, shape: readonly number[], get: () => tf.Variable | undefined, create: (v: tf.Variable) => void): SlotRef {
  return {
    name,
    shape,
    initial: 0,
    tensor: get,
    scalar: () => undefined,
    write (values) {
      const t = tf.tensor(values.slice(), [...shape], 'float32')
      const existing = get()
      if (existing !== undefined) {
        existing.assign(t)
        t.dispose()
      } else {
        // The variable shares t's buffer; disposing t only drops t's reference.
        create(tf.variable(t, false))
        t.dispose()
      }
    }
  }
}

function perParamSlots (prefix: string, params: readonly ModelParam[], list: Array<SlotEntry | undefined>, suffix: string): SlotRef[] {
  return params.map((p, i) => variableSlot(`${prefix}/${p.name}`, p.variable.shape, () => list[i]?.variable,
    (variable) => { list[i] = { originalName: `${p.variable.name}/${suffix}`, variable } }))
}

/**
 * The slots of `optimizer` for a model with `params`, in state-dict order.
 *
 * - SGD: none (plain SGD has no state).
 * - Momentum: `momentum/iter`, then `momentum/accum/<param>` per parameter.
 * - Adam: `adam/iter`, `adam/beta1_power`, `adam/beta2_power`, then `adam/m/<param>` for every
 *   parameter, then `adam/v/<param>` (tf's own order).
 *
 * @throws InvalidParametersError for an optimiser class not in {@link SUPPORTED_OPTIMIZERS}.
 */
export function optimizerSlots (optimizer: tf.Optimizer, params: readonly ModelParam[]): SlotRef[] {
  const kind = optimizer.getClassName()
  switch (kind) {
    case 'SGD':
      return []
    case 'Momentum': {
      const o = optimizer as unknown as MomentumInternals
      return [iterationSlot('momentum', o), ...perParamSlots('momentum/accum', params, o.accumulations, 'momentum')]
    }
    case 'Adam': {
      const o = optimizer as unknown as AdamInternals
      // The running products beta^t are kept as state: recomputing them with pow() (as setWeights
      // does) differs in the last bit and would break bit-identical continuation.
      const power = (name: string, key: 'accBeta1' | 'accBeta2'): SlotRef => variableSlot(name, [], () => o[key], () => {})
      return [
        iterationSlot('adam', o),
        power('adam/beta1_power', 'accBeta1'),
        power('adam/beta2_power', 'accBeta2'),
        ...perParamSlots('adam/m', params, o.accumulatedFirstMoment, 'm'),
        ...perParamSlots('adam/v', params, o.accumulatedSecondMoment, 'v')
      ]
    }
    default:
      throw new InvalidParametersError(`Optimizer ${kind} is not supported; use one of ${SUPPORTED_OPTIMIZERS.join(', ')}`)
  }
}
