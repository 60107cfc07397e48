/**
 * Seeded randomness for fault decisions. Every decision draws from a stream keyed by the scenario
 * seed and a stable name (a link and a sequence number, a file and a write index, a schedule), so a
 * decision does not depend on how many other decisions were made before it: two runs with the same
 * seed drop the same message of the same link even when other links carried different traffic.
 *
 * @module
 */
import { mulberry32 } from '@phalanx/core'

/** A seeded stream of uniform numbers. */
export interface ChaosRng {
  /** Uniform in [0, 1). */
  next(): number
  /** Uniform integer in [0, n). */
  int(n: number): number
  /** Exponentially distributed with the given rate (events per unit). */
  exponential(rate: number): number
}

/** FNV-1a over the UTF-16 code units of `key`, continued from `seed`. */
export function hashKey (seed: number, key: string): number {
  let h = (0x811c9dc5 ^ (Math.trunc(seed) >>> 0)) >>> 0
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** A mulberry32 stream seeded from `seed` and the parts of a key (e.g. `'w1->w2', 17`). */
export function createChaosRng (seed: number, ...key: ReadonlyArray<string | number>): ChaosRng {
  const next = mulberry32(hashKey(seed, key.join('\u0000')))
  return {
    next,
    int: (n) => Math.min(n - 1, Math.floor(next() * n)),
    exponential: (rate) => -Math.log(1 - next()) / rate
  }
}
