/**
 * @packageDocumentation
 * Pipeline-parallel training of the `@phalanx/tfjs` transformer LM with stage recovery.
 *
 * - **Stages**: {@link createStageModel} cuts the model into S stages with separable `embed`,
 *   `blocks` and `head` segments; {@link createStageWorker} runs one replica of a stage behind an
 *   `Endpoint`, sending activations forward and input gradients backward as tensor frames, with a
 *   per-stage Adam and per-stage gradient clipping.
 * - **Schedules**: {@link planSchedule} gives each executor its op order under GPipe or 1F1B,
 *   optionally with CheckFree+ out-of-order execution of odd micro-batches ({@link routeOf}).
 * - **Recovery**: {@link planRecovery} decides how a lost stage is rebuilt: exact copy from a
 *   data-parallel replica, CheckFree neighbour averaging, CheckFree+ edge copies, or the random
 *   re-init and rollback baselines. {@link createPipelineController} detects the loss, spawns a
 *   replacement, has it pull what it needs from its neighbours and replays the interrupted step.
 * - **Membership**: the controller records stage membership in an injected `StageRegistry`
 *   (contract in `@phalanx/core`, implementation `createStageRegistry` in `@phalanx/coordinator`),
 *   created with {@link pipelineGraph}.
 * - **Commit**: two-phase (prepare, decide, apply); a loss while applying reverts the stages that
 *   applied, so every stage is always at the same step.
 * - **Routing**: fixed, or NoLoCo's step-seeded random routing over data-parallel replicas
 *   ({@link routeReplicas}).
 * - **In one process**: {@link createLocalPipeline} wires all of it over any `Transport`.
 *
 * @example
 * ```ts
 * import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
 * import { charCorpus, selectBackend } from '@phalanx/tfjs'
 * import { createStageRegistry } from '@phalanx/coordinator'
 * import { createLocalPipeline, pipelineGraph } from '@phalanx/pipeline'
 *
 * await selectBackend({ prefer: 'wasm' })
 * const corpus = await charCorpus({ seqLen: 32 })
 * const order = corpus.order(0)
 * const batches = (step: number, mb: number) => corpus.batch(order.subarray((step * 4 + mb) * 8, (step * 4 + mb + 1) * 8))
 * const pipeline = await createLocalPipeline(
 *   { lm: { vocab: corpus.vocab.length, dModel: 32, heads: 2, layers: 4, seqLen: 32 }, stages: 4, microBatches: 4, outOfOrder: true, edgeReplicas: true },
 *   { transport: memoryTransport({ network: createMemoryNetwork() }), batches, registry: createStageRegistry({ graph: pipelineGraph({ stages: 4, outOfOrder: true }) }) })
 * const report = await pipeline.controller.trainStep()
 * await pipeline.kill(0)                                   // lose the first stage
 * const next = await pipeline.controller.trainStep()       // recovered by copy, step replayed
 * await pipeline.stop()
 * ```
 */
export * from './model.js'
export * from './schedule.js'
export * from './recovery.js'
export * from './protocol.js'
export * from './stage.js'
export * from './controller.js'
export * from './local.js'
