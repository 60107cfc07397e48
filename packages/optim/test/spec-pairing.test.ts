import { describe, expect, it } from 'vitest'
import { OUTER_PRESET_NAMES, pairFor, partnerOf, resolveOuterSpec, seededPermutation, type OuterSpecInput } from '../src/index.js'

describe('resolveOuterSpec', () => {
  it('resolves the presets', () => {
    expect(resolveOuterSpec('diloco')).toMatchObject({ group: 'all', alpha: 0.7, momentum: 0.9, kind: 'nesterov' })
    expect(resolveOuterSpec('noloco')).toMatchObject({ group: 'pair', alpha: 0.7, momentum: 0.5, kind: 'heavy-ball', interval: 50 })
    expect(resolveOuterSpec('gossip')).toMatchObject({ group: 'pair', alpha: 1, momentum: 0 })
    expect(resolveOuterSpec('fedavg')).toMatchObject({ group: 'all', alpha: 1, momentum: 0 })
    expect(resolveOuterSpec('none')).toMatchObject({ group: 'none' })
    for (const name of OUTER_PRESET_NAMES) expect(resolveOuterSpec(name).preset).toBe(name)
  })

  it('applies overrides over a preset', () => {
    expect(resolveOuterSpec({ preset: 'noloco', interval: 10, momentum: 0 })).toMatchObject({ group: 'pair', interval: 10, momentum: 0, alpha: 0.7 })
    expect(resolveOuterSpec({ group: 'all', alpha: 1, momentum: 0, kind: 'heavy-ball', interval: 3 }).interval).toBe(3)
  })

  it.each<[string, unknown]>([
    ['unknown preset', 'adam'],
    ['alpha 0', { preset: 'diloco', alpha: 0 }],
    ['negative alpha', { preset: 'noloco', alpha: -0.1 }],
    ['momentum 1', { preset: 'noloco', momentum: 1 }],
    ['NaN momentum', { preset: 'noloco', momentum: Number.NaN }],
    ['interval 0', { preset: 'gossip', interval: 0 }],
    ['fractional interval', { preset: 'gossip', interval: 2.5 }],
    ['unknown group', { preset: 'gossip', group: 'ring' }],
    ['unknown kind', { preset: 'diloco', kind: 'adam' }],
    ['unknown key', { preset: 'diloco', lr: 1 }],
    ['missing fields without preset', { group: 'all' }],
    ['not an object', 42]
  ])('rejects %s with InvalidConfigError', (_label, input) => {
    expect(() => resolveOuterSpec(input as OuterSpecInput)).toThrow(expect.objectContaining({
      name: 'InvalidConfigError',
      details: expect.objectContaining({ issues: expect.arrayContaining([expect.any(String)]) })
    }))
  })
})

describe('pairFor', () => {
  it('is a perfect matching (one idle replica when odd) for every count and step', () => {
    for (let n = 1; n <= 17; n++) {
      for (let step = 0; step < 40; step++) {
        const { partners, pairs, idle } = pairFor(step, 7, n)
        expect(partners).toHaveLength(n)
        expect(pairs).toHaveLength(Math.floor(n / 2))
        const covered = new Set<number>()
        for (const [a, b] of pairs) {
          expect(a).not.toBe(b)
          expect(partners[a]).toBe(b)
          expect(partners[b]).toBe(a)
          covered.add(a)
          covered.add(b)
        }
        expect(covered.size).toBe(2 * Math.floor(n / 2))
        if (n % 2 === 1) {
          expect(idle).toBeDefined()
          expect(covered.has(idle as number)).toBe(false)
          expect(partners[idle as number]).toBe(-1)
        } else {
          expect(idle).toBeUndefined()
        }
      }
    }
  })

  it('is identical on every replica for a step, and changes between steps and seeds', () => {
    const n = 8
    const views = Array.from({ length: n }, (_, rank) => Array.from({ length: 50 }, (_, step) => partnerOf(step, 3, n, rank)))
    for (let step = 0; step < 50; step++) {
      for (let rank = 0; rank < n; rank++) {
        const p = (views[rank] as number[])[step] as number
        expect((views[p] as number[])[step]).toBe(rank)
      }
      expect(pairFor(step, 3, n)).toEqual(pairFor(step, 3, n))
    }
    const distinct = new Set(Array.from({ length: 50 }, (_, step) => JSON.stringify(pairFor(step, 3, n).pairs)))
    expect(distinct.size).toBeGreaterThan(20)
    expect(JSON.stringify(seededPermutation(5, 1, 16))).not.toBe(JSON.stringify(seededPermutation(5, 2, 16)))
  })

  it('gives every replica every partner over enough rounds', () => {
    const n = 8
    const met = Array.from({ length: n }, () => new Set<number>())
    for (let step = 0; step < 200; step++) {
      for (const [a, b] of pairFor(step, 0, n).pairs) {
        (met[a] as Set<number>).add(b);
        (met[b] as Set<number>).add(a)
      }
    }
    for (const s of met) expect(s.size).toBe(n - 1)
  })

  it('handles steps above 2^32 and rejects bad arguments', () => {
    expect(pairFor(2 ** 40 + 3, 1, 4).pairs).toHaveLength(2)
    expect(() => pairFor(-1, 0, 4)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
    expect(() => pairFor(1.5, 0, 4)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
    expect(() => partnerOf(0, 0, 4, 4)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})
