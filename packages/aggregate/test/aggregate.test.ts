import { describe, expect, it } from 'vitest'
import { InsufficientInputsError, InvalidConfigError, InvalidParametersError } from '@phalanx/core'
import { randomInputs, slowGram } from '@phalanx/testing/aggregator'
import {
  AGGREGATOR_NAMES, aggregate, aggregateWithReport, createAggregator, gramPartial
} from '../src/index.js'

describe('gramPartial', () => {
  it('matches the slow Gram matrix and sums over slices to the whole', () => {
    const inputs = randomInputs(6, 3000, 1)
    const whole = gramPartial(inputs)
    const slow = slowGram(inputs)
    for (let i = 0; i < whole.length; i++) expect(whole[i]).toBeCloseTo(slow[i]!, 9)
    const a = gramPartial(inputs.map((x) => x.subarray(0, 1234)))
    const b = gramPartial(inputs.map((x) => x.subarray(1234)), new Float64Array(36).fill(99))
    for (let i = 0; i < whole.length; i++) expect(a[i]! + b[i]!).toBeCloseTo(whole[i]!, 9)
  })

  it('rejects inputs of different lengths and a wrong output size', () => {
    expect(() => gramPartial([new Float32Array(3), new Float32Array(4)])).toThrow(expect.objectContaining({ name: InvalidParametersError.name }))
    expect(() => gramPartial([new Float32Array(3)], new Float64Array(2))).toThrow(expect.objectContaining({ name: InvalidParametersError.name }))
  })
})

describe('createAggregator', () => {
  it('rejects unknown names listing the options', () => {
    let caught: unknown
    try {
      createAggregator({ name: 'Krumm', f: 1 })
    } catch (err) {
      caught = err
    }
    expect(caught).toMatchObject({ name: InvalidConfigError.name })
    for (const name of AGGREGATOR_NAMES) expect((caught as Error).message).toContain(name)
  })

  it('rejects bad parameters and unknown keys', () => {
    expect(() => createAggregator({ name: 'TrMean', f: -1 })).toThrow(expect.objectContaining({ name: InvalidConfigError.name }))
    expect(() => createAggregator({ name: 'GeometricMedian', nu: 0 })).toThrow(expect.objectContaining({ name: InvalidConfigError.name }))
    expect(() => createAggregator({ name: 'Krum', f: 1, tau: 3 } as Record<string, unknown>)).toThrow(expect.objectContaining({ name: InvalidConfigError.name }))
    expect(() => createAggregator({ name: 'Krum', pre: [{ name: 'Bogus' }] } as Record<string, unknown>)).toThrow(expect.objectContaining({ name: InvalidConfigError.name }))
  })

  it('accepts aliases and exposes f, needsGram and minInputs', () => {
    const cc = createAggregator({ name: 'CenteredClip', f: 2 })
    expect(cc.name).toBe('CenteredClipping')
    expect(cc.needsGram).toBe(true)
    expect(createAggregator({ name: 'Median', f: 3 }).needsGram).toBe(false)
    expect(createAggregator({ name: 'Median', pre: [{ name: 'NNM', f: 1 }] }).needsGram).toBe(true)
    expect(createAggregator({ name: 'Krum', f: 2 }).minInputs).toBe(7)
    expect(createAggregator({ name: 'Bulyan', f: 2 }).minInputs).toBe(11)
    expect(createAggregator({ name: 'Median', f: 2, pre: [{ name: 'Bucketing', s: 2 }] }).minInputs).toBe(9)
    expect(createAggregator({ name: 'Average' }).f).toBe(0)
  })

  it('check(n) throws InsufficientInputsError with details', () => {
    const krum = createAggregator({ name: 'Krum', f: 2 })
    expect(() => { krum.check(6) }).toThrow(expect.objectContaining({ name: InsufficientInputsError.name, details: expect.objectContaining({ required: 7, n: 6 }) }))
  })

  it('demands the Gram matrix from distance-based rules', () => {
    const krum = createAggregator({ name: 'Krum', f: 1 })
    const inputs = randomInputs(5, 4, 2)
    expect(() => krum.aggregateSlice(inputs, new Float32Array(4), {})).toThrow(expect.objectContaining({ name: InvalidParametersError.name }))
  })

  it('reports rejected inputs and weights', () => {
    const inputs = [[0], [1], [2], [3], [100]].map((x) => Float32Array.from(x))
    const { out, report } = aggregateWithReport(createAggregator({ name: 'Krum', f: 1 }), inputs)
    expect(Array.from(out)).toEqual([1])
    expect(report.rejected).toEqual([0, 2, 3, 4])
    expect(Array.from(report.weights ?? [])).toEqual([0, 1, 0, 0, 0])
    const bulyan = aggregateWithReport(createAggregator({ name: 'Bulyan', f: 1 }), [[1], [2], [3], [4], [5], [50], [90]].map((x) => Float32Array.from(x)))
    expect(bulyan.report.rejected).toEqual([0, 6])
  })

  it('gives non-finite inputs no weight', () => {
    const honest = randomInputs(6, 8, 3)
    const inputs = [new Float32Array(8).fill(Number.NaN), ...honest, new Float32Array(8).fill(-Infinity)]
    for (const spec of [{ name: 'GeometricMedian', f: 2 }, { name: 'CenteredClipping', f: 2, tau: 1, L: 3 }, { name: 'MultiKrum', f: 2 }, { name: 'FlagAggregator', f: 2, r: 2 }] as const) {
      const { out, report } = aggregateWithReport(createAggregator(spec), inputs)
      expect(out.every(Number.isFinite), spec.name).toBe(true)
      expect(report.rejected, spec.name).toEqual(expect.arrayContaining([0, 7]))
    }
  })

  it('writes into the given output and refuses a wrong length', () => {
    const inputs = randomInputs(3, 5, 4)
    const out = new Float32Array(5)
    expect(aggregate(createAggregator({ name: 'Average' }), inputs, out)).toBe(out)
    expect(() => aggregate(createAggregator({ name: 'Average' }), inputs, new Float32Array(4))).toThrow(expect.objectContaining({ name: InvalidParametersError.name }))
  })

  it('computes the mean in float64 (no float32 drift over many inputs)', () => {
    // In float32, 1e8 + 1 === 1e8: a float32 accumulator would return 0.
    const inputs = [Float32Array.of(1e8), ...Array.from({ length: 63 }, () => Float32Array.of(1)), Float32Array.of(-1e8)]
    expect(aggregate(createAggregator({ name: 'Average' }), inputs)[0]).toBeCloseTo(63 / 65, 6)
  })

  it('refuses an MDA search that is too large', () => {
    const mda = createAggregator({ name: 'MDA', f: 10, maxSubsets: 1000 })
    expect(() => aggregate(mda, randomInputs(30, 4, 5))).toThrow(expect.objectContaining({ name: InvalidParametersError.name }))
  })

  it('is deterministic for bucketing given the seed, and the seed matters', () => {
    const rule = createAggregator({ name: 'Median', f: 1, pre: [{ name: 'Bucketing', s: 2 }] })
    const inputs = randomInputs(10, 16, 6)
    const a = aggregate(rule, inputs, undefined, { seed: 1 })
    expect(Array.from(aggregate(rule, inputs, undefined, { seed: 1 }))).toEqual(Array.from(a))
    expect(Array.from(aggregate(rule, inputs, undefined, { seed: 2 }))).not.toEqual(Array.from(a))
  })
})
