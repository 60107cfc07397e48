/**
 * Pre-aggregators as mixing matrices: each maps n inputs to m mixed inputs y_k = Σ_j M[k, j]·x_j,
 * with M computed from the Gram matrix (NNM, Clipping, ARC) or from the seed (Bucketing) only, so a
 * whole pipeline stays one Gram pass plus one combine pass over the coordinates.
 *
 * @module
 */
import { finiteMask, squaredDistances } from './kernels.js'
import { seededPermutation } from './rng.js'

/** A row-major m × n mixing matrix. */
export interface Mixing {
  m: number
  n: number
  matrix: Float64Array
}

/** Nearest-neighbour mixing: y_i = mean of the n − f inputs nearest to x_i, itself included (ties → lower index). */
export function nnmMixing (gram: Float64Array, n: number, f: number): Mixing {
  const dist = squaredDistances(gram, n)
  const keep = n - f
  const matrix = new Float64Array(n * n)
  const order = Array.from({ length: n }, (_, j) => j)
  for (let i = 0; i < n; i++) {
    order.sort((a, b) => (dist[i * n + a]! - dist[i * n + b]!) || a - b)
    for (let t = 0; t < keep; t++) matrix[i * n + order[t]!] = 1 / keep
  }
  return { m: n, n, matrix }
}

/** Bucketing: a seeded permutation, then the mean of each consecutive group of s (the last group may be smaller). */
export function bucketingMixing (n: number, s: number, seed: number): Mixing {
  const perm = seededPermutation(n, seed)
  const m = Math.ceil(n / s)
  const matrix = new Float64Array(m * n)
  for (let k = 0; k < m; k++) {
    const end = Math.min(n, (k + 1) * s)
    for (let t = k * s; t < end; t++) matrix[k * n + perm[t]!] = 1 / (end - k * s)
  }
  return { m, n, matrix }
}

function norms (gram: Float64Array, n: number): Float64Array {
  const finite = finiteMask(gram, n)
  return Float64Array.from({ length: n }, (_, i) => finite[i] === 1 ? Math.sqrt(gram[i * n + i]!) : Infinity)
}

function diagonal (scale: Float64Array): Mixing {
  const n = scale.length
  const matrix = new Float64Array(n * n)
  for (let i = 0; i < n; i++) matrix[i * n + i] = scale[i]!
  return { m: n, n, matrix }
}

/** Static clipping: x_i · min(1, c/‖x_i‖); a non-finite input becomes the zero vector. */
export function clippingMixing (gram: Float64Array, n: number, c: number): Mixing {
  const norm = norms(gram, n)
  return diagonal(Float64Array.from(norm, (v) => v === Infinity ? 0 : v <= c ? 1 : c / v))
}

/**
 * Adaptive robust clipping (ARC): the k = ⌊2f(n − f)/n⌋ largest inputs are clipped to the norm of the
 * largest one left unclipped; a non-finite input becomes the zero vector.
 */
export function arcMixing (gram: Float64Array, n: number, f: number): Mixing {
  const norm = norms(gram, n)
  const k = Math.floor(2 * f * (n - f) / n)
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (norm[b]! - norm[a]!) || a - b)
  const scale = new Float64Array(n).fill(1)
  if (k > 0 && k < n) {
    const threshold = norm[order[k]!]!
    for (let t = 0; t < k; t++) {
      const i = order[t]!
      const v = norm[i]!
      scale[i] = v === Infinity ? 0 : v > threshold ? threshold / v : 1
    }
  }
  return diagonal(scale)
}

/** Gram matrix of the mixed inputs, M G Mᵀ, skipping zero entries so non-finite rows do not leak NaN. */
export function mixGram (mix: Mixing, gram: Float64Array): Float64Array {
  const { m, n, matrix } = mix
  const tmp = new Float64Array(m * n)
  for (let k = 0; k < m; k++) {
    for (let i = 0; i < n; i++) {
      const a = matrix[k * n + i]!
      if (a === 0) continue
      for (let j = 0; j < n; j++) {
        const g = gram[i * n + j]!
        if (g !== 0) tmp[k * n + j]! += a * g
      }
    }
  }
  const out = new Float64Array(m * m)
  for (let k = 0; k < m; k++) {
    for (let l = 0; l < m; l++) {
      let s = 0
      for (let j = 0; j < n; j++) {
        const b = matrix[l * n + j]!
        if (b !== 0) s += tmp[k * n + j]! * b
      }
      out[k * m + l] = s
    }
  }
  return out
}

/** The product second ∘ first: (second.matrix) · (first.matrix). */
export function composeMixing (first: Mixing, second: Mixing): Mixing {
  const { n } = first
  const m = second.m
  const matrix = new Float64Array(m * n)
  for (let k = 0; k < m; k++) {
    for (let t = 0; t < first.m; t++) {
      const a = second.matrix[k * first.m + t]!
      if (a === 0) continue
      for (let j = 0; j < n; j++) matrix[k * n + j]! += a * first.matrix[t * n + j]!
    }
  }
  return { m, n, matrix }
}
