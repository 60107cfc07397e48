import { InvalidParametersError } from '@phalanx/core'

/**
 * Splits `microBatches` micro-batches among members in proportion to their measured `speeds`
 * (micro-batches per second, any positive scale; non-finite or non-positive values count as the
 * mean speed). Every member gets at least one when there are enough; largest remainders break ties by
 * rank, so the split is deterministic. Rank r then runs a contiguous run of micro-batch indices.
 */
export function assignMicroBatches (microBatches: number, speeds: readonly number[]): number[] {
  const w = speeds.length
  if (w === 0) return []
  if (!Number.isInteger(microBatches) || microBatches < w) {
    throw new InvalidParametersError(`${microBatches} micro-batches cannot give each of ${w} members one`)
  }
  const known = speeds.filter((s) => Number.isFinite(s) && s > 0)
  const fallback = known.length === 0 ? 1 : known.reduce((a, b) => a + b, 0) / known.length
  const s = speeds.map((x) => (Number.isFinite(x) && x > 0 ? x : fallback))
  const total = s.reduce((a, b) => a + b, 0)
  // One each first, the rest by share of speed.
  const rest = microBatches - w
  const exact = s.map((x) => (rest * x) / total)
  const counts = exact.map((x) => 1 + Math.floor(x))
  let left = microBatches - counts.reduce((a, b) => a + b, 0)
  const order = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i)
  for (let k = 0; left > 0; k = (k + 1) % w, left--) {
    const j = (order[k] as { i: number }).i
    counts[j] = (counts[j] as number) + 1
  }
  return counts
}

/** The contiguous coordinate range `[start, end)` of shard `rank` when `size` coordinates are split over `world` owners. */
export function shardRange (size: number, world: number, rank: number): [number, number] {
  return [Math.floor((rank * size) / world), Math.floor(((rank + 1) * size) / world)]
}
