import {
  AbortError, ClosedError, InvalidParametersError, StepAbortedError, componentLogger, systemClock,
  type AbortOptions, type Aggregator, type Clock, type Endpoint, type Logger
} from '@phalanx/core'
import {
  applyGradients, asTfModel, computeGradients, extractState, loadState, tf,
  type LossFn, type ModelLike, type TfModel
} from '@phalanx/tfjs'
import { createSampleOrder } from './sample-order.js'
import { createWorker, type SnapshotHooks, type Worker, type WorkerEvents, type WorkerInit } from './worker.js'

/**
 * A sample-indexed dataset: sample `i` is the same on every worker, so a micro-batch's gradient
 * does not depend on which worker computed it. `mnistDataset` and `charCorpus` of `@phalanx/tfjs`
 * are such datasets.
 */
export interface SampleDataset<B> {
  /** Number of samples. */
  readonly size: number
  /**
   * The samples at `indices` as one batch, in that order. Plain typed arrays are kept as they are;
   * tf tensors directly in the returned object (or the object itself, when it is a tensor) are
   * disposed once the micro-batch's gradient is computed.
   */
  batch(indices: ArrayLike<number>): B
}

/** What {@link TrainSpec.evaluate} is given. */
export interface EvaluateContext {
  /** Committed steps the model holds. */
  step: number
  /** The model, as Phalanx sees it (`apply(x)` runs the forward pass). */
  model: TfModel
}

/** One committed step, as reported to {@link TrainSpec.onStep} and the `step` event. */
export interface StepReport {
  /** Step number (0-based); the model now holds `step + 1` committed steps. */
  step: number
  /** Membership epoch it committed in. */
  epoch: number
  /** Mean loss of the micro-batches this worker computed. */
  loss: number
  /** Mean loss over all micro-batches of the step (from the coordinator), when every member reported one. */
  globalLoss: number | undefined
  /** Micro-batches this worker computed. */
  microBatches: number
  /** Milliseconds spent on forward and backward passes. */
  computeMs: number
  /** Milliseconds from the step's start to its update being applied. */
  stepMs: number
  /** Result of {@link TrainSpec.evaluate}, on the steps it ran after. */
  evaluation: Record<string, number> | undefined
}

/** Subscribe-only events of a {@link Trainer}: the worker's events plus `step`. */
export interface TrainerEvents extends WorkerEvents {
  /** A step was committed and applied to the model. */
  step: (report: StepReport) => void
}

/** What to train and how; see {@link train}. */
export interface TrainSpec<B> {
  /** A `TfModel` of `@phalanx/tfjs` or a `tf.LayersModel`. Every worker must start from the same initial weights (same seed). */
  model: ModelLike
  /** A tf optimiser (sgd, momentum, adam, ...); its slots travel with the weights when a worker heals. */
  optimizer: tf.Optimizer
  /** The training data, addressed by sample index. */
  data: SampleDataset<B>
  /** Scalar loss of the model on one batch (e.g. `mnistLoss`). */
  loss: LossFn<B>
  /** Address of the coordinator's endpoint. */
  coordinatorAddress: string
  /**
   * Seed of the data order: position p of the global sample stream is sample `perm_k(p mod size)`.
   * Must be the same on every worker.
   * @default `worker.seed`, else 0
   */
  seed?: number
  /**
   * Leave the job gracefully once the model holds this many committed steps (others go on).
   * @default until the coordinator says the job is done
   */
  steps?: number
  /** Evaluates the model (e.g. test accuracy) at the end and every {@link evaluateEvery} steps. */
  evaluate?: (context: EvaluateContext) => Record<string, number> | Promise<Record<string, number>>
  /**
   * Run {@link evaluate} after every this many committed steps as well as at the end (0: at the end
   * only). Keep it well under the coordinator's hang deadline: peers wait for this worker meanwhile.
   * @default 0
   */
  evaluateEvery?: number
  /** Awaited after every committed step, before the next one starts. */
  onStep?: (report: StepReport) => void | Promise<void>
  /** Listeners subscribed before the worker joins (the same as calling `on` on a {@link Trainer}). */
  on?: { [E in keyof TrainerEvents]?: TrainerEvents[E] }
  /**
   * Tunables of the underlying worker (heartbeats, timeouts, heal chunking); `size` is the model's
   * parameter count, and `coordinatorAddress` the one above.
   * @default {}
   */
  worker?: Partial<Omit<WorkerInit, 'size' | 'coordinatorAddress'>>
}

/** Collaborators of {@link train} and {@link createTrainer}. */
export interface TrainComponents {
  /** This worker's open endpoint (its id is the worker id). The caller closes it. */
  endpoint: Endpoint
  /** Robust aggregation rule for the shard this worker owns; absent = the mean. */
  aggregator?: Aggregator
  /**
   * Local snapshots at step boundaries, restored on a restart instead of healing from peers
   * (capture with `pinState(model, optimizer, meta)` of `@phalanx/tfjs` into a snapshotter).
   */
  snapshots?: SnapshotHooks
  /** @default systemClock() */
  clock?: Clock
  /** @default silent */
  logger?: Logger
}

/** What a training run did, on this worker. */
export interface TrainSummary {
  /** Committed steps the model holds at the end. */
  committed: number
  /** Steps this worker computed, saw committed and applied. */
  trained: number
  /** Steps it computed that were dropped (epoch change, peer failure) and retried. */
  aborted: number
  /** Times its state was pulled from peers (late join, falling behind). */
  heals: number
  /** Membership changes seen after its first quorum. */
  recoveries: number
  /** Loss of the last committed step: the global mean when the coordinator reported it, else this worker's mean. */
  loss: number | undefined
  /** The last result of {@link TrainSpec.evaluate}. */
  evaluation: Record<string, number> | undefined
  /** True when the job trained all its steps; false when this worker left or was stopped first. */
  done: boolean
  /** Wall-clock milliseconds of the run. */
  ms: number
}

/** A training run that can be observed and stopped; {@link train} is its one-call form. */
export interface Trainer extends AsyncDisposable {
  /** The underlying elastic worker. */
  readonly worker: Worker
  /**
   * Joins the job and trains until it is done, {@link TrainSpec.steps} are reached, or `stop()` is
   * called (each resolves with the summary). Healing, retried steps and rescheduling happen inside.
   * @throws `AbortError` when `options.signal` fires; any error of the model, loss or data
   */
  run(options?: AbortOptions): Promise<TrainSummary>
  /** Stops training at once (the step in flight is dropped) and stops the worker. Idempotent. */
  stop(options?: AbortOptions): Promise<void>
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof TrainerEvents>(event: E, listener: TrainerEvents[E]): () => void
}

function disposeBatch (batch: unknown): void {
  if (batch instanceof tf.Tensor) { batch.dispose(); return }
  if (typeof batch !== 'object' || batch === null) return
  // Only top-level tensors: walking typed arrays element by element (as tf.dispose would) is slow.
  for (const v of Object.values(batch)) if (v instanceof tf.Tensor) v.dispose()
}

function isStepAbort (err: unknown): boolean {
  const name = (err as Error | undefined)?.name
  return name === StepAbortedError.name || name === AbortError.name
}

/**
 * Creates a {@link Trainer}: an elastic worker driving `spec.model` with `spec.optimizer`. Nothing
 * runs until `run()`.
 */
export function createTrainer<B> (spec: TrainSpec<B>, components: TrainComponents): Trainer {
  const model = asTfModel(spec.model)
  const { optimizer, data } = spec
  const clock = components.clock ?? systemClock()
  const log = componentLogger(components.logger, 'train').child({ worker: components.endpoint.id })
  let size = 0
  for (const p of model.params) size += p.variable.size
  if (size === 0) throw new InvalidParametersError('The model has no trainable parameters')
  if (!Number.isInteger(data.size) || data.size < 1) throw new InvalidParametersError(`The dataset must have at least one sample, has ${data.size}`)
  const evaluateEvery = spec.evaluateEvery ?? 0
  if (!Number.isInteger(evaluateEvery) || evaluateEvery < 0) throw new InvalidParametersError(`evaluateEvery must be a non-negative integer, got ${evaluateEvery}`)
  if (spec.steps !== undefined && (!Number.isInteger(spec.steps) || spec.steps < 1)) throw new InvalidParametersError(`steps must be a positive integer, got ${spec.steps}`)
  const seed = spec.seed ?? spec.worker?.seed ?? 0
  const order = createSampleOrder({ seed, size: data.size })

  const worker = createWorker({ ...spec.worker, size, coordinatorAddress: spec.coordinatorAddress }, {
    endpoint: components.endpoint,
    state: {
      get: async () => await extractState(model, optimizer, { meta: { step: worker.status().committed, epoch: worker.status().epoch } }),
      set: (state) => { loadState(model, optimizer, state) }
    },
    ...(components.aggregator === undefined ? {} : { aggregator: components.aggregator }),
    ...(components.snapshots === undefined ? {} : { snapshots: components.snapshots }),
    clock,
    ...(components.logger === undefined ? {} : { logger: components.logger })
  })

  const stepListeners = new Set<TrainerEvents['step']>()
  const emitStep = (report: StepReport): void => {
    for (const l of stepListeners) {
      try { l(report) } catch (err) { log.error({ err }, 'step listener threw') }
    }
  }
  const on = <E extends keyof TrainerEvents>(event: E, listener: TrainerEvents[E]): (() => void) => {
    if (event === 'step') {
      const l = listener as TrainerEvents['step']
      stepListeners.add(l)
      return () => { stepListeners.delete(l) }
    }
    return worker.on(event as keyof WorkerEvents, listener as never)
  }
  for (const [event, listener] of Object.entries(spec.on ?? {})) {
    if (listener !== undefined) on(event as keyof TrainerEvents, listener as never)
  }

  let stopping = false
  let running: Promise<TrainSummary> | undefined
  // Gradient buffers reused across steps: reduce() sends views of them, and they are free again once it settles.
  const buffers: Float32Array[] = []

  const evaluate = async (): Promise<Record<string, number> | undefined> =>
    spec.evaluate === undefined ? undefined : await spec.evaluate({ step: worker.status().committed, model })

  const loop = async (options: AbortOptions): Promise<TrainSummary> => {
    const t0 = clock.now()
    const summary: TrainSummary = { committed: 0, trained: 0, aborted: 0, heals: 0, recoveries: 0, loss: undefined, evaluation: undefined, done: false, ms: 0 }
    let lastLoss: { step: number, loss: number } | undefined
    let firstEpoch = true
    const offs = [
      worker.on('heal', () => { summary.heals++ }),
      worker.on('epoch', (e) => { if (e.rank >= 0 && e.active) { if (firstEpoch) firstEpoch = false; else summary.recoveries++ } }),
      worker.on('commit', (e) => { if (e.loss !== undefined) lastLoss = { step: e.step, loss: e.loss } })
    ]
    const onAbort = (): void => { void worker.stop() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    let left = false
    try {
      await worker.start()
      for await (const step of worker.steps()) {
        const started = clock.now()
        let agg: Float32Array
        let localLoss = 0
        let computeMs = 0
        try {
          const grads: Float32Array[] = []
          for (const [i, mb] of step.microBatches.entries()) {
            let out = buffers[i]
            if (out === undefined) { out = new Float32Array(size); buffers[i] = out }
            const batch = data.batch(order.range(mb.start, mb.end))
            try {
              const r = await computeGradients(model, spec.loss, batch, { out, signal: step.signal })
              localLoss += r.loss
            } finally { disposeBatch(batch) }
            grads.push(out)
          }
          localLoss /= Math.max(1, step.microBatches.length)
          computeMs = clock.now() - started
          agg = await step.reduce(grads, { loss: localLoss })
        } catch (err) {
          if (stopping || options.signal?.aborted === true) break
          if (step.signal.aborted || isStepAbort(err)) {
            summary.aborted++
            log.debug({ step: step.step, epoch: step.epoch, err: (err as Error).name }, 'step dropped; it will be retried')
            continue
          }
          throw err
        }
        if (!await step.commit()) { summary.aborted++; continue }
        applyGradients(model, optimizer, agg)
        summary.trained++
        const committed = step.step + 1
        const globalLoss = lastLoss?.step === step.step ? lastLoss.loss : undefined
        summary.loss = globalLoss ?? localLoss
        const evaluation = evaluateEvery > 0 && committed % evaluateEvery === 0 ? await evaluate() : undefined
        if (evaluation !== undefined) summary.evaluation = evaluation
        const report: StepReport = {
          step: step.step, epoch: step.epoch, loss: localLoss, globalLoss, microBatches: step.microBatches.length,
          computeMs, stepMs: clock.now() - started, evaluation
        }
        await spec.onStep?.(report)
        emitStep(report)
        if (spec.steps !== undefined && committed >= spec.steps && !worker.status().done) {
          log.info({ committed }, 'reached the requested steps; leaving the job')
          left = true
          await worker.leave()
          break
        }
      }
      if (options.signal?.aborted === true) throw new AbortError(undefined, { cause: options.signal.reason })
      summary.done = !stopping && !left && worker.status().done
      if (!stopping) {
        const evaluation = await evaluate()
        if (evaluation !== undefined) summary.evaluation = evaluation
      }
    } catch (err) {
      if (options.signal?.aborted === true) throw new AbortError(undefined, { cause: options.signal.reason })
      // stop() makes the worker's step stream end with ClosedError: that is the requested outcome.
      if (!(stopping && (err as Error).name === ClosedError.name)) throw err
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      for (const off of offs) off()
      await worker.stop()
      summary.committed = worker.status().committed
      summary.ms = clock.now() - t0
    }
    log.info({ ...summary, evaluation: undefined }, 'training finished')
    return summary
  }

  const trainer: Trainer = {
    worker,
    async run (options = {}) {
      if (options.signal?.aborted === true) throw new AbortError(undefined, { cause: options.signal.reason })
      if (running !== undefined) throw new InvalidParametersError('run() was already called on this trainer')
      running = loop(options)
      return await running
    },
    async stop () {
      stopping = true
      await worker.stop()
      await running?.catch(() => undefined)
    },
    on,
    async [Symbol.asyncDispose] () { await trainer.stop() }
  }
  return trainer
}

/**
 * Trains `spec.model` as one worker of an elastic data-parallel job: joins the coordinator at
 * `spec.coordinatorAddress`, computes one gradient per assigned micro-batch (each micro-batch's
 * samples come from the seeded global order, the same on every worker), aggregates them with its
 * peers, and applies the aggregate with `spec.optimizer` when the step is committed everywhere.
 * Crashes, hangs, joins and departures of other workers only show as events; a worker that falls
 * behind heals (weights and optimiser slots) from its peers. In deterministic mode the final
 * weights are bit-identical whatever the number of workers and failures.
 *
 * @example
 * ```ts
 * const summary = await train({ model, optimizer, data, loss: mnistLoss, coordinatorAddress }, { endpoint })
 * ```
 */
export async function train<B> (spec: TrainSpec<B>, components: TrainComponents, options: AbortOptions = {}): Promise<TrainSummary> {
  const trainer = createTrainer(spec, components)
  try {
    return await trainer.run(options)
  } finally {
    await trainer.stop()
  }
}
