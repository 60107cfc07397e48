/**
 * Dense symmetric eigendecomposition (cyclic Jacobi) for the small m × m matrices of the Flag
 * Aggregator's Gram-space form. m is the number of inputs (or inputs + pairs), never d.
 *
 * @module
 */

/** Eigenvalues (descending) and the matching unit eigenvectors as columns of a row-major m × m matrix. */
export interface Eigen {
  values: Float64Array
  vectors: Float64Array
}

/** Eigendecomposition of the symmetric row-major m × m matrix `a` (not modified). */
export function symmetricEigen (a: Float64Array, m: number): Eigen {
  const s = Float64Array.from(a)
  const v = new Float64Array(m * m)
  for (let i = 0; i < m; i++) v[i * m + i] = 1
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0
    let total = 0
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) {
        const x = s[i * m + j]! * s[i * m + j]!
        total += x
        if (i !== j) off += x
      }
    }
    if (off <= 1e-30 * total || off === 0) break
    for (let p = 0; p < m - 1; p++) {
      for (let q = p + 1; q < m; q++) {
        const apq = s[p * m + q]!
        if (apq === 0) continue
        const app = s[p * m + p]!
        const aqq = s[q * m + q]!
        const theta = (aqq - app) / (2 * apq)
        const t = Math.sign(theta === 0 ? 1 : theta) / (Math.abs(theta) + Math.sqrt(theta * theta + 1))
        const c = 1 / Math.sqrt(t * t + 1)
        const sn = t * c
        for (let k = 0; k < m; k++) {
          const skp = s[k * m + p]!
          const skq = s[k * m + q]!
          s[k * m + p] = c * skp - sn * skq
          s[k * m + q] = sn * skp + c * skq
        }
        for (let k = 0; k < m; k++) {
          const spk = s[p * m + k]!
          const sqk = s[q * m + k]!
          s[p * m + k] = c * spk - sn * sqk
          s[q * m + k] = sn * spk + c * sqk
        }
        for (let k = 0; k < m; k++) {
          const vkp = v[k * m + p]!
          const vkq = v[k * m + q]!
          v[k * m + p] = c * vkp - sn * vkq
          v[k * m + q] = sn * vkp + c * vkq
        }
      }
    }
  }
  const order = Array.from({ length: m }, (_, i) => i).sort((x, y) => s[y * m + y]! - s[x * m + x]! || x - y)
  const values = new Float64Array(m)
  const vectors = new Float64Array(m * m)
  order.forEach((src, dst) => {
    values[dst] = s[src * m + src]!
    for (let k = 0; k < m; k++) vectors[k * m + dst] = v[k * m + src]!
  })
  return { values, vectors }
}
