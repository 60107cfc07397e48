/**
 * Pipeline-parallel training of a character-level transformer with CheckFree+ recovery, in one
 * process over the in-memory transport: 4 stages × 2 blocks, out-of-order (swap) training with
 * embedding/head copies on the neighbours; stage 0 and then stage 2 (a swap partner of stage 3) are crashed,
 * and training continues from the recovered stages.
 *
 *   npx tsx examples/pipeline-basic.ts [steps]
 */
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { charCorpus, selectBackend, type SequenceBatch } from '@phalanx/tfjs'
import { createStageRegistry } from '@phalanx/coordinator'
import { createLocalPipeline, pipelineGraph } from '@phalanx/pipeline'

const steps = Number(process.argv[2] ?? 60)
const backend = await selectBackend({ prefer: 'wasm' })
const corpus = await charCorpus({ seqLen: 16 })
const order = corpus.order(0)
const M = 2
const B = 8
const batches = (step: number, mb: number): SequenceBatch => {
  const first = ((step * M + mb) * B) % (corpus.size - B)
  return corpus.batch(order.subarray(first, first + B))
}

const pipeline = await createLocalPipeline({
  lm: { vocab: corpus.vocab.length, dModel: 32, heads: 2, layers: 8, seqLen: 16, ffn: 128, seed: 1 },
  stages: 4,
  microBatches: M,
  schedule: '1f1b',
  outOfOrder: true,
  edgeReplicas: true,
  lr: 3e-3,
  controller: { recovery: { strategy: 'checkfree-plus', weighting: 'gradNorm', lrScale: 1.1 } }
}, {
  transport: memoryTransport({ network: createMemoryNetwork() }),
  batches,
  // Stage membership and the stage graph live in the coordinator's stage registry.
  registry: createStageRegistry({ graph: pipelineGraph({ stages: 4, outOfOrder: true }) })
})

pipeline.controller.on('stage-lost', (e) => { process.stdout.write(`  stage ${e.stage} lost (${e.peer}) during step ${e.step}\n`) })
pipeline.controller.on('recovered', (e) => {
  process.stdout.write(`  stage ${e.stage} recovered by ${e.strategy} in ${e.rebuildMs.toFixed(0)} ms, resumed after ${e.resumeMs.toFixed(0)} ms, loss ${e.lossAfter.toFixed(3)}\n`)
})

process.stdout.write(`backend ${backend.name}; 4 stages x 2 blocks, ${M} micro-batches x ${B} sequences\n`)
try {
  for (let i = 0; i < steps; i++) {
    if (i === Math.floor(steps / 3)) await pipeline.kill(0)
    if (i === Math.floor((2 * steps) / 3)) await pipeline.kill(2)
    const r = await pipeline.controller.trainStep()
    if (r.step % 10 === 0 || r.recoveries.length > 0) process.stdout.write(`step ${r.step} loss ${r.loss.toFixed(3)}\n`)
  }
  process.stdout.write(`metrics ${JSON.stringify(pipeline.controller.metrics())}\n`)
} finally {
  await pipeline.stop()
}
