/**
 * Seeded, portable pseudo-random numbers: the same seed gives the same numbers on every machine,
 * backend and process, which is what makes data order and initial weights reproducible.
 *
 * @module
 */
import { InvalidParametersError, mulberry32 } from '@phalanx/core'

/** A seeded generator of uniform numbers in [0, 1). Each call to {@link createRng} owns its state. */
export interface Rng {
  /** Next uniform float in [0, 1) with 32 bits of randomness. */
  next(): number
  /** Next integer in [0, n). */
  int(n: number): number
  /** Next standard normal sample (Box–Muller). */
  normal(): number
}

/** SplitMix32-style mixing of a 32-bit integer; used to derive independent streams from (seed, salt). */
export function mix32 (x: number): number {
  let z = (x + 0x9e3779b9) | 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

/** Combines a seed with further integers (epoch, stream id) into one 32-bit seed. */
export function deriveSeed (seed: number, ...salts: number[]): number {
  let s = mix32(seed >>> 0)
  for (const salt of salts) s = mix32((s ^ mix32(salt >>> 0)) >>> 0)
  return s
}

/** A mulberry32 generator seeded with `seed` (any integer). */
export function createRng (seed: number): Rng {
  const next = mulberry32(seed)
  return {
    next,
    int: (n) => Math.floor(next() * n),
    normal () {
      // 1 - u keeps the logarithm finite.
      const u = 1 - next()
      const v = next()
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
    }
  }
}

/**
 * The global sample order of one epoch: a permutation of `0..n-1` that depends only on
 * `(seed, epoch, n)`. Every worker computes the same order without talking to anyone, so the
 * coordinator only hands out cursor ranges and a sample's contribution does not depend on which
 * worker ran it.
 */
export function sampleOrder (seed: number, epoch: number, n: number): Uint32Array {
  if (!Number.isInteger(n) || n < 0) throw new InvalidParametersError(`sampleOrder: n must be a non-negative integer, got ${n}`)
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  const rng = createRng(deriveSeed(seed, epoch, n))
  // Fisher–Yates from the end.
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1)
    const tmp = order[i] as number
    order[i] = order[j] as number
    order[j] = tmp
  }
  return order
}

/** `n` floats from N(0, std²), seeded. */
export function normalArray (seed: number, n: number, std: number): Float32Array {
  const rng = createRng(seed)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std
  return out
}

/** `n` floats from U(-limit, limit), seeded. */
export function uniformArray (seed: number, n: number, limit: number): Float32Array {
  const rng = createRng(seed)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = (rng.next() * 2 - 1) * limit
  return out
}
