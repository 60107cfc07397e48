import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createMnistMlp, createTransformerLm, selectBackend, sparseSoftmaxCrossEntropy, softmaxCrossEntropy, tf, accuracy } from '@phalanx/tfjs'

describe('reference models (wasm)', () => {
  let baseline = 0
  beforeAll(async () => { await selectBackend({ prefer: 'wasm' }); baseline = tf.memory().numTensors })
  afterEach(() => { expect(tf.memory().numTensors).toBe(baseline) })

  it('the MLP has the documented layout and is seeded', async () => {
    const a = createMnistMlp({ hidden: 12, seed: 4 })
    const b = createMnistMlp({ hidden: 12, seed: 4 })
    const c = createMnistMlp({ hidden: 12, seed: 5 })
    try {
      expect(a.params.map((p) => [p.name, p.variable.shape])).toEqual([
        ['dense1/kernel', [784, 12]], ['dense1/bias', [12]], ['dense2/kernel', [12, 10]], ['dense2/bias', [10]]])
      const [wa, wb, wc] = await Promise.all([a, b, c].map(async (m) => Array.from(await m.params[0]?.variable.data() ?? [])))
      expect(wa).toEqual(wb)
      expect(wa).not.toEqual(wc)
      const shape = tf.tidy(() => a.apply(tf.zeros([3, 784])).shape)
      expect(shape).toEqual([3, 10])
    } finally {
      a.dispose(); b.dispose(); c.dispose()
    }
  })

  it('transformer stages partition the parameters and compose to apply()', async () => {
    const lm = createTransformerLm({ vocab: 17, dModel: 16, heads: 4, layers: 4, seqLen: 8, seed: 1 })
    try {
      const names = lm.params.map((p) => p.name)
      expect(new Set(names).size).toBe(names.length)
      for (const s of [1, 2, 3, 4]) {
        const stages = lm.splitStages(s)
        expect(stages).toHaveLength(s)
        expect(stages.flatMap((st) => st.params.map((p) => p.name)).sort()).toEqual([...names].sort())
        expect(stages.flatMap((st) => st.blocks)).toEqual([0, 1, 2, 3])
        expect(stages[0]?.params.some((p) => p.name === 'embed/token')).toBe(true)
        expect(stages[s - 1]?.params.some((p) => p.name === 'head/w')).toBe(true)
      }
      expect(() => lm.splitStages(5)).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
      const ids = tf.tensor2d([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], [2, 6], 'int32')
      const whole = lm.apply(ids)
      expect(whole.shape).toEqual([2, 6, 17])
      let h: tf.Tensor = ids
      for (const st of lm.splitStages(3)) {
        const next = st.forward(h)
        if (h !== ids) h.dispose()
        h = next
      }
      expect(Array.from(await h.data())).toEqual(Array.from(await whole.data()))
      tf.dispose([ids, whole, h])
    } finally {
      lm.dispose()
    }
  })

  it('attention is causal: changing a later token leaves earlier logits unchanged', async () => {
    const lm = createTransformerLm({ vocab: 11, dModel: 8, heads: 2, layers: 2, seqLen: 8, seed: 3 })
    try {
      const a = tf.tidy(() => lm.apply(tf.tensor2d([[1, 2, 3, 4]], [1, 4], 'int32')).slice([0, 0, 0], [1, 2, 11]))
      const b = tf.tidy(() => lm.apply(tf.tensor2d([[1, 2, 9, 10]], [1, 4], 'int32')).slice([0, 0, 0], [1, 2, 11]))
      expect(Array.from(await a.data())).toEqual(Array.from(await b.data()))
      tf.dispose([a, b])
    } finally {
      lm.dispose()
    }
  })

  it('losses: uniform logits give ln(classes); accuracy counts argmax hits', async () => {
    const [dense, sparse] = tf.tidy(() => {
      const logits = tf.zeros([4, 5])
      const ids = tf.tensor1d([0, 1, 2, 3], 'int32')
      return [softmaxCrossEntropy(logits, tf.oneHot(ids, 5)), sparseSoftmaxCrossEntropy(logits, ids)]
    })
    expect((await (dense as tf.Tensor).data())[0]).toBeCloseTo(Math.log(5), 5)
    expect((await (sparse as tf.Tensor).data())[0]).toBeCloseTo(Math.log(5), 5)
    const scores = tf.tensor2d([[0, 9, 0], [5, 0, 0]])
    expect(await accuracy(scores, [1, 2])).toBe(0.5)
    tf.dispose([dense as tf.Tensor, sparse as tf.Tensor, scores])
  })
})
