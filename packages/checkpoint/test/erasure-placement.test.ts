import { describe, expect, it } from 'vitest'
import { chooseScheme, dataStripesOf, groupSizes, planGroups, schemeCost, spreadByDomain, stripeRoles } from '../src/erasure/index.js'

describe('erasure placement', () => {
  it('chooses the scheme by group size', () => {
    expect(chooseScheme(1)).toEqual({ kind: 'none', k: 1, m: 0 })
    expect(chooseScheme(2)).toEqual({ kind: 'replication', k: 1, m: 1 })
    for (const n of [3, 4, 5]) expect(chooseScheme(n)).toEqual({ kind: 'xor', k: n - 1, m: 1 })
    for (const n of [6, 7, 9]) expect(chooseScheme(n)).toEqual({ kind: 'rs', k: 4, m: 2 })
    for (const n of [10, 64]) expect(chooseScheme(n)).toEqual({ kind: 'rs', k: 8, m: 2 })
    expect(() => chooseScheme(0)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }) as unknown as Error)
  })

  it('splits hosts into groups that never leave a lone host', () => {
    for (let n = 2; n <= 60; n++) {
      const sizes = groupSizes(n)
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(n)
      expect(sizes.every((s) => s >= 2)).toBe(true)
    }
    expect(groupSizes(7)).toEqual([5, 2])
    expect(groupSizes(11)).toEqual([6, 5])
    expect(groupSizes(16)).toEqual([10, 6])
    expect(groupSizes(1)).toEqual([1])
  })

  it('plans groups with one member per failure domain when possible and honours a configured scheme', () => {
    const hosts = Array.from({ length: 12 }, (_, i) => ({ id: `h${i}`, domain: `rack${i % 3}` }))
    const groups = planGroups(hosts, { scheme: { k: 4, m: 2 } })
    expect(groups.map((g) => g.members.length)).toEqual([6, 6])
    expect(groups.every((g) => g.scheme.kind === 'rs' && g.scheme.k === 4)).toBe(true)
    // Round-robin over 3 racks: each group of 6 has exactly 2 hosts per rack.
    for (const g of groups) {
      const racks = g.members.map((id) => Number(id.slice(1)) % 3)
      expect([0, 1, 2].map((r) => racks.filter((x) => x === r).length)).toEqual([2, 2, 2])
    }
    expect(spreadByDomain([{ id: 'a', domain: 'x' }, { id: 'b', domain: 'x' }, { id: 'c', domain: 'y' }]).map((h) => h.id)).toEqual(['a', 'c', 'b'])
    expect(() => planGroups([{ id: 'a' }, { id: 'a' }])).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }) as unknown as Error)
    const defaults = planGroups(Array.from({ length: 13 }, (_, i) => ({ id: `h${i}` })))
    expect(defaults.map((g) => [g.members.length, g.scheme.kind, g.scheme.k, g.scheme.m])).toEqual([[10, 'rs', 8, 2], [3, 'xor', 2, 1]])
  })

  it('rotates parity: every member is data in k stripes and parity in m, never both in one stripe', () => {
    for (const scheme of [{ k: 1, m: 1 }, { k: 3, m: 1 }, { k: 4, m: 2 }, { k: 8, m: 2 }]) {
      const n = scheme.k + scheme.m
      const parityCount = new Array<number>(n).fill(0)
      for (let s = 0; s < n; s++) {
        const r = stripeRoles(scheme, s)
        expect(r.data).toHaveLength(scheme.k)
        expect(r.parity).toHaveLength(scheme.m)
        expect(new Set([...r.data, ...r.parity]).size).toBe(n)
        for (const p of r.parity) parityCount[p] = (parityCount[p] as number) + 1
      }
      expect(parityCount.every((c) => c === scheme.m)).toBe(true)
      for (let i = 0; i < n; i++) expect(dataStripesOf(scheme, i)).toHaveLength(scheme.k)
    }
    expect(schemeCost({ k: 4, m: 2 }, 1000)).toEqual({ memoryBytes: 1500, parityBytes: 500, networkBytes: 2000 })
  })
})
