import { InvalidParametersError, mulberry32 } from '@phalanx/core'

/**
 * Maps a global sample position (the `start..end` of a micro-batch) to a dataset index: position p
 * is sample `perm_k(p mod size)` of the seeded permutation of data-epoch `k = floor(p / size)`.
 * The same `(seed, size)` gives the same order in every process, so which worker trains a
 * micro-batch does not change which samples it contains.
 */
export interface SampleOrder {
  /** Dataset index of global position `position`. */
  indexOf(position: number): number
  /** Dataset indices of positions `[start, end)`. */
  range(start: number, end: number): number[]
}


/** Creates a {@link SampleOrder} over a dataset of `size` samples. Keeps the last few permutations. */
export function createSampleOrder (init: { seed: number, size: number }): SampleOrder {
  if (!Number.isInteger(init.size) || init.size < 1) throw new InvalidParametersError(`Dataset size must be a positive integer, got ${init.size}`)
  const cache = new Map<number, Uint32Array>()
  const permutation = (epoch: number): Uint32Array => {
    let p = cache.get(epoch)
    if (p !== undefined) return p
    p = new Uint32Array(init.size)
    for (let i = 0; i < p.length; i++) p[i] = i
    const rand = mulberry32((init.seed * 0x9e3779b1 + epoch * 0x85ebca6b) >>> 0)
    for (let i = p.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1))
      const t = p[i] as number
      p[i] = p[j] as number
      p[j] = t
    }
    if (cache.size >= 4) cache.delete(cache.keys().next().value as number)
    cache.set(epoch, p)
    return p
  }
  const indexOf = (position: number): number => {
    if (!Number.isInteger(position) || position < 0) throw new InvalidParametersError(`Invalid sample position ${position}`)
    return permutation(Math.floor(position / init.size))[position % init.size] as number
  }
  return {
    indexOf,
    range (start, end) {
      const out: number[] = []
      for (let p = start; p < end; p++) out.push(indexOf(p))
      return out
    }
  }
}
