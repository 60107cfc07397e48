import { describe, expect, it } from 'vitest'
import {
  assertSameLayout, cloneStateDict, createStateDict, flattenStateDict, shapeSize, stateDictSize,
  stateDictSpecs, stateDictsBitEqual, unflattenInto
} from '../src/index.js'

const sd = () => createStateDict([
  { name: 'w', shape: [2, 3], dtype: 'float32', data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
  { name: 'b', shape: [3], dtype: 'float32', data: Float32Array.from([7, 8, 9]) }
], { step: 4, epoch: 1, cursor: 512 })

describe('StateDict', () => {
  it('validates names and sizes', () => {
    expect(() => createStateDict([{ name: 'a', shape: [2], dtype: 'float32', data: new Float32Array(3) }])).toThrow(/shape \[2\] needs 2/)
    expect(() => createStateDict([
      { name: 'a', shape: [1], dtype: 'float32', data: new Float32Array(1) },
      { name: 'a', shape: [1], dtype: 'float32', data: new Float32Array(1) }
    ])).toThrow(/Duplicate/)
    expect(() => shapeSize([2, -1])).toThrow(/Invalid dimension/)
    expect(shapeSize([])).toBe(1)
  })

  it('flattens and unflattens in order', () => {
    const s = sd()
    expect(stateDictSize(s)).toBe(9)
    const flat = flattenStateDict(s)
    expect(Array.from(flat)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9])
    const t = cloneStateDict(s)
    unflattenInto(t, flat.map((x) => x * 2))
    expect(Array.from(t.tensors[1]!.data)).toEqual([14, 16, 18])
    expect(() => unflattenInto(t, new Float32Array(3))).toThrow(/needs 9/)
  })

  it('compares bit for bit, including the sign of zero', () => {
    const a = sd()
    const b = cloneStateDict(a)
    expect(stateDictsBitEqual(a, b)).toBe(true)
    b.tensors[0]!.data[0] = 1 + 2 ** -23
    expect(stateDictsBitEqual(a, b)).toBe(false)
    const z1 = createStateDict([{ name: 'z', shape: [1], dtype: 'float32', data: Float32Array.from([0]) }])
    const z2 = createStateDict([{ name: 'z', shape: [1], dtype: 'float32', data: Float32Array.from([-0]) }])
    expect(stateDictsBitEqual(z1, z2)).toBe(false)
  })

  it('clones deeply', () => {
    const a = sd()
    const b = cloneStateDict(a)
    b.tensors[0]!.data[0] = 100
    b.meta.step = 99
    expect(a.tensors[0]!.data[0]).toBe(1)
    expect(a.meta.step).toBe(4)
  })

  it('names the first layout difference', () => {
    const a = stateDictSpecs(sd())
    expect(() => { assertSameLayout(a, a) }).not.toThrow()
    const b = a.map((s) => s.name === 'b' ? { ...s, shape: [4] } : s)
    expect(() => { assertSameLayout(a, b) }).toThrow(expect.objectContaining({ name: 'LayoutMismatchError', message: expect.stringContaining('Tensor 1') }))
  })
})
