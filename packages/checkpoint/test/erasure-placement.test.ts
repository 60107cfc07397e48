import { describe, expect, it } from 'vitest'
import { chooseScheme, groupSizes, pieceHolder, piecesHeldBy, planGroups, schemeCost, spreadByDomain } from '../src/erasure/index.js'

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

  it('scatters each owner\'s n − 1 stored pieces over the other members, one each, so every member holds one piece of every other', () => {
    for (const scheme of [{ k: 1, m: 1 }, { k: 3, m: 1 }, { k: 4, m: 2 }, { k: 8, m: 2 }]) {
      const n = scheme.k + scheme.m
      for (let owner = 0; owner < n; owner++) {
        const holders = Array.from({ length: n - 1 }, (_, piece) => pieceHolder(scheme, owner, piece))
        expect(new Set(holders).size).toBe(n - 1)
        expect(holders).not.toContain(owner)
      }
      for (let member = 0; member < n; member++) {
        const held = piecesHeldBy(scheme, member)
        expect(held.map((h) => h.owner).sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i).filter((i) => i !== member))
        for (const h of held) expect(pieceHolder(scheme, h.owner, h.piece)).toBe(member)
      }
      // The last parity piece is never stored (the owner keeps its whole snapshot).
      expect(() => pieceHolder(scheme, 0, n - 1)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }) as unknown as Error)
    }
    // RS(4,2): own 1000 + 5 pieces of 250 held; 1 of them parity; 5 pieces sent.
    expect(schemeCost({ k: 4, m: 2 }, 1000)).toEqual({ memoryBytes: 2250, parityBytes: 250, networkBytes: 1250 })
    expect(schemeCost({ k: 3, m: 1 }, 999)).toEqual({ memoryBytes: 1998, parityBytes: 0, networkBytes: 999 })
  })
})
