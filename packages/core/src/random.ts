/**
 * mulberry32: a small, fast pseudo-random generator made of 32-bit integer operations only, so
 * every JavaScript engine on every machine produces the same stream for the same seed. Phalanx
 * uses it wherever all processes must agree without talking: data order, NoLoCo pairing, chaos
 * fault schedules, test inputs. Not for cryptography.
 *
 * @param seed - any number; only its low 32 bits are used
 * @returns a function returning the next value in [0, 1)
 */
export function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
