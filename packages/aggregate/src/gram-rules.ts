/**
 * Distance-based rules expressed on the Gram matrix only. Each returns per-input weights (the
 * output is Σ weights[i]·x_i), so every slice owner derives the same weights from the same Gram
 * matrix and applies them to its own coordinates. Non-finite inputs (a NaN or ±∞ anywhere, seen as
 * a non-finite Gram diagonal) always get weight 0.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'
import { finiteMask, squaredDistances } from './kernels.js'
import { symmetricEigen } from './linalg.js'

/** How many nearest neighbours a Krum score sums: ByzFL uses n − f − 1, Blanchard et al. n − f − 2. */
export type KrumNeighbours = 'n-f-1' | 'n-f-2'

/** Krum scores of the inputs listed in `members`, computed among those members only. */
export function krumScores (dist: Float64Array, n: number, members: readonly number[], f: number, neighbours: KrumNeighbours, finite: Uint8Array): Float64Array {
  const size = members.length
  const k = Math.max(0, size - f - (neighbours === 'n-f-1' ? 1 : 2))
  const scores = new Float64Array(size)
  const row = new Float64Array(Math.max(0, size - 1))
  for (let a = 0; a < size; a++) {
    const i = members[a]!
    if (finite[i] === 0) {
      scores[a] = Infinity
      continue
    }
    let len = 0
    for (let b = 0; b < size; b++) if (b !== a) row[len++] = dist[i * n + members[b]!]!
    row.sort()
    let s = 0
    for (let t = 0; t < k; t++) s += row[t]!
    scores[a] = s
  }
  return scores
}

/** Member positions ordered by (score, position): ties go to the lowest index, as in ByzFL. */
function orderByScore (scores: Float64Array): number[] {
  return Array.from(scores.keys()).sort((a, b) => (scores[a]! - scores[b]!) || a - b)
}

/** Krum: weight 1 on the input with the lowest score. */
export function krumWeights (gram: Float64Array, n: number, f: number, neighbours: KrumNeighbours): Float64Array {
  return multiKrumWeights(gram, n, f, 1, neighbours)
}

/** Multi-Krum: equal weights on the `m` inputs with the lowest Krum scores (finite inputs only). */
export function multiKrumWeights (gram: Float64Array, n: number, f: number, m: number, neighbours: KrumNeighbours): Float64Array {
  const finite = finiteMask(gram, n)
  const dist = squaredDistances(gram, n)
  const members = Array.from({ length: n }, (_, i) => i)
  const order = orderByScore(krumScores(dist, n, members, f, neighbours, finite)).filter((i) => finite[i] === 1).slice(0, m)
  const w = new Float64Array(n)
  for (const i of order) w[i] = 1 / order.length
  return w
}

/** Bulyan's selection: n − 2f rounds of Krum on the remaining inputs; returns the picked indices. */
export function bulyanSelection (gram: Float64Array, n: number, f: number, neighbours: KrumNeighbours): number[] {
  const finite = finiteMask(gram, n)
  const dist = squaredDistances(gram, n)
  const remaining = Array.from({ length: n }, (_, i) => i)
  const picked: number[] = []
  const rounds = n - 2 * f
  for (let t = 0; t < rounds; t++) {
    const scores = krumScores(dist, n, remaining, f, neighbours, finite)
    const best = orderByScore(scores)[0]!
    picked.push(remaining[best]!)
    remaining.splice(best, 1)
  }
  return picked.sort((a, b) => a - b)
}

function finiteIndices (finite: Uint8Array): number[] {
  const out: number[] = []
  for (let i = 0; i < finite.length; i++) if (finite[i] === 1) out.push(i)
  return out
}

/** Distances ‖Σ c_j x_j − x_i‖ for every i in `members`, from the Gram matrix. */
function distancesToCombination (gram: Float64Array, n: number, c: Float64Array, members: readonly number[], out: Float64Array): void {
  const gc = new Float64Array(n)
  let q = 0
  for (const i of members) {
    let s = 0
    for (const j of members) s += gram[i * n + j]! * c[j]!
    gc[i] = s
    q += c[i]! * s
  }
  for (const i of members) out[i] = Math.sqrt(Math.max(0, q - 2 * gc[i]! + gram[i * n + i]!))
}

/** Smoothed Weiszfeld (RFA), ByzFL form: z₀ = 0, β_i = 1 / max(ν, ‖z − x_i‖), z = Σβ_i x_i / Σβ_i, T times. */
export function geometricMedianWeights (gram: Float64Array, n: number, nu: number, iterations: number): Float64Array {
  const members = finiteIndices(finiteMask(gram, n))
  const c = new Float64Array(n)
  const d = new Float64Array(n)
  for (let t = 0; t < iterations; t++) {
    distancesToCombination(gram, n, c, members, d)
    let total = 0
    for (const i of members) total += 1 / Math.max(nu, d[i]!)
    for (const i of members) c[i] = (1 / Math.max(nu, d[i]!)) / total
  }
  return c
}

/** Where CenteredClipping starts: at 0 (ByzFL's first call), the mean, or the medoid of the inputs. */
export type CenteredClipInit = 'zero' | 'mean' | 'medoid'

/** CenteredClipping: v ← v + (1/n) Σ (x_i − v)·min(1, τ/‖x_i − v‖), L times, in coefficient form. */
export function centeredClipWeights (gram: Float64Array, n: number, tau: number, iterations: number, init: CenteredClipInit): Float64Array {
  const members = finiteIndices(finiteMask(gram, n))
  const c = new Float64Array(n)
  const h = members.length
  if (h === 0) return c
  if (init === 'mean') {
    for (const i of members) c[i] = 1 / h
  } else if (init === 'medoid') {
    const dist = squaredDistances(gram, n)
    let best = members[0]!
    let bestScore = Infinity
    for (const i of members) {
      let s = 0
      for (const j of members) s += Math.sqrt(dist[i * n + j]!)
      if (s < bestScore) {
        bestScore = s
        best = i
      }
    }
    c[best] = 1
  }
  const d = new Float64Array(n)
  const clip = new Float64Array(n)
  for (let l = 0; l < iterations; l++) {
    distancesToCombination(gram, n, c, members, d)
    let total = 0
    for (const i of members) {
      const di = d[i]!
      clip[i] = di === 0 ? 1 : Math.min(1, tau / di)
      total += clip[i]!
    }
    for (const i of members) c[i] = c[i]! * (1 - total / h) + clip[i]! / h
  }
  return c
}

/**
 * Minimum-diameter averaging: the mean of the n − f inputs whose largest pairwise distance is
 * smallest (first such subset in lexicographic order), found by branch and bound.
 */
export function mdaWeights (gram: Float64Array, n: number, f: number, maxSubsets: number): Float64Array {
  const size = n - f
  let count = 1
  for (let i = 0; i < Math.min(f, size); i++) count = count * (n - i) / (i + 1)
  if (count > maxSubsets) {
    throw new InvalidParametersError(`MDA would search ${Math.round(count)} subsets (n = ${n}, f = ${f}); the limit is maxSubsets = ${maxSubsets}`,
      { details: { n, f, maxSubsets } })
  }
  const dist = squaredDistances(gram, n)
  const current: number[] = []
  let best: number[] | undefined
  let bestDiameter = Infinity
  const search = (start: number, diameter: number): void => {
    if (diameter >= bestDiameter) return
    if (current.length === size) {
      bestDiameter = diameter
      best = [...current]
      return
    }
    for (let i = start; i <= n - (size - current.length); i++) {
      let dm = diameter
      for (const j of current) dm = Math.max(dm, dist[i * n + j]!)
      current.push(i)
      search(i + 1, dm)
      current.pop()
    }
  }
  search(0, 0)
  const chosen = best ?? finiteIndices(finiteMask(gram, n))
  const w = new Float64Array(n)
  for (const i of chosen) w[i] = 1 / chosen.length
  return w
}

/** How the Flag Aggregator output is scaled: as released (unit inputs, norm ≤ p/r) or back to the median input norm. */
export type FlagScale = 'reference' | 'medianNorm'

/** Flag Aggregator parameters (see the docs for the reference implementation they mirror). */
export interface FlagParams {
  r: number
  lambda: number
  iterations: number
  eps: number
  scale: FlagScale
}

/**
 * The Flag Aggregator (Almasi et al., ICLR 2024) in Gram space: IRLS over the subspace Y spanned by
 * weighted unit inputs, where every SVD of the d × m column matrix X̂C is replaced by the
 * eigendecomposition of the m × m matrix CᵀĜC. Output = X̂·(1/r)·B·Bᵀ·Ĝ·1 with Y = X̂B.
 */
export function flagWeights (gram: Float64Array, n: number, params: FlagParams): Float64Array {
  const members = finiteIndices(finiteMask(gram, n))
  const p = members.length
  const weights = new Float64Array(n)
  if (p === 0) return weights
  const norms = members.map((i) => Math.sqrt(gram[i * n + i]!))
  const inv = norms.map((v) => 1 / Math.max(v, 1e-12))
  const gh = new Float64Array(p * p)
  for (let a = 0; a < p; a++) {
    for (let b = 0; b < p; b++) gh[a * p + b] = gram[members[a]! * n + members[b]!]! * inv[a]! * inv[b]!
  }
  const pairs: Array<[number, number]> = []
  if (params.lambda > 0) {
    for (let a = 0; a < p; a++) for (let b = 0; b < p; b++) if (a !== b) pairs.push([a, b])
  }
  const m = p + pairs.length
  const pairScale = pairs.length > 0 ? params.lambda / (p * (p - 1)) : 0
  let vsq = new Float64Array(p)
  let pairVsq = new Float64Array(pairs.length)
  const objective = (v: Float64Array): number => v.reduce((s, x) => s + Math.sqrt(Math.max(0, 1 - x)), 0)
  let energy = objective(vsq)
  let basis: { b: Float64Array, rank: number } | undefined
  for (let it = 0; it < params.iterations; it++) {
    const c = new Float64Array(p * m)
    for (let a = 0; a < p; a++) c[a * m + a] = (Math.abs(1 - vsq[a]!) + params.eps) ** -0.25
    pairs.forEach(([a, b], t) => {
      const w = (Math.abs(1 - pairVsq[t]!) + params.eps) ** -0.25 * pairScale
      c[a * m + p + t] = w
      c[b * m + p + t] = -w
    })
    const gc = matmul(gh, c, p, p, m)
    const mm = new Float64Array(m * m)
    for (let x = 0; x < m; x++) {
      for (let y = 0; y < m; y++) {
        let s = 0
        for (let a = 0; a < p; a++) s += c[a * m + x]! * gc[a * m + y]!
        mm[x * m + y] = s
      }
    }
    const eig = symmetricEigen(mm, m)
    const top = eig.values[0]!
    let rank = 0
    while (rank < Math.min(params.r, m) && eig.values[rank]! > 1e-12 * top && eig.values[rank]! > 0) rank++
    if (rank === 0) break
    const b = new Float64Array(p * rank)
    for (let a = 0; a < p; a++) {
      for (let k = 0; k < rank; k++) {
        let s = 0
        for (let x = 0; x < m; x++) s += c[a * m + x]! * eig.vectors[x * m + k]!
        b[a * rank + k] = s / Math.sqrt(eig.values[k]!)
      }
    }
    const proj = projections(b, gh, p, rank)
    const nextVsq = new Float64Array(p)
    for (let a = 0; a < p; a++) for (let k = 0; k < rank; k++) nextVsq[a]! += proj[k * p + a]! ** 2
    const nextEnergy = objective(nextVsq)
    const decrease = energy - nextEnergy
    if (!(decrease > 0)) break
    basis = { b, rank }
    vsq = nextVsq
    pairVsq = Float64Array.from(pairs, ([x, y]) => {
      let s = 0
      for (let k = 0; k < rank; k++) s += (proj[k * p + x]! - proj[k * p + y]!) ** 2
      return s
    })
    energy = nextEnergy
    if (decrease <= 1e-10 || energy <= 1e-10) break
  }
  if (basis === undefined) return weights
  const { b, rank } = basis
  const ones = new Float64Array(p)
  for (let a = 0; a < p; a++) {
    let s = 0
    for (let x = 0; x < p; x++) s += gh[a * p + x]!
    ones[a] = s
  }
  const t = new Float64Array(rank)
  for (let k = 0; k < rank; k++) {
    let s = 0
    for (let a = 0; a < p; a++) s += b[a * rank + k]! * ones[a]!
    t[k] = s
  }
  let factor = 1 / params.r
  if (params.scale === 'medianNorm') {
    const sorted = [...norms].sort((x, y) => x - y)
    const h = p >> 1
    const med = (p & 1) === 1 ? sorted[h]! : (sorted[h - 1]! + sorted[h]!) / 2
    factor *= med * params.r / p
  }
  for (let a = 0; a < p; a++) {
    let s = 0
    for (let k = 0; k < rank; k++) s += b[a * rank + k]! * t[k]!
    weights[members[a]!] = s * factor * inv[a]!
  }
  return weights
}

function matmul (a: Float64Array, b: Float64Array, rows: number, inner: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols)
  for (let i = 0; i < rows; i++) {
    for (let k = 0; k < inner; k++) {
      const v = a[i * inner + k]!
      if (v === 0) continue
      for (let j = 0; j < cols; j++) out[i * cols + j]! += v * b[k * cols + j]!
    }
  }
  return out
}

/** P = Bᵀ Ĝ (rank × p): column a holds Yᵀ x̂_a. */
function projections (b: Float64Array, gh: Float64Array, p: number, rank: number): Float64Array {
  const out = new Float64Array(rank * p)
  for (let k = 0; k < rank; k++) {
    for (let a = 0; a < p; a++) {
      let s = 0
      for (let x = 0; x < p; x++) s += b[x * rank + k]! * gh[x * p + a]!
      out[k * p + a] = s
    }
  }
  return out
}
