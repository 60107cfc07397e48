/**
 * A small seeded random number generator (splitmix64-seeded xoshiro128**), so bucketing and the
 * attacks are reproducible on every process from one integer seed.
 *
 * @module
 */

/** A seeded stream of random numbers. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number
  /** Standard normal (Box–Muller). */
  normal(): number
  /** Uniform integer in [0, n). */
  int(n: number): number
}

/** Creates a deterministic {@link Rng} from an integer seed. */
export function createRng (seed: number): Rng {
  let x = (Math.trunc(seed) >>> 0) ^ 0x9e3779b9
  const split = (): number => {
    x = (x + 0x9e3779b9) >>> 0
    let z = x
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split(); let b = split(); let c = split(); let d = split()
  if ((a | b | c | d) === 0) a = 1
  const u32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0
    const t = (b << 9) >>> 0
    c ^= a; d ^= b; b ^= c; a ^= d
    c = (c ^ t) >>> 0
    d = rotl(d, 11)
    return result
  }
  let spare: number | undefined
  return {
    next: () => u32() / 4294967296,
    int: (n: number) => Math.floor((u32() / 4294967296) * n),
    normal: () => {
      if (spare !== undefined) {
        const s = spare
        spare = undefined
        return s
      }
      let u = 0
      while (u === 0) u = u32() / 4294967296
      const v = u32() / 4294967296
      const r = Math.sqrt(-2 * Math.log(u))
      spare = r * Math.sin(2 * Math.PI * v)
      return r * Math.cos(2 * Math.PI * v)
    }
  }
}

function rotl (v: number, k: number): number {
  return ((v << k) | (v >>> (32 - k))) >>> 0
}

/** A seeded Fisher–Yates permutation of 0..n-1. */
export function permutation (n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n)
  for (let i = 0; i < n; i++) p[i] = i
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1)
    const t = p[i]!
    p[i] = p[j]!
    p[j] = t
  }
  return p
}

/** The permutation Bucketing uses for `seed`: a Fisher–Yates shuffle of 0..n-1 driven by {@link createRng}. */
export function seededPermutation (n: number, seed: number): Int32Array {
  return permutation(n, createRng(seed))
}
