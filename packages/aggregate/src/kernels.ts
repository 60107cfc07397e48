/**
 * Typed-array kernels shared by every rule: the partial Gram matrix, weighted sums and the plain
 * mean. Sums run in float64 over float32 inputs; loops are blocked over coordinates so a block of
 * every input stays in cache while it is reused.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'

/** Coordinates per block: n inputs × 1024 float32 stay within L2 for n ≤ 64. */
export const BLOCK = 1024

/** Throws unless every input has the same length as `length` (and there is at least one). */
export function assertInputs (inputs: readonly Float32Array[], length: number): void {
  if (inputs.length === 0) throw new InvalidParametersError('No inputs to aggregate')
  for (let i = 0; i < inputs.length; i++) {
    const x = inputs[i] as Float32Array
    if (x.length !== length) {
      throw new InvalidParametersError(`Input ${i} has ${x.length} values, expected ${length}`, { details: { index: i, length: x.length, expected: length } })
    }
  }
}

/**
 * The partial Gram matrix of one coordinate slice: `out[i * n + j] = Σ_k inputs[i][k] · inputs[j][k]`
 * over this slice's coordinates, accumulated in float64. The Gram matrix of the whole vectors is
 * the sum of the partial matrices of disjoint slices (sum them in slice order so every owner gets
 * the same bits). `out` (n × n, row-major) is overwritten, not accumulated into.
 */
export function gramPartial (inputs: readonly Float32Array[], out?: Float64Array): Float64Array {
  const n = inputs.length
  if (n === 0) throw new InvalidParametersError('No inputs for the Gram matrix')
  const d = (inputs[0] as Float32Array).length
  assertInputs(inputs, d)
  const g = out ?? new Float64Array(n * n)
  if (g.length !== n * n) throw new InvalidParametersError(`Gram output has ${g.length} entries, expected ${n * n}`)
  g.fill(0)
  for (let start = 0; start < d; start += BLOCK) {
    const end = Math.min(d, start + BLOCK)
    for (let i = 0; i < n; i++) {
      const xi = inputs[i] as Float32Array
      for (let j = 0; j <= i; j++) {
        const xj = inputs[j] as Float32Array
        let s = 0
        for (let k = start; k < end; k++) s += xi[k]! * xj[k]!
        g[i * n + j]! += s
      }
    }
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) g[j * n + i] = g[i * n + j]!
  }
  return g
}

/**
 * `out[k] = Σ_j weights[j] · inputs[j][k]` in float64, skipping zero weights (so a rejected
 * non-finite input cannot turn the result into NaN). Each coordinate is summed in input order, so
 * any split of the coordinates into slices gives bit-identical results. `scratch` must hold at least
 * {@link BLOCK} values.
 */
export function weightedSum (inputs: readonly Float32Array[], weights: Float64Array, out: Float32Array, scratch: Float64Array): void {
  const d = out.length
  for (let start = 0; start < d; start += BLOCK) {
    const len = Math.min(d, start + BLOCK) - start
    scratch.fill(0, 0, len)
    for (let j = 0; j < inputs.length; j++) {
      const w = weights[j]!
      if (w === 0) continue
      const x = inputs[j] as Float32Array
      for (let k = 0; k < len; k++) scratch[k]! += w * x[start + k]!
    }
    for (let k = 0; k < len; k++) out[start + k] = scratch[k]!
  }
}

/** `out = (Σ_j inputs[j]) / n`, summed in float64 in input order per coordinate. */
export function meanInto (inputs: readonly Float32Array[], out: Float32Array, scratch: Float64Array): void {
  const d = out.length
  const n = inputs.length
  for (let start = 0; start < d; start += BLOCK) {
    const len = Math.min(d, start + BLOCK) - start
    scratch.fill(0, 0, len)
    for (let j = 0; j < n; j++) {
      const x = inputs[j] as Float32Array
      for (let k = 0; k < len; k++) scratch[k]! += x[start + k]!
    }
    for (let k = 0; k < len; k++) out[start + k] = scratch[k]! / n
  }
}

/** True when input i's squared norm (the Gram diagonal) is finite, i.e. it holds no NaN or ±∞. */
export function finiteMask (gram: Float64Array, n: number): Uint8Array {
  const ok = new Uint8Array(n)
  for (let i = 0; i < n; i++) ok[i] = Number.isFinite(gram[i * n + i]!) ? 1 : 0
  return ok
}

/**
 * Squared Euclidean distances from the Gram matrix: `‖x_i − x_j‖² = G_ii + G_jj − 2 G_ij`, clamped
 * at 0 against rounding, and +∞ where either input is non-finite. Identical inputs give exactly 0.
 */
export function squaredDistances (gram: Float64Array, n: number): Float64Array {
  const dist = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      let v = gram[i * n + i]! + gram[j * n + j]! - 2 * gram[i * n + j]!
      if (!Number.isFinite(v)) v = Infinity
      else if (v < 0) v = 0
      dist[i * n + j] = v
      dist[j * n + i] = v
    }
  }
  return dist
}
