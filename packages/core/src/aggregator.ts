/**
 * The aggregation contract between the elastic core's sharded reduce and the rules of
 * `@phalanx/aggregate` (mean, median, Krum, Flag Aggregator, ...).
 *
 * Every rule can run **sharded**: each member of the quorum owns a slice of the coordinates and
 * aggregates only that slice, so no process gathers whole vectors. Coordinate-wise rules need
 * nothing else. Distance-based rules need the n × n Gram matrix of the *whole* input vectors
 * (pairwise dot products); it is the sum of the per-slice partial Gram matrices, which are tiny
 * (n² float64) and all-gathered among the slice owners, summed in slice order so every owner sees
 * the same bits. From the Gram matrix every such rule (Krum, geometric median, CenteredClip, Flag,
 * NNM, clipping, bucketing) derives per-input weights or a mixing matrix deterministically, and
 * applies them to its slice.
 *
 * @module
 */

/** What a rule is told besides its slice of the inputs. */
export interface SliceContext {
  /**
   * Row-major n × n Gram matrix of the whole input vectors, `gram[i * n + j] = <x_i, x_j>`,
   * present when {@link Aggregator.needsGram} is true.
   */
  gram?: Float64Array
  /** Seed for randomised rules (bucketing): the same on every slice owner for a step. */
  seed?: number
}

/** What a rule says about the inputs it aggregated (identical on every slice for Gram-based rules). */
export interface AggregationReport {
  /** Indices of inputs given no weight at all (e.g. not selected by Krum). */
  rejected: number[]
  /** Effective weight per input for rules that combine inputs linearly; absent for coordinate-wise rules. */
  weights?: Float64Array
}

/**
 * A (robust) aggregation rule over n float32 vectors of equal length.
 * Create one with `createAggregator({ name, ...params })` from `@phalanx/aggregate`.
 */
export interface Aggregator {
  /** ByzFL-compatible rule name, e.g. `'Krum'`, `'TrMean'`, `'Average'`. */
  readonly name: string
  /** Number of arbitrary (Byzantine) inputs the rule is configured to tolerate. */
  readonly f: number
  /** True when {@link aggregateSlice} needs {@link SliceContext.gram}. */
  readonly needsGram: boolean
  /** Throws `InsufficientInputsError` when `n` inputs are too few for {@link f}. */
  check(n: number): void
  /**
   * Aggregates one coordinate slice: `inputs[i]` is input i's slice, all of the same length as
   * `out`, which receives the result. Deterministic given its arguments.
   */
  aggregateSlice(inputs: readonly Float32Array[], out: Float32Array, context: SliceContext): AggregationReport
}
