/**
 * The step commit is atomic across stages: a stage replica lost in the commit window (after the
 * controller decided to commit, while the other stages apply) leaves no stage one step ahead.
 * The hook is the controller's `committing` event, emitted synchronously right before the commit
 * requests go out; `LocalPipeline.kill` closes the victim's endpoint synchronously, so the victim
 * never applies while every other replica does.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { stateDictsBitEqual } from '@phalanx/core'
import { createStageRegistry } from '@phalanx/coordinator'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { charCorpus, selectBackend, type CharCorpus, type SequenceBatch } from '@phalanx/tfjs'
import { createLocalPipeline, pipelineGraph, type AppliedEvent, type LocalPipeline, type LocalPipelineInit, type RevertedEvent } from '@phalanx/pipeline'

const TEXT = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(12)
const M = 4
const MB = 2
let corpus: CharCorpus
const started: LocalPipeline[] = []

const batches = (step: number, mb: number): SequenceBatch => {
  const first = ((step * M + mb) * MB) % (corpus.size - MB)
  return corpus.batch(Array.from({ length: MB }, (_, k) => first + k))
}

async function pipeline (init: Partial<LocalPipelineInit> & { stages: number }): Promise<LocalPipeline> {
  const p = await createLocalPipeline({ lm: { vocab: corpus.vocab.length, dModel: 16, heads: 2, layers: 4, seqLen: 8, ffn: 32, seed: 7 }, microBatches: M, lr: 1e-2, ...init },
    { transport: memoryTransport({ network: createMemoryNetwork() }), batches, registry: createStageRegistry({ graph: pipelineGraph(init) }) })
  started.push(p)
  return p
}

/** Kills replica `replica` of `stage` the moment the controller decides to commit step `step`. */
function killInCommitWindow (p: LocalPipeline, step: number, stage: number, replica: number): { fired: () => boolean } {
  let fired = false
  p.controller.on('committing', (e) => {
    if (e.step !== step || fired) return
    fired = true
    void p.kill(stage, replica)
  })
  return { fired: () => fired }
}

beforeAll(async () => {
  await selectBackend({ prefer: 'cpu' })
  corpus = await charCorpus({ text: TEXT, seqLen: 8 })
})

afterEach(async () => {
  for (const p of started.splice(0)) await p.stop()
})

describe('atomic step commit', () => {
  it('reverts the replicas that applied when a replica is lost mid-commit; the replay is exact', async () => {
    const reference = await pipeline({ stages: 4, replicas: [1, 2, 1, 1] })
    const refReports = []
    for (let i = 0; i < 3; i++) refReports.push(await reference.controller.trainStep())

    const p = await pipeline({ stages: 4, replicas: [1, 2, 1, 1] })
    const hook = killInCommitWindow(p, 1, 1, 0)
    const applied: Array<AppliedEvent & { stage: number, afterRevert: boolean }> = []
    const reverted: RevertedEvent[] = []
    for (const [stage, row] of p.workers().entries()) for (const w of row) w.on('applied', (e) => applied.push({ ...e, stage, afterRevert: reverted.length > 0 }))
    p.controller.on('reverted', (e) => reverted.push(e))
    const survivorIds = p.controller.members.flat().map((m) => m.id).filter((id) => id !== p.controller.members[1]?.[0]?.id)

    const reports = []
    for (let i = 0; i < 3; i++) reports.push(await p.controller.trainStep())
    expect(hook.fired()).toBe(true)
    // Every survivor had applied step 1 before the loss was noticed, was rolled back, and applied the replay.
    expect(applied.filter((e) => e.step === 1 && !e.afterRevert).map((e) => e.stage).sort()).toEqual([0, 1, 2, 3])
    expect(applied.filter((e) => e.step === 1 && e.afterRevert).map((e) => e.stage).sort()).toEqual([0, 1, 2, 3])
    expect(reverted).toEqual([{ step: 1, reverted: expect.arrayContaining(survivorIds) as unknown }])
    expect(reverted[0]?.reverted).toHaveLength(survivorIds.length)
    expect(reports[1]).toMatchObject({ step: 1, attempts: 2, recoveries: [{ stage: 1, strategy: 'replica-copy' }] })
    expect(p.controller.metrics()).toMatchObject({ commitsInterrupted: 1, replicasReverted: 4, stagesLost: 1, stepsCommitted: 3 })
    // All stages at the same step, with exactly the weights and optimiser state of the uninterrupted run.
    expect(p.workers().flat().map((w) => w.committed)).toEqual([3, 3, 3, 3, 3])
    expect(reports.map((r) => r.losses)).toEqual(refReports.map((r) => r.losses))
    for (let s = 0; s < 4; s++) {
      for (const w of p.workers()[s] ?? []) expect(stateDictsBitEqual(await w.state(), await reference.workers()[s]![0]!.state())).toBe(true)
    }
  })

  it('keeps every stage on one step when an interior stage without replicas is lost mid-commit (CheckFree)', async () => {
    const p = await pipeline({ stages: 4, outOfOrder: true, edgeReplicas: true, controller: { recovery: { strategy: 'checkfree-plus' } } })
    const hook = killInCommitWindow(p, 2, 2, 0)
    const reverted: RevertedEvent[] = []
    p.controller.on('reverted', (e) => reverted.push(e))
    const survivors = [0, 1, 3].map((s) => p.controller.members[s]?.[0]?.id)
    for (let i = 0; i < 4; i++) await p.controller.trainStep()
    expect(hook.fired()).toBe(true)
    expect([...(reverted[0]?.reverted ?? [])].sort()).toEqual([...survivors].sort())
    expect(p.controller.step).toBe(4)
    const workers = p.workers().flat()
    expect(workers.map((w) => w.committed)).toEqual([4, 4, 4, 4])
    // Survivors applied each of the 4 steps exactly once (a double-applied step would show as 5 Adam
    // iterations); the replacement started a fresh optimiser at step 2 and applied steps 2 and 3.
    const iters = await Promise.all(workers.map(async (w) => (await w.state()).tensors.find((t) => t.name === 'adam/iter')?.data[0]))
    expect(iters).toEqual([4, 4, 2, 4])
  })
})
