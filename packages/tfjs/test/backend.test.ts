import { afterEach, describe, expect, it } from 'vitest'
import { pino } from 'pino'
import type { Logger } from '@phalanx/core'
import { Writable } from 'node:stream'
import { isWasmMatMulOverridden, selectBackend, setWasmMatMulOverride, tf } from '@phalanx/tfjs'

function capture (): { logger: Logger, lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { chunks.push(String(chunk)); cb() } })
  return {
    logger: pino({ level: 'info' }, stream) as unknown as Logger,
    lines: () => chunks.join('').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Record<string, unknown>)
  }
}

describe('selectBackend', () => {
  afterEach(async () => {
    // Leave the override installed (the default) for the next test.
    if (tf.getBackend() === 'wasm') setWasmMatMulOverride(true)
  })

  it('forcing an unavailable backend throws BackendUnavailableError with the reason', async () => {
    await expect(selectBackend({ prefer: 'tensorflow' })).rejects.toMatchObject({
      name: 'BackendUnavailableError',
      message: expect.stringContaining('@tensorflow/tfjs-node') as unknown
    })
  })

  it('forced wasm installs the matmul override and logs one line saying why', async () => {
    const { logger, lines } = capture()
    const sel = await selectBackend({ prefer: 'wasm' }, { logger })
    expect(sel).toMatchObject({ name: 'wasm', matMulOverride: true })
    expect(tf.getBackend()).toBe('wasm')
    expect(isWasmMatMulOverridden()).toBe(true)
    const infos = lines().filter((l) => l.level === 30)
    expect(infos).toHaveLength(1)
    expect(infos[0]).toMatchObject({ component: 'tfjs-backend', backend: 'wasm', matMulOverride: true })
  })

  it('the override is idempotent, removable, and matches the stock kernel (bit-exact for short inner dimensions)', async () => {
    await selectBackend({ prefer: 'wasm' })
    setWasmMatMulOverride(true)
    setWasmMatMulOverride(true)
    expect(isWasmMatMulOverridden()).toBe(true)
    const a = tf.randomNormal([3, 37, 29], 0, 1, 'float32', 7)
    const b = tf.randomNormal([3, 41, 37], 0, 1, 'float32', 8)
    const c = tf.randomNormal([29, 41], 0, 1, 'float32', 9)
    const run = async (): Promise<Float32Array[]> => {
      const outs = [tf.matMul(a, b, true, true), tf.matMul(c, c, false, true), tf.matMul(c, c, true, false)]
      const data = await Promise.all(outs.map(async (t) => await t.data() as Float32Array))
      tf.dispose(outs)
      return data
    }
    const before = tf.memory().numTensors
    const fast = await run()
    expect(tf.memory().numTensors).toBe(before)
    setWasmMatMulOverride(false)
    expect(isWasmMatMulOverridden()).toBe(false)
    const stock = await run()
    setWasmMatMulOverride(true)
    expect(fast.map((x) => Array.from(x))).toEqual(stock.map((x) => Array.from(x)))
    tf.dispose([a, b, c])
    // With a long inner dimension the stock transposeA path sums in another order: equal to rounding.
    const x = tf.randomNormal([512, 128], 0, 1, 'float32', 3)
    const y = tf.randomNormal([512, 96], 0, 1, 'float32', 4)
    const viaOverride = tf.matMul(x, y, true, false)
    setWasmMatMulOverride(false)
    const viaStock = tf.matMul(x, y, true, false)
    setWasmMatMulOverride(true)
    const diff = tf.tidy(() => tf.max(tf.div(tf.abs(tf.sub(viaOverride, viaStock)), tf.maximum(tf.abs(viaStock), 1))))
    expect((await diff.data())[0]).toBeLessThan(2e-4)
    tf.dispose([x, y, viaOverride, viaStock, diff])
  })

  it('auto skips unavailable backends, says why, and never picks a software GPU', async () => {
    const sel = await selectBackend({ prefer: 'auto' })
    // tfjs-node cannot be installed here; without a hardware GPU the ladder lands on wasm.
    expect(sel.skipped[0]).toMatchObject({ name: 'tensorflow' })
    for (const s of sel.skipped) expect(s.reason.length).toBeGreaterThan(0)
    if (sel.name === 'webgpu') expect(sel.reason).not.toContain('software')
    else expect(sel).toMatchObject({ name: 'wasm', skipped: [{ name: 'tensorflow' }, { name: 'webgpu' }] })
  })

  it('cpu is always available', async () => {
    const sel = await selectBackend({ prefer: 'cpu' })
    expect(sel).toMatchObject({ name: 'cpu', matMulOverride: false })
    expect(tf.getBackend()).toBe('cpu')
  })
})
