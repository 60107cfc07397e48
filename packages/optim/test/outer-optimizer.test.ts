import { createStateDict, type StateDict } from '@phalanx/core'
import { afterEach, describe, expect, it } from 'vitest'
import { applyOuterStep, createOuterOptimizer, meanInto, type AllReduce, type OuterOptimizer, type OuterSpecInput } from '../src/index.js'
import { rand } from './helpers.js'

/** The simplest all-reduce: a per-round barrier in memory that hands everyone the float64 mean. */
function memoryAllReduce (n: number): AllReduce {
  const rounds = new Map<number, { inputs: Float32Array[], outs: Float32Array[], done: Array<() => void> }>()
  return async (input, out, { round }) => {
    await new Promise<void>((resolve) => {
      let g = rounds.get(round)
      if (g === undefined) {
        g = { inputs: [], outs: [], done: [] }
        rounds.set(round, g)
      }
      g.inputs.push(input.slice())
      g.outs.push(out)
      g.done.push(resolve)
      if (g.inputs.length === n) {
        const mean = meanInto(new Float32Array(input.length), g.inputs)
        for (const o of g.outs) o.set(mean)
        for (const d of g.done) d()
        rounds.delete(round)
      }
    })
  }
}

const open: OuterOptimizer[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map(async (o) => { await o.stop() }))
})

function replicas (spec: OuterSpecInput, n: number, size: number, initial: Float32Array): OuterOptimizer[] {
  const allReduce = memoryAllReduce(n)
  return Array.from({ length: n }, (_, i) => {
    const o = createOuterOptimizer({ spec, initial, members: Array.from({ length: n }, (_, k) => `r${k}`), self: `r${i}` }, { allReduce })
    o.start()
    open.push(o)
    expect(o.size).toBe(size)
    return o
  })
}

describe('createOuterOptimizer, group all', () => {
  it('DiLoCo with alpha 1, mu 0 equals FedAvg (the plain mean)', async () => {
    const n = 4
    const size = 100
    const initial = rand(size, 1)
    const diloco = replicas({ preset: 'diloco', alpha: 1, momentum: 0 }, n, size, initial)
    const fedavg = replicas('fedavg', n, size, initial)
    for (let r = 0; r < 3; r++) {
      const thetas = Array.from({ length: n }, (_, i) => rand(size, 100 * r + i + 2))
      const expected = meanInto(new Float32Array(size), thetas)
      const a = thetas.map((t) => t.slice())
      const b = thetas.map((t) => t.slice())
      await Promise.all(diloco.map(async (o, i) => await o.sync(a[i] as Float32Array)))
      await Promise.all(fedavg.map(async (o, i) => await o.sync(b[i] as Float32Array)))
      for (let i = 0; i < n; i++) {
        expect(a[i]).toEqual(expected)
        expect(b[i]).toEqual(expected)
      }
    }
  })

  it('DiLoCo Nesterov keeps one shared anchor and follows the reference update', async () => {
    const n = 3
    const size = 16
    const initial = rand(size, 5)
    const opts = replicas('diloco', n, size, initial)
    const anchor = initial.slice()
    const momentum = new Float32Array(size)
    for (let r = 0; r < 2; r++) {
      const thetas = Array.from({ length: n }, (_, i) => rand(size, 10 * r + i + 50))
      applyOuterStep({ alpha: 0.7, momentum: 0.9, kind: 'nesterov' }, anchor, momentum, meanInto(new Float32Array(size), thetas))
      const reports = await Promise.all(opts.map(async (o, i) => await o.sync(thetas[i] as Float32Array)))
      for (const t of thetas) expect(t).toEqual(anchor)
      for (const rep of reports) expect(rep).toMatchObject({ round: r, mode: 'group', group: 'all', rounds: 2 * (n - 1) })
    }
    expect(opts[0]?.metrics()).toMatchObject({ syncs: 2, rounds: 8, fallbacks: 0 })
  })

  it('step() synchronises every interval steps only', async () => {
    const size = 8
    const [o] = replicas({ preset: 'local-sgd', interval: 3 }, 1, size, new Float32Array(size))
    const theta = rand(size, 9)
    const reports = []
    for (let s = 0; s < 7; s++) reports.push(await (o as OuterOptimizer).step(theta))
    expect(reports.map((r) => r === undefined)).toEqual([true, true, false, true, true, false, true])
    expect(o?.innerSteps).toBe(7)
    expect(o?.round).toBe(2)
  })

  it('propagates an allReduce failure without applying anything', async () => {
    const size = 4
    const failing: AllReduce = async () => { throw Object.assign(new Error('quorum lost'), { name: 'QuorumLostError' }) }
    const o = createOuterOptimizer({ spec: 'diloco', initial: new Float32Array(size) }, { allReduce: failing })
    o.start()
    open.push(o)
    const theta = Float32Array.of(1, 2, 3, 4)
    await expect(o.sync(theta)).rejects.toMatchObject({ name: 'QuorumLostError' })
    expect(Array.from(theta)).toEqual([1, 2, 3, 4])
    expect(o.round).toBe(0)
  })
})

describe('createOuterOptimizer, state and lifecycle', () => {
  it('a joiner healed with exportState/importState continues exactly like its donor', async () => {
    const size = 32
    const spec: OuterSpecInput = { group: 'none', alpha: 0.7, momentum: 0.5, kind: 'heavy-ball', interval: 1 }
    const donor = createOuterOptimizer({ spec, initial: rand(size, 1) })
    donor.start()
    open.push(donor)
    for (let r = 0; r < 3; r++) await donor.step(rand(size, r + 10))
    const joiner = createOuterOptimizer({ spec, initial: new Float32Array(size) })
    joiner.start()
    open.push(joiner)
    joiner.importState(donor.exportState())
    expect(joiner.round).toBe(3)
    expect(joiner.innerSteps).toBe(3)
    const a = rand(size, 99)
    const b = a.slice()
    await donor.sync(a)
    await joiner.sync(b)
    expect(b).toEqual(a)
    expect(() => { joiner.importState({ tensors: [], meta: { step: 0, epoch: 0 } }) }).toThrow(expect.objectContaining({ name: 'LayoutMismatchError' }))
  })

  it('works on a StateDict in place', async () => {
    const w: StateDict = createStateDict([
      { name: 'w', shape: [2, 2], dtype: 'float32', data: Float32Array.of(1, 2, 3, 4) },
      { name: 'b', shape: [2], dtype: 'float32', data: Float32Array.of(5, 6) }
    ])
    const o = createOuterOptimizer({ spec: { group: 'none', alpha: 0.5, momentum: 0, kind: 'heavy-ball', interval: 1 }, initial: new Float32Array(6) })
    o.start()
    open.push(o)
    const report = await o.sync(w)
    expect(report).toMatchObject({ mode: 'local', bytesSent: 0, rounds: 0 })
    expect(Array.from(w.tensors[0]?.data ?? [])).toEqual([0.5, 1, 1.5, 2])
    expect(Array.from(w.tensors[1]?.data ?? [])).toEqual([2.5, 3])
  })

  it('checks its collaborators, its lifecycle and sizes', async () => {
    expect(() => createOuterOptimizer({ spec: 'noloco', initial: new Float32Array(1) })).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
    expect(() => createOuterOptimizer({ spec: 'diloco', initial: new Float32Array(1) })).toThrow(expect.objectContaining({ name: 'InvalidParametersError' }))
    expect(() => createOuterOptimizer({ spec: { preset: 'noloco', alpha: 5 }, initial: new Float32Array(1) })).toThrow(expect.objectContaining({ name: 'InvalidConfigError' }))
    const o = createOuterOptimizer({ spec: 'none', initial: new Float32Array(2) })
    await expect(o.sync(new Float32Array(2))).rejects.toMatchObject({ name: 'ClosedError' })
    o.start()
    o.start()
    await expect(o.sync(new Float32Array(3))).rejects.toMatchObject({ name: 'LayoutMismatchError' })
    await o.stop()
    await o[Symbol.asyncDispose]()
    await expect(o.sync(new Float32Array(2))).rejects.toMatchObject({ name: 'ClosedError' })
  })
})
