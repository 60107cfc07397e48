/**
 * Two data-parallel replicas per stage with NoLoCo's random pipeline routing: every micro-batch's
 * activations go to a step-seeded random replica of the next stage. Replicas step on their own
 * micro-batches and average their weights every 5 steps. Halfway through, a replica is crashed in
 * the commit window (after the controller decided to commit, while the others apply): the stages
 * that applied are reverted, the replica is copied from its survivor, and the step is replayed.
 *
 *   npx tsx examples/pipeline-routing.ts [steps]
 */
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { charCorpus, selectBackend, type SequenceBatch } from '@phalanx/tfjs'
import { createStageRegistry } from '@phalanx/coordinator'
import { createLocalPipeline, pipelineGraph, routeReplicas } from '@phalanx/pipeline'

const steps = Number(process.argv[2] ?? 30)
const backend = await selectBackend({ prefer: 'wasm' })
const corpus = await charCorpus({ seqLen: 16 })
const order = corpus.order(0)
const M = 4
const B = 8
const batches = (step: number, mb: number): SequenceBatch => {
  const first = ((step * M + mb) * B) % (corpus.size - B)
  return corpus.batch(order.subarray(first, first + B))
}

const registry = createStageRegistry({ graph: pipelineGraph({ stages: 4 }) })
registry.on('change', (c) => { if (c.kind === 'leave') process.stdout.write(`  registry: ${c.member.id} left stage ${c.stage} (${c.reason})\n`) })
const pipeline = await createLocalPipeline({
  lm: { vocab: corpus.vocab.length, dModel: 32, heads: 2, layers: 8, seqLen: 16, ffn: 128, seed: 1 },
  stages: 4,
  replicas: [2, 2, 2, 2],
  microBatches: M,
  lr: 3e-3,
  routing: 'random',
  routingSeed: 7,
  replicaSync: 'local',
  averageEvery: 5
}, { transport: memoryTransport({ network: createMemoryNetwork() }), batches, registry })

const crashAt = Math.floor(steps / 2)
let crashed = false
pipeline.controller.on('committing', (e) => {
  // Deterministic fault: the replica dies after every replica prepared, before any applied (once:
  // the replayed step emits `committing` again).
  if (e.step !== crashAt || crashed) return
  crashed = true
  void pipeline.kill(2, 0)
})
pipeline.controller.on('reverted', (e) => { process.stdout.write(`  step ${e.step}: ${e.reverted.length} replicas had applied it and were reverted\n`) })
pipeline.controller.on('recovered', (e) => { process.stdout.write(`  stage ${e.stage} recovered by ${e.strategy}, step ${e.step} replayed, loss ${e.lossAfter.toFixed(3)}\n`) })

process.stdout.write(`backend ${backend.name}; 4 stages x 2 replicas, ${M} micro-batches x ${B} sequences, random routing\n`)
process.stdout.write(`routing of step 0 (replica per stage, per micro-batch): ${JSON.stringify(routeReplicas({ routing: 'random', seed: 7, step: 0, replicas: [2, 2, 2, 2], microBatches: M }))}\n`)
try {
  for (let i = 0; i < steps; i++) {
    const r = await pipeline.controller.trainStep()
    if (r.step % 5 === 0 || r.recoveries.length > 0) process.stdout.write(`step ${r.step} loss ${r.loss.toFixed(3)}\n`)
  }
  const committed = pipeline.workers().flat().map((w) => w.committed)
  process.stdout.write(`every replica at step ${committed[0]}: ${committed.every((c) => c === committed[0])}\n`)
  process.stdout.write(`metrics ${JSON.stringify(pipeline.controller.metrics())}\n`)
} finally {
  await pipeline.stop()
}
