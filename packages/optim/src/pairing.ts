/**
 * Step-seeded random pairing. Every replica computes the same perfect matching for a given
 * `(step, seed, replicas)` from a deterministic generator, so pairs are agreed without a message.
 *
 * @module
 */
import { InvalidParametersError, mulberry32 } from '@phalanx/core'

/** A round's matching: `partners[i]` is replica i's partner, or `-1` for the replica that sits out. */
export interface Pairing {
  /** Partner rank of each rank; `-1` for the one replica that sits out when the count is odd. */
  readonly partners: readonly number[]
  /** The pairs `[a, b]`, in the order the permutation produced them. */
  readonly pairs: ReadonlyArray<readonly [number, number]>
  /** The rank without a partner this round (odd replica counts), or `undefined`. */
  readonly idle: number | undefined
}

/** murmur3's 32-bit finaliser: a cheap bijective mix so nearby (seed, step) give unrelated streams. */
function fmix32 (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}


function checkInteger (name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) throw new InvalidParametersError(`${name} must be an integer >= ${min}, got ${value}`)
}

/**
 * A permutation of `0..n-1` drawn from `(step, seed)` by Fisher–Yates. Same arguments, same
 * permutation, on every machine.
 */
export function seededPermutation (step: number, seed: number, n: number): number[] {
  checkInteger('step', step, 0)
  checkInteger('seed', seed, 0)
  checkInteger('replicas', n, 0)
  // Fold the high words in so steps or seeds above 2^32 still give distinct streams.
  const hi = (x: number): number => Math.floor(x / 4294967296) >>> 0
  let h = fmix32((seed >>> 0) ^ 0x9e3779b9)
  h = fmix32(h ^ hi(seed))
  h = fmix32(h ^ (step >>> 0))
  h = fmix32(h ^ hi(step) ^ 0x7f4a7c15)
  const random = mulberry32(h)
  const perm = Array.from({ length: n }, (_, i) => i)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = perm[i] as number
    perm[i] = perm[j] as number
    perm[j] = t
  }
  return perm
}

/**
 * The matching of round `step`: as in the NoLoCo reference, a step-seeded permutation `π` pairs
 * `π[k]` with `π[k + ⌊n/2⌋]`. With an odd `n` the last entry `π[n−1]` sits this round out
 * (it applies a local outer step); which replica that is changes from round to round.
 *
 * @throws {InvalidParametersError} for a negative or fractional step, seed or replica count
 */
export function pairFor (step: number, seed: number, replicas: number): Pairing {
  const perm = seededPermutation(step, seed, replicas)
  const half = Math.floor(replicas / 2)
  const partners = new Array<number>(replicas).fill(-1)
  const pairs: Array<readonly [number, number]> = []
  for (let k = 0; k < half; k++) {
    const a = perm[k] as number
    const b = perm[k + half] as number
    partners[a] = b
    partners[b] = a
    pairs.push([a, b])
  }
  const idle = replicas % 2 === 1 ? perm[replicas - 1] : undefined
  return { partners, pairs, idle }
}

/** Replica `rank`'s partner in round `step`, or `-1` when it sits the round out. */
export function partnerOf (step: number, seed: number, replicas: number, rank: number): number {
  if (!Number.isInteger(rank) || rank < 0 || rank >= replicas) throw new InvalidParametersError(`rank ${rank} is outside 0..${replicas - 1}`)
  return pairFor(step, seed, replicas).partners[rank] as number
}
