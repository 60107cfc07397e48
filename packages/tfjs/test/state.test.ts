import { afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { stateDictsBitEqual, stateDictSpecs } from '@phalanx/core'
import {
  applyGradients, computeGradients, createMnistMlp, createTransformerLm, extractState, fromLayersModel,
  lmLoss, loadState, mnistLoss, paramCount, pinState, selectBackend, stateSpecs, tf, type TfModel
} from '@phalanx/tfjs'
import { maxRelDiff, syntheticMnistBatch, syntheticTokens } from './helpers.js'

const BACKENDS = ['cpu', 'wasm'] as const

describe.each(BACKENDS)('state and gradients on %s', (backend) => {
  const owned: Array<{ dispose: () => void }> = []
  const own = <T extends { dispose: () => void }>(x: T): T => { owned.push(x); return x }
  let baseline = 0

  beforeAll(async () => {
    await selectBackend({ prefer: backend })
  })
  afterEach(() => {
    for (const x of owned.splice(0)) x.dispose()
    // Every model, optimiser and intermediate was disposed: no tensor may survive a test.
    expect(tf.memory().numTensors).toBe(baseline)
  })
  const start = (): void => { baseline = tf.memory().numTensors }

  it('computeGradients is deterministic and leaves no tensors behind', async () => {
    start()
    const model = own(createMnistMlp({ hidden: 32, seed: 3 }))
    const batch = syntheticMnistBatch(16, 1)
    const before = tf.memory().numTensors
    const a = await computeGradients(model, mnistLoss, batch)
    const b = await computeGradients(model, mnistLoss, batch, { out: new Float32Array(paramCount(model)) })
    expect(tf.memory().numTensors).toBe(before)
    expect(a.grads.length).toBe(paramCount(model))
    expect(Buffer.from(a.grads.buffer).equals(Buffer.from(b.grads.buffer))).toBe(true)
    expect(a.loss).toBe(b.loss)
    expect(a.grads.some((g) => g !== 0)).toBe(true)
  })

  it('extract -> load round-trips bit-exactly, and training then continues identically (Adam)', async () => {
    start()
    const a = own(createMnistMlp({ hidden: 24, seed: 1 }))
    const optA = own(tf.train.adam(1e-2))
    for (let s = 0; s < 3; s++) applyGradients(a, optA, (await computeGradients(a, mnistLoss, syntheticMnistBatch(8, s))).grads)
    const saved = await extractState(a, optA)
    expect(saved.meta.step).toBe(3)
    expect(saved.tensors.map((t) => t.name).slice(0, 7)).toEqual([
      'dense1/kernel', 'dense1/bias', 'dense2/kernel', 'dense2/bias', 'adam/iter', 'adam/beta1_power', 'adam/beta2_power'])

    const b = own(createMnistMlp({ hidden: 24, seed: 99 }))
    const optB = own(tf.train.adam(1e-2))
    loadState(b, optB, saved)
    expect(stateDictsBitEqual(await extractState(b, optB), saved)).toBe(true)

    for (let s = 3; s < 6; s++) {
      const batch = syntheticMnistBatch(8, s)
      applyGradients(a, optA, (await computeGradients(a, mnistLoss, batch)).grads)
      applyGradients(b, optB, (await computeGradients(b, mnistLoss, batch)).grads)
    }
    expect(stateDictsBitEqual(await extractState(a, optA), await extractState(b, optB))).toBe(true)
  })

  it('loads into an optimiser that already has slots without leaking, and keeps the caller\'s arrays', async () => {
    start()
    const m = own(createMnistMlp({ hidden: 8 }))
    const opt = own(tf.train.adam(1e-2))
    applyGradients(m, opt, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 1))).grads)
    const state = await extractState(m, opt)
    const count = tf.memory().numTensors
    loadState(m, opt, state)
    expect(tf.memory().numTensors).toBe(count)
    // Writing into the state afterwards must not reach the model (cpu would alias without a copy).
    const first = (state.tensors[0]?.data[0] ?? 0)
    state.tensors[0]?.data.fill(123)
    expect((await extractState(m)).tensors[0]?.data[0]).toBe(first)
  })

  it('momentum keeps its accumulators; plain SGD has no slots', async () => {
    start()
    const m = own(createMnistMlp({ hidden: 8 }))
    // tfjs 4.22 MomentumOptimizer.dispose() forgets SGD's learning-rate scalar `c`: dispose it too.
    const momentum = (): tf.MomentumOptimizer => {
      const o = tf.train.momentum(0.1, 0.9)
      own({ dispose: () => { o.dispose(); (o as unknown as { c: tf.Tensor }).c.dispose() } })
      return o
    }
    const mom = momentum()
    const sgd = own(tf.train.sgd(0.1))
    expect(stateSpecs(m, sgd).map((s) => s.name)).toEqual(stateSpecs(m).map((s) => s.name))
    const names = stateSpecs(m, mom).map((s) => s.name)
    expect(names).toContain('momentum/iter')
    expect(names).toContain('momentum/accum/dense1/kernel')
    applyGradients(m, mom, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 2))).grads)
    const st = await extractState(m, mom)
    const accum = st.tensors.find((t) => t.name === 'momentum/accum/dense2/bias')
    expect(accum?.data.some((v) => v !== 0)).toBe(true)
    const m2 = own(createMnistMlp({ hidden: 8, seed: 5 }))
    const mom2 = momentum()
    loadState(m2, mom2, st)
    expect(stateDictsBitEqual(await extractState(m2, mom2), st)).toBe(true)
  })

  it('a layout that does not match throws LayoutMismatchError and changes nothing', async () => {
    start()
    const small = own(createMnistMlp({ hidden: 8 }))
    const big = own(createMnistMlp({ hidden: 16 }))
    const state = await extractState(small)
    const before = await extractState(big)
    expect(() => { loadState(big, undefined, state) }).toThrow(expect.objectContaining({ name: 'LayoutMismatchError' }))
    expect(stateDictsBitEqual(await extractState(big), before)).toBe(true)
    const opt = own(tf.train.adam())
    // Weights-only state into model + optimiser: slots missing.
    expect(() => { loadState(small, opt, state) }).toThrow(expect.objectContaining({ name: 'LayoutMismatchError' }))
  })

  it('pinState captures the step boundary without copying; read and release leak nothing', async () => {
    start()
    const m = own(createMnistMlp({ hidden: 16 }))
    const opt = own(tf.train.adam(1e-2))
    applyGradients(m, opt, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 1))).grads)
    const expected = await extractState(m, opt, { meta: { step: 1, epoch: 2 } })
    const count = tf.memory().numTensors
    const pin = pinState(m, opt, { step: 1, epoch: 2 })
    expect(stateDictSpecs(expected)).toEqual(pin.specs)
    // The next steps replace every variable's buffer; the pinned buffers must stay as they were.
    for (let s = 0; s < 2; s++) applyGradients(m, opt, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 5 + s))).grads)
    for (let i = 0; i < pin.specs.length; i++) {
      const want = expected.tensors[i]?.data as Float32Array
      const out = new Float32Array(want.length)
      await pin.read(i, out)
      expect(Buffer.from(out.buffer).equals(Buffer.from(want.buffer)), pin.specs[i]?.name).toBe(true)
    }
    expect(pin.meta).toEqual({ step: 1, epoch: 2 })
    pin.release()
    pin.release()
    expect(tf.memory().numTensors).toBe(count)
    await expect(pin.read(0, new Float32Array(expected.tensors[0]?.data.length ?? 0))).rejects.toMatchObject({ name: 'ClosedError' })
  })

  it('pinState readRange pieces equal a whole read bit-exactly and check their bounds', async () => {
    start()
    const m = own(createMnistMlp({ hidden: 24, seed: 5 }))
    const opt = own(tf.train.adam(1e-2))
    applyGradients(m, opt, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 2))).grads)
    const pin = pinState(m, opt, { step: 1, epoch: 0 })
    const wanted: Float32Array[] = []
    for (let i = 0; i < pin.specs.length; i++) {
      const out = new Float32Array((pin.specs[i]?.shape ?? []).reduce((a, b) => a * b, 1))
      await pin.read(i, out)
      wanted.push(out)
    }
    // Later steps give the variables new buffers (and may grow the wasm heap); the pin must not move.
    for (let s = 0; s < 2; s++) applyGradients(m, opt, (await computeGradients(m, mnistLoss, syntheticMnistBatch(4, 7 + s))).grads)
    const readRange = pin.readRange?.bind(pin)
    expect(readRange).toBeTypeOf('function')
    if (readRange === undefined) return
    let split = 0
    // cpu and wasm keep values in this thread's memory: ranges are copied from there, never downloaded.
    const backendImpl = tf.engine().backend
    const realRead = backendImpl.read.bind(backendImpl)
    let downloads = 0
    backendImpl.read = async (dataId) => { downloads++; return await realRead(dataId) }
    onTestFinished(() => { backendImpl.read = realRead })
    for (let i = 0; i < wanted.length; i++) {
      const want = wanted[i] as Float32Array
      const got = new Float32Array(want.length).fill(Number.NaN)
      // Uneven pieces (7, 1000, 7, 1000, ...) so ranges start and end anywhere inside the tensor.
      for (let off = 0, k = 0; off < want.length; k++) {
        const n = Math.min(want.length - off, k % 2 === 0 ? 7 : 1000)
        await readRange(i, off, got.subarray(off, off + n))
        off += n
        if (off < want.length) split++
      }
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), pin.specs[i]?.name).toBe(true)
    }
    expect(split).toBeGreaterThan(100)
    expect(downloads).toBe(0)
    const size0 = wanted[0]?.length ?? 0
    await expect(readRange(0, size0 - 3, new Float32Array(4))).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(readRange(0, -1, new Float32Array(1))).rejects.toMatchObject({ name: 'InvalidParametersError' })
    await expect(readRange(wanted.length, 0, new Float32Array(1))).rejects.toMatchObject({ name: 'InvalidParametersError' })
    pin.release()
    await expect(readRange(0, 0, new Float32Array(1))).rejects.toMatchObject({ name: 'ClosedError' })
  })

  it('a tf.LayersModel is adapted with stable, process-independent names', async () => {
    start()
    const build = (): tf.Sequential => tf.sequential({ layers: [tf.layers.dense({ inputShape: [784], units: 8, activation: 'relu' }), tf.layers.dense({ units: 10 })] })
    const l1 = own(build())
    const l2 = own(build())
    const m1 = fromLayersModel(l1)
    expect(m1.params.map((p) => p.name)).toEqual(['0.dense/kernel', '0.dense/bias', '1.dense/kernel', '1.dense/bias'])
    const opt = own(tf.train.adam(1e-2))
    applyGradients(l1, opt, (await computeGradients(l1, mnistLoss, syntheticMnistBatch(4, 1))).grads)
    const st = await extractState(l1)
    loadState(l2, undefined, st)
    expect(stateDictsBitEqual(await extractState(l2), st)).toBe(true)
  })
})

describe('cpu and wasm agree', () => {
  async function gradsOn (backend: 'cpu' | 'wasm', make: () => TfModel, loss: (m: TfModel) => Promise<{ loss: number, grads: Float32Array }>): Promise<{ loss: number, grads: Float32Array }> {
    await selectBackend({ prefer: backend })
    const model = make()
    try {
      return await loss(model)
    } finally {
      model.dispose()
    }
  }

  it('MLP gradients match within float tolerance', async () => {
    const batch = syntheticMnistBatch(16, 4)
    const make = (): TfModel => createMnistMlp({ hidden: 32, seed: 11 })
    const run = async (m: TfModel): Promise<{ loss: number, grads: Float32Array }> => await computeGradients(m, mnistLoss, batch)
    const cpu = await gradsOn('cpu', make, run)
    const wasm = await gradsOn('wasm', make, run)
    expect(Math.abs(cpu.loss - wasm.loss)).toBeLessThan(1e-5)
    expect(maxRelDiff(wasm.grads, cpu.grads)).toBeLessThan(1e-4)
  })

  it('transformer gradients match within float tolerance', async () => {
    const batch = syntheticTokens(2, 12, 20, 3)
    const make = (): TfModel => createTransformerLm({ vocab: 20, dModel: 16, heads: 2, layers: 2, seqLen: 16, seed: 2 })
    const run = async (m: TfModel): Promise<{ loss: number, grads: Float32Array }> => await computeGradients(m, lmLoss, batch)
    const cpu = await gradsOn('cpu', make, run)
    const wasm = await gradsOn('wasm', make, run)
    expect(Math.abs(cpu.loss - wasm.loss)).toBeLessThan(1e-4)
    expect(maxRelDiff(wasm.grads, cpu.grads)).toBeLessThan(1e-3)
    expect(cpu.grads.some((g) => g !== 0)).toBe(true)
  })
})

describe('pinState on a backend without a storage view', () => {
  it('readRange downloads a tensor once and serves its ranges from that copy', async () => {
    // A cpu backend registered under another name: pinState cannot reach its storage, so it takes
    // the path of webgpu/webgl/tensorflow (one data() download per tensor).
    const name = 'cpu-download-test'
    const Cpu = tf.findBackend('cpu')?.constructor as (new () => tf.KernelBackend) | undefined
    expect(Cpu).toBeTypeOf('function')
    if (Cpu === undefined) return
    tf.registerBackend(name, () => new Cpu())
    tf.copyRegisteredKernels('cpu', name)
    try {
      await tf.setBackend(name)
      const m = createMnistMlp({ hidden: 8, seed: 1 })
      const pin = pinState(m, undefined, { step: 0, epoch: 0 })
      try {
        const want = (await extractState(m)).tensors[0]?.data as Float32Array
        const t = m.params[0]?.variable as tf.Variable
        let downloads = 0
        // The pinned tensor is a second handle on the variable's data; count downloads of that data.
        const engine = tf.engine()
        const realRead = engine.backend.read.bind(engine.backend)
        engine.backend.read = async (dataId) => { if (dataId === t.dataId) downloads++; return await realRead(dataId) }
        try {
          const got = new Float32Array(want.length)
          for (let off = 0; off < want.length; off += 1000) await pin.readRange?.(0, off, got.subarray(off, Math.min(want.length, off + 1000)))
          expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true)
          expect(downloads).toBe(1)
          expect(Math.ceil(want.length / 1000)).toBeGreaterThan(3)
        } finally {
          engine.backend.read = realRead
        }
      } finally {
        pin.release()
        m.dispose()
      }
    } finally {
      await selectBackend({ prefer: 'cpu' })
      tf.removeBackend(name)
    }
  })
})
