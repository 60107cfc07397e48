/**
 * @packageDocumentation
 * The training-loop API of Phalanx's elastic data parallelism. A worker joins the coordinator,
 * yields the steps it must train (with the fixed, sample-indexed micro-batches assigned to it),
 * runs the sharded reduce of the gradients it is handed with its peers, and tells the user when a
 * step is committed everywhere. It heals itself from peers when it joins late or falls behind.
 * {@link train} is the high-level form: it drives a TensorFlow.js model and optimiser through
 * `@phalanx/tfjs` (gradients per micro-batch, update on commit, healing of weights and optimiser
 * slots). See docs/elastic.md.
 *
 * @example
 * ```ts
 * import { createWorker, createSampleOrder } from '@phalanx/worker'
 *
 * const worker = createWorker({ size: model.size, coordinatorAddress }, { endpoint, state: { get: () => model.state(), set: (s) => model.load(s) } })
 * await worker.start()
 * for await (const step of worker.steps()) {
 *   const grads = step.microBatches.map((mb) => model.gradient(order.range(mb.start, mb.end)))
 *   let agg
 *   try { agg = await step.reduce(grads) } catch (err) { if (err.name === 'StepAbortedError') continue; throw err }
 *   if (await step.commit()) model.apply(agg)
 * }
 * await worker.stop()
 * ```
 */
export {
  createWorker, workerInitFromConfig,
  type MicroBatch, type ReduceOptions, type SnapshotHooks, type StateHooks, type TrainingStep, type Worker, type WorkerComponents, type WorkerEvents, type WorkerInit, type WorkerStatus
} from './worker.js'
export { createSampleOrder, type SampleOrder } from './sample-order.js'
export {
  createTrainer, train,
  type EvaluateContext, type SampleDataset, type StepReport, type TrainComponents, type Trainer, type TrainerEvents, type TrainSpec, type TrainSummary
} from './train.js'
