/**
 * The outer update itself: pure typed-array math, no I/O.
 *
 * @module
 */
import { InvalidParametersError } from '@phalanx/core'
import type { OuterSpec } from './spec.js'

/** The coefficients the update needs. */
export type OuterStepParams = Pick<OuterSpec, 'alpha' | 'momentum' | 'kind'>

/**
 * Applies one outer step in place, coordinate by coordinate (in float64, stored as float32).
 *
 * The target is `a` alone, or the pair mean `(a + b) / 2` when `b` is given (so the pair case needs
 * no temporary vector).
 *
 * - heavy-ball: `m ← μ·m + α·(θ̄ − φ)`, `φ ← φ + m`
 * - nesterov: `g = φ − θ̄`, `b ← μ·b + g`, `φ ← φ − α·(g + μ·b)` (torch `SGD(nesterov=True)`, so the
 *   momentum buffer holds `b`, in units of the outer gradient, not of the step)
 *
 * @param anchor - φ, the weights after the previous outer step; overwritten with the new anchor
 * @param momentum - the outer momentum buffer (zero initially); overwritten
 * @throws {InvalidParametersError} when the arrays differ in length
 */
export function applyOuterStep (params: OuterStepParams, anchor: Float32Array, momentum: Float32Array, a: Float32Array, b?: Float32Array): void {
  const n = anchor.length
  if (momentum.length !== n || a.length !== n || (b !== undefined && b.length !== n)) {
    throw new InvalidParametersError(`Outer step arrays differ in length: anchor ${n}, momentum ${momentum.length}, target ${a.length}${b === undefined ? '' : `/${b.length}`}`)
  }
  const alpha = params.alpha
  const mu = params.momentum
  if (params.kind === 'heavy-ball') {
    if (b === undefined) {
      for (let i = 0; i < n; i++) {
        const phi = anchor[i] as number
        const m = mu * (momentum[i] as number) + alpha * ((a[i] as number) - phi)
        momentum[i] = m
        anchor[i] = phi + m
      }
    } else {
      for (let i = 0; i < n; i++) {
        const phi = anchor[i] as number
        const target = 0.5 * ((a[i] as number) + (b[i] as number))
        const m = mu * (momentum[i] as number) + alpha * (target - phi)
        momentum[i] = m
        anchor[i] = phi + m
      }
    }
    return
  }
  for (let i = 0; i < n; i++) {
    const phi = anchor[i] as number
    const target = b === undefined ? (a[i] as number) : 0.5 * ((a[i] as number) + (b[i] as number))
    const g = phi - target
    const buf = mu * (momentum[i] as number) + g
    momentum[i] = buf
    anchor[i] = phi - alpha * (g + mu * buf)
  }
}

/**
 * Mean of equally long vectors into `out`, accumulated in float64 (the reference all-reduce for
 * tests and simulations; a real deployment injects the elastic core's sharded reduce).
 */
export function meanInto (out: Float32Array, inputs: readonly Float32Array[]): Float32Array {
  if (inputs.length === 0) throw new InvalidParametersError('Mean of no inputs')
  for (const x of inputs) if (x.length !== out.length) throw new InvalidParametersError(`Input of length ${x.length}, expected ${out.length}`)
  const acc = new Float64Array(out.length)
  for (const x of inputs) for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (x[i] as number)
  const inv = 1 / inputs.length
  for (let i = 0; i < acc.length; i++) out[i] = (acc[i] as number) * inv
  return out
}

/** Communication cost of one synchronisation, per replica. */
export interface SyncCost {
  /** Bytes this replica puts on the wire. */
  bytesSent: number
  /** Latency-bound communication rounds one after another. */
  rounds: number
}

/**
 * Cost of a bandwidth-optimal ring all-reduce of `bytes` over `n` replicas, per replica:
 * reduce-scatter then all-gather, `2(n−1)` sequential rounds each moving `bytes / n`.
 */
export function ringAllReduceCost (n: number, bytes: number): SyncCost {
  if (n <= 1) return { bytesSent: 0, rounds: 0 }
  return { bytesSent: Math.ceil(2 * (n - 1) * bytes / n), rounds: 2 * (n - 1) }
}

/** Cost of one pairwise exchange of `bytes` (NoLoCo, gossip): one round, one model copy out. */
export function pairExchangeCost (bytes: number): SyncCost {
  return { bytesSent: bytes, rounds: 1 }
}
