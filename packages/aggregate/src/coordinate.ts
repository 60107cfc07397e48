/**
 * Coordinate-wise kernels: median, trimmed mean and Bulyan's final step. Each coordinate gathers its
 * n values into a small float64 scratch array and insertion-sorts it (n ≤ 64, so this beats a full
 * sort or quickselect). NaN is read as +∞, so it sorts last and is trimmed like any outlier.
 *
 * @module
 */

function gatherSorted (inputs: readonly Float32Array[], k: number, vals: Float64Array): void {
  const n = inputs.length
  for (let j = 0; j < n; j++) {
    let v = (inputs[j] as Float32Array)[k]!
    if (v !== v) v = Infinity
    let i = j - 1
    while (i >= 0 && vals[i]! > v) {
      vals[i + 1] = vals[i]!
      i--
    }
    vals[i + 1] = v
  }
}

/** Coordinate-wise median; an even count averages the two middle values (NumPy / ByzFL). */
export function medianInto (inputs: readonly Float32Array[], out: Float32Array, vals: Float64Array): void {
  const n = inputs.length
  const h = n >> 1
  const odd = (n & 1) === 1
  for (let k = 0; k < out.length; k++) {
    gatherSorted(inputs, k, vals)
    out[k] = odd ? vals[h]! : (vals[h - 1]! + vals[h]!) / 2
  }
}

/** Coordinate-wise trimmed mean: drop the `f` lowest and `f` highest values, average the rest. */
export function trimmedMeanInto (inputs: readonly Float32Array[], f: number, out: Float32Array, vals: Float64Array): void {
  const n = inputs.length
  const keep = n - 2 * f
  for (let k = 0; k < out.length; k++) {
    gatherSorted(inputs, k, vals)
    let s = 0
    for (let i = f; i < n - f; i++) s += vals[i]!
    out[k] = s / keep
  }
}

/**
 * Bulyan's coordinate step: per coordinate, the mean of the `beta` values closest to the median of
 * the inputs (ties go to the lower value).
 */
export function closestToMedianInto (inputs: readonly Float32Array[], beta: number, out: Float32Array, vals: Float64Array): void {
  const n = inputs.length
  const h = n >> 1
  for (let k = 0; k < out.length; k++) {
    gatherSorted(inputs, k, vals)
    const med = (n & 1) === 1 ? vals[h]! : (vals[h - 1]! + vals[h]!) / 2
    let hi = 0
    while (hi < n && vals[hi]! < med) hi++
    let lo = hi - 1
    let s = 0
    for (let t = 0; t < beta; t++) {
      if (lo < 0 || (hi < n && vals[hi]! - med < med - vals[lo]!)) s += vals[hi++]!
      else s += vals[lo--]!
    }
    out[k] = s / beta
  }
}
