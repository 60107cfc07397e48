import { createFakeClock, type Endpoint } from '@phalanx/core'
import { afterEach, describe, expect, it } from 'vitest'
import { createOuterOptimizer, createRingAllReduce, meanInto, type RingAllReduce } from '../src/index.js'
import { openMesh, rand } from './helpers.js'

const cleanup: Array<() => Promise<void>> = []
afterEach(async () => { for (const c of cleanup.splice(0).reverse()) await c() })

async function ring (n: number, clock = createFakeClock()): Promise<{ ids: string[], endpoints: Endpoint[], rings: RingAllReduce[] }> {
  const { ids, endpoints } = await openMesh(n, 'ring-test', cleanup)
  const rings = endpoints.map((endpoint) => {
    const r = createRingAllReduce({ members: ids, stepTimeoutMs: 1000 }, { endpoint, clock })
    cleanup.push(async () => { await r.stop() })
    return r
  })
  return { ids, endpoints, rings }
}

describe('ring all-reduce', () => {
  it.each([1, 2, 3, 5, 8])('%i replicas: everyone gets the mean, in 2(N-1) rounds, sending 2(N-1)/N of the vector', async (n) => {
    const size = 37 // not a multiple of n: uneven chunks
    const { rings } = await ring(n)
    for (let round = 0; round < 2; round++) {
      const inputs = Array.from({ length: n }, (_, i) => rand(size, 100 * round + i + 1))
      const outs = inputs.map(() => new Float32Array(size))
      const costs = await Promise.all(rings.map(async (r, i) => await r.reduce(inputs[i] as Float32Array, outs[i] as Float32Array, { round })))
      const expected = meanInto(new Float32Array(size), inputs)
      for (const o of outs) for (let k = 0; k < size; k++) expect(o[k]).toBeCloseTo(expected[k] as number, 6)
      // Every replica holds bit-identical results (the finished chunks are copied, not recomputed).
      for (const o of outs) expect(o).toEqual(outs[0])
      const sent = costs.reduce((s, c) => s + (c?.bytesSent ?? 0), 0)
      expect(sent).toBe(n === 1 ? 0 : 2 * (n - 1) * size * 4)
      for (const c of costs) expect(c?.rounds).toBe(2 * (n - 1))
    }
  })

  it('drives DiLoCo: an all-replica outer optimiser over the ring equals one over an exact mean', async () => {
    const n = 4
    const size = 16
    const { rings } = await ring(n)
    const initial = rand(size, 9)
    const opts = rings.map((r) => {
      const o = createOuterOptimizer({ spec: { preset: 'local-sgd', interval: 1 }, initial, members: ['r0', 'r1', 'r2', 'r3'] }, { allReduce: r.reduce })
      o.start()
      cleanup.push(async () => { await o.stop() })
      return o
    })
    const thetas = Array.from({ length: n }, (_, i) => rand(size, i + 30))
    const expected = meanInto(new Float32Array(size), thetas)
    const reports = await Promise.all(opts.map(async (o, i) => await o.sync(thetas[i] as Float32Array)))
    for (const rep of reports) expect(rep).toMatchObject({ mode: 'group', rounds: 6, bytesSent: 6 * (size / 4) * 4 })
    for (const t of thetas) for (let k = 0; k < size; k++) expect(t[k]).toBeCloseTo(expected[k] as number, 6)
  })

  it('a silent neighbour fails the reduce with TimeoutError after the step deadline; a repeated round is refused', async () => {
    const clock = createFakeClock()
    const { rings } = await ring(3, clock)
    const pending = (rings[0] as RingAllReduce).reduce(rand(9, 1), new Float32Array(9), { round: 0 })
    for (let i = 0; i < 1000 && clock.pending() === 0; i++) await new Promise((resolve) => { setImmediate(resolve) })
    clock.advance(1000)
    await expect(pending).rejects.toMatchObject({ name: 'TimeoutError' })
    await expect((rings[0] as RingAllReduce).reduce(rand(9, 1), new Float32Array(9), { round: 0 })).rejects.toMatchObject({ name: 'InvalidParametersError' })
  })

  it('stop() fails a reduce in flight with ClosedError and leaves no timer behind', async () => {
    const clock = createFakeClock()
    const { rings } = await ring(2, clock)
    const pending = (rings[0] as RingAllReduce).reduce(rand(4, 1), new Float32Array(4), { round: 0 })
    await rings[0]?.stop()
    await expect(pending).rejects.toMatchObject({ name: 'ClosedError' })
    expect(clock.pending()).toBe(0)
    await expect((rings[0] as RingAllReduce).reduce(rand(4, 1), new Float32Array(4), { round: 1 })).rejects.toMatchObject({ name: 'ClosedError' })
  })
})
