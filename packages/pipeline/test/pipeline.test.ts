import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { stateDictsBitEqual } from '@phalanx/core'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { charCorpus, computeGradients, createTransformerLm, lmLoss, selectBackend, type CharCorpus, type SequenceBatch } from '@phalanx/tfjs'
import { createStageRegistry } from '@phalanx/coordinator'
import { createLocalPipeline, pipelineGraph, type LocalPipeline, type LocalPipelineInit } from '@phalanx/pipeline'

const TEXT = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(12)
const M = 4
const MB = 2
let corpus: CharCorpus
const started: LocalPipeline[] = []

const batchesOf = (onBatch?: (step: number, mb: number) => void) => (step: number, mb: number): SequenceBatch => {
  onBatch?.(step, mb)
  const first = ((step * M + mb) * MB) % (corpus.size - MB)
  return corpus.batch(Array.from({ length: MB }, (_, k) => first + k))
}

const lmInit = () => ({ vocab: corpus.vocab.length, dModel: 16, heads: 2, layers: 4, seqLen: 8, ffn: 32, seed: 7 })

async function pipeline (init: Partial<LocalPipelineInit> & { stages: number }, onBatch?: (step: number, mb: number) => void): Promise<LocalPipeline> {
  const p = await createLocalPipeline({ lm: { ...lmInit(), layers: init.stages === 6 ? 6 : 4 }, microBatches: M, lr: 1e-2, ...init },
    { transport: memoryTransport({ network: createMemoryNetwork() }), batches: batchesOf(onBatch), registry: createStageRegistry({ graph: pipelineGraph(init) }) })
  started.push(p)
  return p
}

beforeAll(async () => {
  await selectBackend({ prefer: 'cpu' })
  corpus = await charCorpus({ text: TEXT, seqLen: 8 })
})

afterEach(async () => {
  for (const p of started.splice(0)) await p.stop()
})

describe('pipeline gradients', () => {
  for (const schedule of ['gpipe', '1f1b'] as const) {
    it(`equal the unsplit model's gradients (${schedule})`, async () => {
      const p = await pipeline({ stages: 4, schedule, maxGradNorm: 1e9 })
      const report = await p.controller.trainStep()
      expect(report.losses.every(Number.isFinite)).toBe(true)
      const whole = createTransformerLm(lmInit())
      try {
        const all = Array.from({ length: M }, (_, mb) => batchesOf()(0, mb))
        const batch: SequenceBatch = { size: M * MB, seqLen: 8, inputs: Int32Array.from(all.flatMap((b) => [...b.inputs])), targets: Int32Array.from(all.flatMap((b) => [...b.targets])) }
        const ref = await computeGradients(whole, lmLoss, batch)
        const offsets = new Map<string, [number, number]>()
        let off = 0
        for (const q of whole.params) { offsets.set(q.name, [off, q.variable.size]); off += q.variable.size }
        expect(report.loss).toBeCloseTo(ref.loss, 4)
        let compared = 0
        for (const [w] of p.workers()) {
          const g = w?.lastGradient() as Float32Array
          let o = 0
          for (const q of w?.model.params ?? []) {
            const [start, size] = offsets.get(q.name) as [number, number]
            const expected = ref.grads.subarray(start, start + size)
            const got = g.subarray(o, o + size)
            let maxDiff = 0
            let maxAbs = 0
            for (let i = 0; i < size; i++) { maxDiff = Math.max(maxDiff, Math.abs((got[i] as number) - (expected[i] as number))); maxAbs = Math.max(maxAbs, Math.abs(expected[i] as number)) }
            expect(maxDiff).toBeLessThanOrEqual(1e-5 + 1e-3 * maxAbs)
            o += size
            compared++
          }
        }
        expect(compared).toBe(whole.params.length)
      } finally {
        whole.dispose()
      }
    })
  }

  it('GPipe and 1F1B give bit-identical training', async () => {
    const a = await pipeline({ stages: 4, schedule: 'gpipe', outOfOrder: true })
    const b = await pipeline({ stages: 4, schedule: '1f1b', outOfOrder: true })
    for (let i = 0; i < 2; i++) {
      const [ra, rb] = [await a.controller.trainStep(), await b.controller.trainStep()]
      expect(ra.losses).toEqual(rb.losses)
    }
    for (let s = 0; s < 4; s++) expect(stateDictsBitEqual(await a.workers()[s]![0]!.state(), await b.workers()[s]![0]!.state())).toBe(true)
  })
})

describe('stage recovery', () => {
  it('CheckFree averages an interior stage\'s neighbours by their clipped gradient norms, fresh optimiser at lr × 1.1', async () => {
    // lr = 0 keeps weights still, so the replacement's state can be compared after the replayed step.
    const p = await pipeline({ stages: 4, lr: 0, maxGradNorm: 1e9, controller: { recovery: { strategy: 'checkfree' } } })
    const first = await p.controller.trainStep()
    const [prev, next] = [p.workers()[1]![0]!, p.workers()[3]![0]!]
    const [wPrev, wNext] = [(await prev.state()).tensors, (await next.state()).tensors]
    expect(first.gradNorms[0]).not.toBeCloseTo(first.gradNorms[2] as number, 3)
    const lost: number[] = []
    p.controller.on('stage-lost', (e) => lost.push(e.stage))
    await p.kill(2)
    const report = await p.controller.trainStep()
    expect(lost).toEqual([2])
    expect(report.recoveries).toMatchObject([{ stage: 2, strategy: 'average', step: 1 }])
    const a = (first.gradNorms[3] as number) + 1e-4
    const b = (first.gradNorms[1] as number) + 1e-4
    const replacement = p.workers()[2]![0]!
    expect(replacement.lrScale).toBeCloseTo(1.1, 12)
    const got = (await replacement.state()).tensors
    const blockCount = replacement.model.groups.blocks.length
    for (let i = 0; i < blockCount; i++) {
      const g = got[i]!.data
      for (let k = 0; k < g.length; k += 7) {
        expect(g[k]).toBeCloseTo((a * wNext[i]!.data[k]! + b * wPrev[i]!.data[k]!) / (a + b), 5)
      }
    }
    expect(got.find((t) => t.name === 'adam/iter')?.data[0]).toBe(1)
  })

  it('CheckFree+ recovers the first and last stages by copying their neighbour and the embedding/head copy', async () => {
    const p = await pipeline({ stages: 4, lr: 0, outOfOrder: true, edgeReplicas: true, controller: { recovery: { strategy: 'checkfree-plus' } } })
    await p.controller.trainStep()
    const s0 = (await p.workers()[0]![0]!.state()).tensors
    const s1 = (await p.workers()[1]![0]!.state()).tensors
    const s3 = (await p.workers()[3]![0]!.state()).tensors
    const s2 = (await p.workers()[2]![0]!.state()).tensors
    await p.kill(0)
    await p.kill(3)
    const report = await p.controller.trainStep()
    expect(report.recoveries.map((r) => [r.stage, r.strategy])).toEqual([[0, 'copy'], [3, 'copy']])
    const r0 = (await p.workers()[0]![0]!.state()).tensors
    const r3 = (await p.workers()[3]![0]!.state()).tensors
    const named = (ts: typeof s0, prefix: string) => ts.filter((t) => t.name.startsWith(prefix)).map((t) => [...t.data])
    expect(named(r0, 'embed/')).toEqual(named(s0, 'embed/'))
    expect(named(r0, 'block')).toEqual(named(s1, 'block'))
    expect(named(r3, 'head/')).toEqual(named(s3, 'head/'))
    expect(named(r3, 'block')).toEqual(named(s2, 'block'))
  })

  it('copies a surviving data-parallel replica exactly and replays the interrupted step without losing a sample', async () => {
    const reference = await pipeline({ stages: 4, replicas: [1, 2, 1, 1] })
    const refReports = []
    for (let i = 0; i < 3; i++) refReports.push(await reference.controller.trainStep())
    let victim: LocalPipeline | undefined
    let killed = false
    // Crash stage 1 replica 0 while step 1 is in flight (stage 0 has started its micro-batch 2).
    const p = await pipeline({ stages: 4, replicas: [1, 2, 1, 1] }, (step, mb) => {
      if (step === 1 && mb === 2 && !killed && victim !== undefined) { killed = true; void victim.kill(1, 0) }
    })
    victim = p
    const reports = []
    for (let i = 0; i < 3; i++) reports.push(await p.controller.trainStep())
    expect(killed).toBe(true)
    expect(reports[1]?.recoveries).toMatchObject([{ stage: 1, strategy: 'replica-copy', step: 1 }])
    expect(reports[1]?.attempts).toBe(2)
    expect(p.controller.metrics()).toMatchObject({ stagesLost: 1, microBatchesReplayed: M, stepsCommitted: 3 })
    // Every micro-batch of every step counted exactly once: the losses and the weights equal the uninterrupted run's.
    expect(reports.map((r) => r.losses)).toEqual(refReports.map((r) => r.losses))
    const [a, b] = p.workers()[1]!
    expect(stateDictsBitEqual(await a!.state(), await b!.state())).toBe(true)
    for (let s = 0; s < 4; s++) expect(stateDictsBitEqual(await p.workers()[s]![0]!.state(), await reference.workers()[s]![0]!.state())).toBe(true)
  })

  it('rollback restores every stage from the last snapshot; random re-initialises', async () => {
    const p = await pipeline({ stages: 4, controller: { recovery: { strategy: 'rollback' }, snapshotEvery: 2 } })
    for (let i = 0; i < 3; i++) await p.controller.trainStep()
    await p.kill(2)
    const report = await p.controller.trainStep()
    expect(report).toMatchObject({ step: 2, recoveries: [{ strategy: 'rollback' }] })
    const q = await pipeline({ stages: 4, controller: { recovery: { strategy: 'random' } } })
    await q.controller.trainStep()
    await q.kill(1)
    expect((await q.controller.trainStep()).recoveries).toMatchObject([{ stage: 1, strategy: 'random' }])
  })
})
