/**
 * Aggregator compliance suite: the same cases run against every aggregation rule.
 *
 * Cases: `check(n)` rejects too few inputs; permutation invariance; identical inputs give that
 * input; the output stays bounded when f inputs are arbitrary (huge, +∞, NaN) — run on the plain
 * mean with `robust: false` as the control, where it must *fail*; agreement with a slow reference;
 * hand-checked vectors; and sharding: aggregating the whole vector equals concatenating three
 * uneven slices aggregated with the full Gram matrix, bit for bit.
 *
 * @example
 * ```ts
 * import { aggregatorComplianceSuite } from '@phalanx/testing/aggregator'
 * import { createAggregator } from '@phalanx/aggregate'
 *
 * aggregatorComplianceSuite({ name: 'TrMean', f: 2 }, {
 *   create: (spec) => createAggregator(spec),
 *   minInputs: 5,
 *   reference: (xs) => myTrimmedMean(xs, 2)
 * })
 * ```
 *
 * @module
 */
import { InsufficientInputsError, type Aggregator, type SliceContext, mulberry32 } from '@phalanx/core'
import { describe, expect, it } from 'vitest'

/** How the suite builds and judges one rule. */
export interface AggregatorSuiteOptions<S> {
  /** Creates the aggregator under test from the spec. */
  create(spec: S): Aggregator
  /** The smallest n the rule accepts; `check(minInputs - 1)` must throw `InsufficientInputsError`. */
  minInputs: number
  /** Number of inputs used by the random cases. @default max(minInputs, 7) */
  n?: number
  /** Vector length used by the random cases. @default 37 */
  d?: number
  /**
   * Whether the rule claims robustness: with `byzantine` arbitrary inputs the output must stay within
   * `boundFactor` × (largest honest norm) of the honest mean, and finite. `false` (the mean control)
   * asserts the opposite: the check must catch it. @default true
   */
  robust?: boolean
  /** How many inputs the robustness case corrupts. @default the aggregator's f (at least 1) */
  byzantine?: number
  /** @default 10 */
  boundFactor?: number
  /** Also corrupt with ±∞ and NaN (rules that reject non-finite inputs). @default true when robust */
  nonFinite?: boolean
  /** Permuting the inputs leaves the output unchanged (not true of seeded bucketing). @default true */
  permutationInvariant?: boolean
  /** Identical inputs give that input (not true of the Flag Aggregator's reference scale). @default true */
  identity?: boolean
  /** Slow float64 reference on the same inputs; compared within `tolerance` (relative). */
  reference?: (inputs: number[][], context: { seed: number }) => number[]
  /** @default 1e-5 */
  tolerance?: number
  /** Hand-checked vectors: exact expected outputs within 1e-6. */
  cases?: Array<{ inputs: number[][], expected: number[], seed?: number }>
  /** Seed passed as `SliceContext.seed`. @default 7 */
  seed?: number
}


/** Random inputs in [-1, 1), seeded. */
export function randomInputs (n: number, d: number, seed: number): Float32Array[] {
  const next = mulberry32(seed)
  return Array.from({ length: n }, () => Float32Array.from({ length: d }, () => 2 * next() - 1))
}

/** Straightforward float64 Gram matrix (independent of the package's blocked kernel). */
export function slowGram (inputs: readonly Float32Array[]): Float64Array {
  const n = inputs.length
  const g = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0
      const a = inputs[i]!
      const b = inputs[j]!
      for (let k = 0; k < a.length; k++) s += a[k]! * b[k]!
      g[i * n + j] = s
    }
  }
  return g
}

function run (agg: Aggregator, inputs: readonly Float32Array[], seed: number): Float32Array {
  const out = new Float32Array(inputs[0]!.length)
  const context: SliceContext = { seed }
  if (agg.needsGram) context.gram = slowGram(inputs)
  agg.aggregateSlice(inputs, out, context)
  return out
}

function maxRelDiff (a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0
  let den = 0
  for (let k = 0; k < a.length; k++) {
    num = Math.max(num, Math.abs(a[k]! - b[k]!))
    den = Math.max(den, Math.abs(b[k]!))
  }
  return num / Math.max(den, 1e-12)
}

function distanceToMean (out: Float32Array, honest: readonly Float32Array[]): number {
  let s = 0
  for (let k = 0; k < out.length; k++) {
    let m = 0
    for (const x of honest) m += x[k]!
    const e = out[k]! - m / honest.length
    s += e * e
  }
  return Math.sqrt(s)
}

/** Registers the compliance cases for one rule spec (a `describe` block named after it). */
export function aggregatorComplianceSuite<S extends { name: string }> (spec: S, options: AggregatorSuiteOptions<S>): void {
  const n = options.n ?? Math.max(options.minInputs, 7)
  const d = options.d ?? 37
  const seed = options.seed ?? 7
  const robust = options.robust ?? true
  describe(`aggregator compliance: ${JSON.stringify(spec)}`, () => {
    it('check(n) rejects too few inputs and accepts enough', () => {
      const agg = options.create(spec)
      expect(() => { agg.check(options.minInputs) }).not.toThrow()
      expect(() => { agg.check(n) }).not.toThrow()
      if (options.minInputs > 1) {
        expect(() => { agg.check(options.minInputs - 1) }).toThrow(expect.objectContaining({ name: InsufficientInputsError.name }))
        const inputs = randomInputs(options.minInputs - 1, d, seed)
        expect(() => run(agg, inputs, seed)).toThrow(expect.objectContaining({ name: InsufficientInputsError.name }))
      }
    })

    if (options.permutationInvariant ?? true) {
      it('is invariant to the order of its inputs', () => {
        const agg = options.create(spec)
        const inputs = randomInputs(n, d, seed + 1)
        const a = run(agg, inputs, seed)
        const permuted = inputs.map((_, i) => inputs[(i * 3 + 1) % n]!)
        expect(new Set(permuted).size).toBe(n)
        const b = run(agg, permuted, seed)
        expect(maxRelDiff(b, a)).toBeLessThan(1e-6)
      })
    }

    if (options.identity ?? true) {
      it('returns the input when all inputs are identical', () => {
        const agg = options.create(spec)
        const x = randomInputs(1, d, seed + 2)[0]!
        const out = run(agg, Array.from({ length: n }, () => x.slice()), seed)
        expect(maxRelDiff(out, x)).toBeLessThan(1e-6)
      })
    }

    it(robust ? 'stays bounded when f inputs are arbitrary' : 'is NOT robust (control): arbitrary inputs move it unboundedly', () => {
      const agg = options.create(spec)
      const f = options.byzantine ?? Math.max(1, agg.f)
      const honest = randomInputs(n - f, d, seed + 3)
      const maxNorm = Math.max(...honest.map((x) => Math.hypot(...x)))
      const bound = (options.boundFactor ?? 10) * maxNorm
      const next = mulberry32(seed + 4)
      const attacks: Array<[string, () => Float32Array]> = [
        ['huge constant', () => new Float32Array(d).fill(1e30)],
        ['huge random', () => Float32Array.from({ length: d }, () => (next() - 0.5) * 1e32)]
      ]
      if (options.nonFinite ?? robust) {
        attacks.push(['+inf', () => new Float32Array(d).fill(Infinity)], ['NaN', () => new Float32Array(d).fill(Number.NaN)])
      }
      for (const [label, make] of attacks) {
        // Byzantine inputs first and last, so index-based tie-breaking cannot hide them.
        const byz = Array.from({ length: f }, make)
        const inputs = [...byz.slice(0, Math.ceil(f / 2)), ...honest, ...byz.slice(Math.ceil(f / 2))]
        const out = run(agg, inputs, seed)
        const dist = distanceToMean(out, honest)
        if (robust) {
          expect(out.every(Number.isFinite), label).toBe(true)
          expect(dist, label).toBeLessThanOrEqual(bound)
        } else {
          expect(Number.isFinite(dist) && dist <= bound, label).toBe(false)
        }
      }
    })

    if (options.reference !== undefined) {
      const reference = options.reference
      it('agrees with the slow float64 reference on random inputs', () => {
        const agg = options.create(spec)
        for (let trial = 0; trial < 3; trial++) {
          const inputs = randomInputs(n + trial, d + 5 * trial, seed + 10 + trial)
          const out = run(agg, inputs, seed + trial)
          const ref = reference(inputs.map((x) => Array.from(x)), { seed: seed + trial })
          expect(maxRelDiff(out, ref)).toBeLessThan(options.tolerance ?? 1e-5)
        }
      })
    }

    if (options.cases !== undefined && options.cases.length > 0) {
      const cases = options.cases
      it('gives the hand-checked outputs', () => {
        const agg = options.create(spec)
        for (const c of cases) {
          const out = run(agg, c.inputs.map((x) => Float32Array.from(x)), c.seed ?? seed)
          expect(out.length).toBe(c.expected.length)
          c.expected.forEach((v, k) => { expect(out[k]).toBeCloseTo(v, 5) })
        }
      })
    }

    it('gives bit-identical results when aggregated as three uneven slices with the full Gram matrix', () => {
      const agg = options.create(spec)
      const inputs = randomInputs(n, d, seed + 5)
      const whole = run(agg, inputs, seed)
      const gram = slowGram(inputs)
      const cuts = [0, Math.floor(d / 7), Math.floor(d * 3 / 5), d]
      const sliced = new Float32Array(d)
      for (let s = 0; s < 3; s++) {
        const lo = cuts[s]!
        const hi = cuts[s + 1]!
        const context: SliceContext = { seed }
        if (agg.needsGram) context.gram = gram
        agg.aggregateSlice(inputs.map((x) => x.subarray(lo, hi)), sliced.subarray(lo, hi), context)
      }
      expect(Array.from(new Uint32Array(sliced.buffer))).toEqual(Array.from(new Uint32Array(whole.buffer)))
    })
  })
}
