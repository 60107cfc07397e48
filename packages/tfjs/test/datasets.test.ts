import { describe, expect, it } from 'vitest'
import { charCorpus, mnistDataset, sampleOrder, MNIST_PIXELS } from '@phalanx/tfjs'

describe('sampleOrder', () => {
  it('is a permutation, deterministic in (seed, epoch, n), different across epochs and seeds', () => {
    const a = sampleOrder(7, 0, 1000)
    expect(Array.from(a).sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i))
    expect(Array.from(sampleOrder(7, 0, 1000))).toEqual(Array.from(a))
    expect(Array.from(sampleOrder(7, 1, 1000))).not.toEqual(Array.from(a))
    expect(Array.from(sampleOrder(8, 0, 1000))).not.toEqual(Array.from(a))
    expect(sampleOrder(1, 0, 0)).toHaveLength(0)
    expect(() => sampleOrder(1, 0, -1)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })

  it('is a fixed function: pinned values guard against accidental changes to the generator', () => {
    expect(Array.from(sampleOrder(42, 3, 10))).toMatchInlineSnapshot(`
      [
        8,
        9,
        1,
        3,
        6,
        5,
        0,
        7,
        2,
        4,
      ]
    `)
  })
})

describe('mnistDataset', () => {
  it('reads the shipped digits deterministically, with disjoint train/test splits', async () => {
    const train = await mnistDataset({ split: 'train', seed: 1 })
    const test = await mnistDataset({ split: 'test', seed: 1 })
    const again = await mnistDataset({ split: 'train', seed: 1 })
    expect(train.size + test.size).toBe(10_000)
    expect(test.size).toBe(2000)
    for (const i of [0, 17, train.size - 1]) {
      expect(Array.from(again.sample(i).x)).toEqual(Array.from(train.sample(i).x))
      expect(again.sample(i).label).toBe(train.sample(i).label)
    }
    // A batch is exactly the concatenation of its samples, whatever the order of indices.
    const idx = [5, 3, 9]
    const b = train.batch(idx)
    idx.forEach((i, k) => {
      expect(Array.from(b.xs.subarray(k * MNIST_PIXELS, (k + 1) * MNIST_PIXELS))).toEqual(Array.from(train.sample(i).x))
      expect(b.labels[k]).toBe(train.sample(i).label)
      expect(b.ys[k * 10 + train.sample(i).label]).toBe(1)
    })
    // Disjoint: no test image equals a train image of the same seed (compare cheap fingerprints).
    const fp = (x: Float32Array): string => Array.from(x.subarray(150, 650)).join(',')
    const trainPrints = new Set(Array.from({ length: train.size }, (_, i) => fp(train.sample(i).x)))
    let overlap = 0
    for (let i = 0; i < test.size; i++) if (trainPrints.has(fp(test.sample(i).x))) overlap++
    expect(overlap).toBeLessThan(5)
    const labels = new Set(Array.from({ length: 200 }, (_, i) => train.sample(i).label))
    expect(labels.size).toBe(10)
    expect(Array.from(train.order(2))).toEqual(Array.from(sampleOrder(1, 2, train.size)))
    expect(() => train.sample(train.size)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})

describe('charCorpus', () => {
  it('gives shifted (input, target) sequences over a shared vocabulary', async () => {
    const train = await charCorpus({ seqLen: 32, split: 'train' })
    const test = await charCorpus({ seqLen: 32, split: 'test' })
    expect(train.vocab).toEqual(test.vocab)
    expect(train.vocab.length).toBe(86)
    expect(train.size).toBeGreaterThan(6000)
    expect(test.size).toBeGreaterThan(600)
    const s = train.sample(10)
    expect(Array.from(s.input.subarray(1))).toEqual(Array.from(s.target.subarray(0, 31)))
    expect(train.decode(train.encode('GNU General Public License'))).toBe('GNU General Public License')
    const b = train.batch([10, 2])
    expect(Array.from(b.inputs.subarray(0, 32))).toEqual(Array.from(s.input))
    expect(Array.from(b.targets.subarray(32, 64))).toEqual(Array.from(train.sample(2).target))
    expect(train.decode(train.sample(0).input)).toBe('\n                                 Apache Lice'.slice(0, 32))
  })

  it('accepts custom text and rejects unknown characters', async () => {
    const c = await charCorpus({ text: 'abcabcabcabcabcabcabcabcabcabc', seqLen: 4, testFraction: 0.2 })
    expect(c.vocab).toEqual(['a', 'b', 'c'])
    expect(c.size).toBe(5)
    expect(() => c.encode('abz')).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
  })
})
