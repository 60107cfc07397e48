/**
 * `createAggregator(spec)`: turns a validated spec into an `Aggregator` that works on coordinate
 * slices. A pipeline is: pre-aggregators as mixing matrices (from the Gram matrix or the seed), then
 * the rule, either as weights over the mixed inputs (distance-based rules) or as a coordinate-wise
 * kernel over the mixed inputs (Median, TrMean, Bulyan's last step).
 *
 * @module
 */
import { InsufficientInputsError, InvalidParametersError } from '@phalanx/core'
import type { AggregationReport, Aggregator, SliceContext } from '@phalanx/core'
import { closestToMedianInto, medianInto, trimmedMeanInto } from './coordinate.js'
import {
  bulyanSelection, centeredClipWeights, flagWeights, geometricMedianWeights, krumWeights, mdaWeights, multiKrumWeights
} from './gram-rules.js'
import { BLOCK, assertInputs, gramPartial, meanInto, weightedSum } from './kernels.js'
import { arcMixing, bucketingMixing, clippingMixing, composeMixing, mixGram, nnmMixing, type Mixing } from './pre.js'
import { parseAggregatorSpec, type AggregatorSpec, type PreAggregatorSpec } from './spec.js'

/** An {@link Aggregator} built from a spec, with the resolved spec and its smallest valid input count. */
export interface RobustAggregator extends Aggregator {
  /** The validated spec it was built from. */
  readonly spec: AggregatorSpec
  /** The smallest n for which {@link Aggregator.check} passes. */
  readonly minInputs: number
}

type Plan =
  | { kind: 'linear', weights: Float64Array }
  | { kind: 'coordinate', rows?: number[], apply: (inputs: readonly Float32Array[], out: Float32Array, vals: Float64Array) => void }

interface Rule {
  needsGram: boolean
  minInputs: number
  plan: (gram: Float64Array | undefined, m: number) => Plan
}

interface Stage {
  needsGram: boolean
  minInputs: number
  outputs: (n: number) => number
  mixing: (gram: Float64Array | undefined, n: number, seed: number) => Mixing
}

function ruleOf (spec: AggregatorSpec, f: number): Rule {
  switch (spec.name) {
    case 'Average':
      return { needsGram: false, minInputs: 1, plan: (_g, m) => ({ kind: 'linear', weights: new Float64Array(m).fill(1 / m) }) }
    case 'Median':
      return { needsGram: false, minInputs: 2 * f + 1, plan: () => ({ kind: 'coordinate', apply: medianInto }) }
    case 'TrMean':
      return { needsGram: false, minInputs: 2 * f + 1, plan: () => ({ kind: 'coordinate', apply: (x, out, vals) => { trimmedMeanInto(x, f, out, vals) } }) }
    case 'Krum':
      return {
        needsGram: true,
        minInputs: spec.bound === 'byzfl' ? 2 * f + 1 : 2 * f + 3,
        plan: (g, m) => ({ kind: 'linear', weights: krumWeights(g!, m, f, spec.neighbours ?? 'n-f-1') })
      }
    case 'MultiKrum':
      return {
        needsGram: true,
        minInputs: spec.bound === 'byzfl' ? 2 * f + 1 : 2 * f + 3,
        plan: (g, m) => ({ kind: 'linear', weights: multiKrumWeights(g!, m, f, spec.m ?? m - f, spec.neighbours ?? 'n-f-1') })
      }
    case 'Bulyan':
      return {
        needsGram: true,
        minInputs: 4 * f + 3,
        plan: (g, m) => {
          const rows = bulyanSelection(g!, m, f, spec.neighbours ?? 'n-f-1')
          const beta = rows.length - 2 * f
          return { kind: 'coordinate', rows, apply: (x, out, vals) => { closestToMedianInto(x, beta, out, vals) } }
        }
      }
    case 'GeometricMedian':
      return { needsGram: true, minInputs: 2 * f + 1, plan: (g, m) => ({ kind: 'linear', weights: geometricMedianWeights(g!, m, spec.nu ?? 0.1, spec.T ?? 3) }) }
    case 'CenteredClipping':
      return {
        needsGram: true,
        minInputs: 2 * f + 1,
        plan: (g, m) => ({ kind: 'linear', weights: centeredClipWeights(g!, m, spec.tau ?? 100, spec.L ?? 1, spec.init ?? 'zero') })
      }
    case 'MDA':
      return { needsGram: true, minInputs: 2 * f + 1, plan: (g, m) => ({ kind: 'linear', weights: mdaWeights(g!, m, f, spec.maxSubsets ?? 1e6) }) }
    case 'FlagAggregator': {
      const params = { r: spec.r ?? 1, lambda: spec.lambda ?? 0, iterations: spec.iterations ?? 1, eps: spec.eps ?? 1e-7, scale: spec.scale ?? 'reference' } as const
      return {
        needsGram: true,
        minInputs: 2 * f + 1,
        plan: (g, m) => {
          if (params.lambda > 0 && m > 24) {
            throw new InvalidParametersError(`FlagAggregator with lambda > 0 solves an m² × m² problem; at most 24 inputs are supported, got ${m}`)
          }
          return { kind: 'linear', weights: flagWeights(g!, m, params) }
        }
      }
    }
  }
}

function stageOf (spec: PreAggregatorSpec, ruleF: number): Stage {
  switch (spec.name) {
    case 'NNM': {
      const f = spec.f ?? ruleF
      return { needsGram: true, minInputs: 2 * f + 1, outputs: (n) => n, mixing: (g, n) => nnmMixing(g!, n, f) }
    }
    case 'Bucketing': {
      const s = spec.s ?? 1
      return { needsGram: false, minInputs: 1, outputs: (n) => Math.ceil(n / s), mixing: (_g, n, seed) => bucketingMixing(n, s, seed) }
    }
    case 'Clipping': {
      const c = spec.c ?? 2
      return { needsGram: true, minInputs: 1, outputs: (n) => n, mixing: (g, n) => clippingMixing(g!, n, c) }
    }
    case 'ARC': {
      const f = spec.f ?? ruleF
      return { needsGram: true, minInputs: 1, outputs: (n) => n, mixing: (g, n) => arcMixing(g!, n, f) }
    }
  }
}

/**
 * Creates an aggregation rule from its spec (validated: an unknown name or a bad parameter throws
 * `InvalidConfigError` listing the valid options).
 *
 * @example
 * ```ts
 * const krum = createAggregator({ name: 'Krum', f: 2, pre: [{ name: 'NNM' }] })
 * const out = aggregate(krum, gradients)
 * ```
 */
export function createAggregator (spec: AggregatorSpec | Record<string, unknown>): RobustAggregator {
  const parsed = parseAggregatorSpec(spec)
  const f = parsed.name === 'Average' ? 0 : parsed.f ?? 0
  const rule = ruleOf(parsed, f)
  const stages = (parsed.pre ?? []).map((p) => stageOf(p, f))
  const needsGram = rule.needsGram || stages.some((s) => s.needsGram)
  const acc = new Float64Array(BLOCK)
  let vals = new Float64Array(64)
  let mixed: Float32Array[] = []

  const problem = (n: number): string | undefined => {
    let m = n
    for (let i = 0; i < stages.length; i++) {
      const stage = stages[i]!
      if (m < stage.minInputs) return `pre-aggregator ${parsed.pre![i]!.name} needs at least ${stage.minInputs} inputs, got ${m}`
      m = stage.outputs(m)
    }
    if (m < rule.minInputs) return `${parsed.name} with f = ${f} needs at least ${rule.minInputs} inputs${stages.length > 0 ? ' after pre-aggregation' : ''}, got ${m}`
    return undefined
  }
  let minInputs = 1
  while (problem(minInputs) !== undefined && minInputs < 1 << 20) minInputs++

  const check = (n: number): void => {
    const why = problem(n)
    if (why !== undefined) throw new InsufficientInputsError(why, { details: { rule: parsed.name, f, n, required: minInputs } })
  }

  const aggregateSlice = (inputs: readonly Float32Array[], out: Float32Array, context: SliceContext): AggregationReport => {
    const n = inputs.length
    check(n)
    assertInputs(inputs, out.length)
    const gram = context.gram
    if (needsGram && gram?.length !== n * n) {
      throw new InvalidParametersError(`${parsed.name} needs the ${n} × ${n} Gram matrix of the whole inputs`, { details: { rule: parsed.name, n } })
    }
    if (vals.length < n) vals = new Float64Array(n)
    if (stages.length === 0 && parsed.name === 'Average') {
      meanInto(inputs, out, acc)
      return { rejected: [], weights: new Float64Array(n).fill(1 / n) }
    }
    const seed = context.seed ?? 0
    let mix: Mixing | undefined
    let g = needsGram ? gram : undefined
    let m = n
    for (const stage of stages) {
      const next = stage.mixing(g, m, seed)
      g = g === undefined ? undefined : mixGram(next, g)
      mix = mix === undefined ? next : composeMixing(mix, next)
      m = next.m
    }
    const plan = rule.plan(g, m)
    if (plan.kind === 'linear') {
      const weights = mix === undefined ? plan.weights : backProject(mix, plan.weights)
      weightedSum(inputs, weights, out, acc)
      const rejected: number[] = []
      weights.forEach((w, i) => { if (w === 0) rejected.push(i) })
      return { rejected, weights }
    }
    const rows = plan.rows ?? Array.from({ length: m }, (_, k) => k)
    let selected: Float32Array[]
    if (mix === undefined) {
      selected = rows.map((k) => inputs[k] as Float32Array)
    } else {
      while (mixed.length < rows.length) mixed.push(new Float32Array(0))
      mixed = mixed.map((buf) => buf.length >= out.length ? buf : new Float32Array(out.length))
      const { matrix } = mix
      selected = rows.map((k, t) => {
        const y = (mixed[t] as Float32Array).subarray(0, out.length)
        weightedSum(inputs, matrix.subarray(k * n, (k + 1) * n), y, acc)
        return y
      })
    }
    plan.apply(selected, out, vals)
    const used = new Uint8Array(n)
    for (const k of rows) {
      if (mix === undefined) used[k] = 1
      else for (let j = 0; j < n; j++) if (mix.matrix[k * n + j] !== 0) used[j] = 1
    }
    const rejected: number[] = []
    used.forEach((u, i) => { if (u === 0) rejected.push(i) })
    return { rejected }
  }

  return { name: parsed.name, f, needsGram, spec: parsed, minInputs, check, aggregateSlice }
}

/** Weights over the original inputs: Mᵀ w. */
function backProject (mix: Mixing, w: Float64Array): Float64Array {
  const out = new Float64Array(mix.n)
  for (let k = 0; k < mix.m; k++) {
    const wk = w[k]!
    if (wk === 0) continue
    for (let j = 0; j < mix.n; j++) out[j]! += wk * mix.matrix[k * mix.n + j]!
  }
  return out
}

/** What {@link aggregateWithReport} returns. */
export interface AggregationResult {
  /** The aggregate (the `out` array when one was given). */
  out: Float32Array
  report: AggregationReport
}

/**
 * Runs a rule on whole vectors: computes the Gram matrix when the rule needs it, then aggregates
 * all coordinates as one slice. Returns the output and the rule's report.
 */
export function aggregateWithReport (aggregator: Aggregator, inputs: readonly Float32Array[], out?: Float32Array, options: { seed?: number } = {}): AggregationResult {
  if (inputs.length === 0) throw new InvalidParametersError('No inputs to aggregate')
  const d = (inputs[0] as Float32Array).length
  const result = out ?? new Float32Array(d)
  if (result.length !== d) throw new InvalidParametersError(`Output has ${result.length} values, inputs have ${d}`)
  const context: SliceContext = {}
  if (aggregator.needsGram) context.gram = gramPartial(inputs)
  if (options.seed !== undefined) context.seed = options.seed
  const report = aggregator.aggregateSlice(inputs, result, context)
  return { out: result, report }
}

/** Runs a rule on whole vectors (see {@link aggregateWithReport}) and returns the aggregate. */
export function aggregate (aggregator: Aggregator, inputs: readonly Float32Array[], out?: Float32Array, options: { seed?: number } = {}): Float32Array {
  return aggregateWithReport(aggregator, inputs, out, options).out
}
