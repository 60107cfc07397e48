import { describe, expect, it } from 'vitest'
import { InvalidConfigError } from '@phalanx/core'
import { ATTACK_NAMES, alieZ, createAttack, flipLabels, inverseNormalCdf } from '../src/index.js'

const X = [[1, 2, 3], [4, 5, 6], [7, 8, 9]].map((x) => Float32Array.from(x))
const gen = (spec: Record<string, unknown>, f = 2): number[][] => createAttack(spec).generate(X, f, { seed: 3 }).map((v) => Array.from(v))

describe('attacks', () => {
  it('match the ByzFL fixtures', () => {
    expect(gen({ name: 'SignFlipping' })).toEqual([[-4, -5, -6], [-4, -5, -6]])
    expect(gen({ name: 'InnerProductManipulation' })).toEqual([[-8, -10, -12], [-8, -10, -12]])
    expect(gen({ name: 'IPM', tau: 0.5 })[0]).toEqual([-2, -2.5, -3])
    expect(gen({ name: 'ALittleIsEnough' })[0]).toEqual([8.5, 9.5, 10.5])
    expect(gen({ name: 'Mimic', idx: 1 })).toEqual([[4, 5, 6], [4, 5, 6]])
    expect(gen({ name: 'ConstantDirection', value: -3 })[1]).toEqual([-3, -3, -3])
    expect(gen({ name: 'Inf' }, 1)).toEqual([[Infinity, Infinity, Infinity]])
  })

  it('computes the Baruch z from n and f', () => {
    expect(alieZ(10, 2)).toBeCloseTo(0, 12)
    expect(alieZ(10, 3)).toBeCloseTo(0.18, 2)
    expect(alieZ(10, 4)).toBeCloseTo(0.43, 2)
    expect(alieZ(25, 5)).toBeCloseTo(0.25, 2)
    expect(inverseNormalCdf(0.975)).toBeCloseTo(1.959963985, 8)
    // 3 honest + 3 Byzantine: n = 6, f = 3 → s = 1, z = Φ⁻¹(2/3) ≈ 0.4307
    expect(gen({ name: 'ALIE', z: 'baruch' }, 3)[0]![0]).toBeCloseTo(4 + 0.430727 * 3, 4)
  })

  it('draws seeded Gaussian noise, independent per attacker', () => {
    const a = createAttack({ name: 'Gaussian', sigma: 2 }).generate(X, 2, { seed: 9 })
    const b = createAttack({ name: 'Gaussian', sigma: 2 }).generate(X, 2, { seed: 9 })
    expect(a.map((v) => Array.from(v))).toEqual(b.map((v) => Array.from(v)))
    expect(Array.from(a[0]!)).not.toEqual(Array.from(a[1]!))
    const many = createAttack({ name: 'Gaussian', mu: 1, sigma: 2 }).generate([new Float32Array(20000)], 1, { seed: 1 })[0]!
    const mean = many.reduce((s, v) => s + v, 0) / many.length
    const sd = Math.sqrt(many.reduce((s, v) => s + (v - mean) ** 2, 0) / many.length)
    expect(mean).toBeCloseTo(1, 1)
    expect(sd).toBeCloseTo(2, 1)
  })

  it('flips labels y → C − 1 − y', () => {
    expect(Array.from(flipLabels([0, 3, 9]))).toEqual([9, 6, 0])
    expect(Array.from(flipLabels([0, 1], 2))).toEqual([1, 0])
  })

  it('rejects unknown attacks listing the options', () => {
    expect(() => createAttack({ name: 'Nope' })).toThrow(expect.objectContaining({ name: InvalidConfigError.name, message: expect.stringContaining(ATTACK_NAMES.join(', ')) }))
  })
})
