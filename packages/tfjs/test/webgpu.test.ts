/**
 * The webgpu backend runs the same gradient and state cases as cpu, on whatever adapter Dawn finds.
 * Without a GPU, Dawn's OpenGL ES backend over Mesa's llvmpipe (Debian: libegl1 libegl-mesa0
 * libgles2 libgl1-mesa-dri, installed by .ci/run) is a correct but slow software adapter: that is
 * what CI runs here. Where neither exists the suite is skipped, and the reason is printed.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { stateDictsBitEqual } from '@phalanx/core'
import {
  applyGradients, computeGradients, createMnistMlp, extractState, loadState, mnistLoss, paramCount, selectBackend, tf
} from '@phalanx/tfjs'
import { maxRelDiff, syntheticMnistBatch } from './helpers.js'

// Dawn's GL backend needs a surfaceless EGL platform and a runtime dir; set before the module loads.
process.env.EGL_PLATFORM ??= 'surfaceless'
process.env.XDG_RUNTIME_DIR ??= '/tmp'

async function tryWebGpu (): Promise<string | undefined> {
  try {
    await selectBackend({ prefer: 'webgpu', dawnOptions: ['backend=opengles'], webgpuCompatibility: true, allowSoftwareGpu: true })
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

const unavailable = await tryWebGpu()
if (unavailable !== undefined) process.stderr.write(`webgpu suite skipped: ${unavailable}\n`)

// Skipped only when no WebGPU adapter (hardware or Mesa software GL) exists on this machine.
describe.skipIf(unavailable !== undefined)('webgpu backend agrees with cpu', () => {
  afterAll(async () => { await selectBackend({ prefer: 'cpu' }) })

  it('computes gradients within float tolerance of cpu, deterministically, without leaks', async () => {
    const batch = syntheticMnistBatch(16, 7)
    await selectBackend({ prefer: 'cpu' })
    const cpuModel = createMnistMlp({ hidden: 32, seed: 5 })
    const ref = await computeGradients(cpuModel, mnistLoss, batch)
    const refState = await extractState(cpuModel)
    cpuModel.dispose()

    await selectBackend({ prefer: 'webgpu', dawnOptions: ['backend=opengles'], webgpuCompatibility: true, allowSoftwareGpu: true })
    expect(tf.getBackend()).toBe('webgpu')
    const before = tf.memory().numTensors
    const model = createMnistMlp({ hidden: 32, seed: 99 })
    loadState(model, undefined, refState)
    const a = await computeGradients(model, mnistLoss, batch)
    const b = await computeGradients(model, mnistLoss, batch)
    expect(a.grads.length).toBe(paramCount(model))
    expect(Buffer.from(a.grads.buffer).equals(Buffer.from(b.grads.buffer))).toBe(true)
    expect(maxRelDiff(a.grads, ref.grads)).toBeLessThan(1e-4)
    expect(Math.abs(a.loss - ref.loss)).toBeLessThan(1e-4)

    const opt = tf.train.sgd(0.1)
    applyGradients(model, opt, a.grads)
    const after = await extractState(model)
    expect(stateDictsBitEqual(after, refState)).toBe(false)
    opt.dispose()
    model.dispose()
    expect(tf.memory().numTensors).toBe(before)
  })
})
