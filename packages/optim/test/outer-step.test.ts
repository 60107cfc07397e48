import { describe, expect, it } from 'vitest'
import { applyOuterStep, meanInto, pairExchangeCost, ringAllReduceCost } from '../src/index.js'
import { rand } from './helpers.js'

describe('applyOuterStep', () => {
  it('NoLoCo step equals the reference code: m = mu*m + alpha*mean_delta + alpha*(mean_phi - phi_i)', () => {
    const n = 64
    const alpha = 0.7
    const mu = 0.5
    // Two replicas with different anchors (NoLoCo keeps one per replica) and momenta.
    const phi = [rand(n, 1), rand(n, 2)]
    const theta = [rand(n, 3), rand(n, 4)]
    const mom = [rand(n, 5), rand(n, 6)]
    for (const i of [0, 1]) {
      const anchor = (phi[i] as Float32Array).slice()
      const momentum = (mom[i] as Float32Array).slice()
      applyOuterStep({ alpha, momentum: mu, kind: 'heavy-ball' }, anchor, momentum, theta[i] as Float32Array, theta[1 - i] as Float32Array)
      for (let k = 0; k < n; k++) {
        const p0 = (phi[0] as Float32Array)[k] as number
        const p1 = (phi[1] as Float32Array)[k] as number
        const t0 = (theta[0] as Float32Array)[k] as number
        const t1 = (theta[1] as Float32Array)[k] as number
        const meanDelta = ((t0 - p0) + (t1 - p1)) / 2
        const meanPhi = (p0 + p1) / 2
        const pi = (phi[i] as Float32Array)[k] as number
        const m = mu * ((mom[i] as Float32Array)[k] as number) + alpha * meanDelta + alpha * (meanPhi - pi)
        expect(momentum[k]).toBeCloseTo(m, 6)
        expect(anchor[k]).toBeCloseTo(pi + m, 6)
      }
    }
  })

  it('mu = 0, alpha = 1 is exact pair averaging', () => {
    const n = 257
    const anchor = rand(n, 7)
    const momentum = rand(n, 8)
    const a = rand(n, 9)
    const b = rand(n, 10)
    applyOuterStep({ alpha: 1, momentum: 0, kind: 'heavy-ball' }, anchor, momentum, a, b)
    const expected = new Float32Array(n)
    for (let k = 0; k < n; k++) expected[k] = ((a[k] as number) + (b[k] as number)) / 2
    expect(anchor).toEqual(expected)
  })

  it('matches a two-step hand-computed torch Nesterov example (alpha 0.7, mu 0.9)', () => {
    const anchor = Float32Array.of(1)
    const momentum = Float32Array.of(0)
    const spec = { alpha: 0.7, momentum: 0.9, kind: 'nesterov' as const }
    // Step 1: g = 1 - 0.5 = 0.5, b = 0.5, phi = 1 - 0.7 * (0.5 + 0.9 * 0.5) = 0.335
    applyOuterStep(spec, anchor, momentum, Float32Array.of(0.5))
    expect(momentum[0]).toBeCloseTo(0.5, 6)
    expect(anchor[0]).toBeCloseTo(0.335, 6)
    // Step 2: g = 0.335 - 0.135 = 0.2, b = 0.9 * 0.5 + 0.2 = 0.65, phi = 0.335 - 0.7 * (0.2 + 0.9 * 0.65) = -0.2145
    applyOuterStep(spec, anchor, momentum, Float32Array.of(0.135))
    expect(momentum[0]).toBeCloseTo(0.65, 6)
    expect(anchor[0]).toBeCloseTo(-0.2145, 6)
  })

  it('heavy-ball and Nesterov coincide without momentum', () => {
    const n = 32
    const target = rand(n, 11)
    const a1 = rand(n, 12)
    const a2 = a1.slice()
    applyOuterStep({ alpha: 0.7, momentum: 0, kind: 'heavy-ball' }, a1, new Float32Array(n), target)
    applyOuterStep({ alpha: 0.7, momentum: 0, kind: 'nesterov' }, a2, new Float32Array(n), target)
    for (let k = 0; k < n; k++) expect(a1[k]).toBeCloseTo(a2[k] as number, 6)
  })

  it('rejects arrays of different lengths', () => {
    expect(() => { applyOuterStep({ alpha: 1, momentum: 0, kind: 'heavy-ball' }, new Float32Array(3), new Float32Array(3), new Float32Array(2)) })
      .toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})

describe('meanInto and costs', () => {
  it('averages in float64', () => {
    const out = new Float32Array(2)
    meanInto(out, [Float32Array.of(1e8, 1), Float32Array.of(1, 2), Float32Array.of(-1e8, 3)])
    expect(Array.from(out)).toEqual([Math.fround(1 / 3), 2])
  })

  it('ring all-reduce needs 2(N-1) rounds, a pair exchange one', () => {
    expect(ringAllReduceCost(8, 800)).toEqual({ bytesSent: 1400, rounds: 14 })
    expect(ringAllReduceCost(1, 800)).toEqual({ bytesSent: 0, rounds: 0 })
    expect(pairExchangeCost(800)).toEqual({ bytesSent: 800, rounds: 1 })
  })
})
