/**
 * The job contract: what a `phalanx worker` process runs.
 *
 * A job module (a built-in name such as `linear`, or a path to an ES module) exports
 * `createJob(config, context)` returning a {@link Job}. The worker process composes the transport,
 * the logger and the coordinator address into a {@link JobRunContext} and calls {@link Job.run}
 * once; the job trains until the coordinator says the job is done and returns its final state.
 *
 * Most jobs do not write the step loop themselves: {@link runStepLoop} drives `createWorker` from
 * `@phalanx/worker` for any {@link StepTrainer} (one mean gradient per micro-batch, an update per
 * committed step), which is how the built-in `linear` job works.
 *
 * @module
 */
import {
  InvalidParametersError, StepAbortedError, bytesOf, crc32c, flattenStateDict,
  createStateDict,
  type AbortOptions, type Aggregator, type Clock, type Endpoint, type Logger, type PhalanxConfig, type PinnedState, type StateDict, type StateMeta
} from '@phalanx/core'
import { pinStateDict } from '@phalanx/checkpoint'
import { createWorker, workerInitFromConfig, type MicroBatch, type SnapshotHooks, type StateHooks, type Worker } from '@phalanx/worker'

/** What a job reports as it trains; the launcher shows it in its progress line and summary. */
export interface JobProgress {
  /** Committed steps so far. */
  step: number
  /** Training loss, when the job computed one at this step. */
  loss?: number
  /** Held-out accuracy in [0, 1], when the job evaluated one. */
  accuracy?: number
}

/** Everything a job gets from the worker process that runs it. */
export interface JobRunContext {
  /** The resolved configuration. */
  config: PhalanxConfig
  /** This worker's id (also its endpoint id). */
  workerId: string
  /** The worker's open endpoint (the process closes it after `run` returns). */
  endpoint: Endpoint
  /** Address of the coordinator's endpoint. */
  coordinatorAddress: string
  /** The reduce's aggregation rule, made from `config.aggregator`; absent = the mean. */
  aggregator?: Aggregator
  /**
   * Local snapshots to the host's snapshot holder, when the process has one: call it with a
   * function that pins the job's committed state (`pinState` for tf models, `pinStateDict` for a
   * plain state) and hand the hooks to the worker.
   */
  snapshots?: (pin: (meta: StateMeta) => PinnedState) => SnapshotHooks
  /** The process logger (pino). */
  logger: Logger
  /** Fires when the process is asked to stop (SIGTERM, SIGINT, launcher gone). */
  signal: AbortSignal
  /** Reports progress (throttle it: at most a few times per second is useful). */
  report: (progress: JobProgress) => void
  /** Called with the worker once it exists, so the process can subscribe to its events. */
  onWorker?: (worker: Worker) => void
  /**
   * The process clock (a skewed one under `phalanx chaos`).
   * @default the system clock
   */
  clock?: Clock
  /**
   * Replaces the micro-batch gradients this worker reports before the reduce (a Byzantine worker
   * under `phalanx chaos`); returns as many arrays, of the same lengths.
   * @default identity
   */
  gradientHook?: (gradients: readonly Float32Array[], step: number) => Float32Array[]
  /**
   * Maps the class labels a micro-batch is trained on (label flipping under `phalanx chaos`).
   * @default identity
   */
  labelHook?: (labels: ArrayLike<number>, step: number) => Int32Array
}

/** What {@link runStepLoop} hands a trainer with each micro-batch. */
export interface GradientContext {
  /**
   * Maps the micro-batch's class labels to those to train on (label flipping); absent = identity.
   * A trainer without class labels may map its targets onto classes to honour it (the linear job
   * flips the sign of a target whose class changed).
   */
  labels?: (labels: ArrayLike<number>) => Int32Array
}

/** What a finished job returns: its final state and last metrics. */
export interface JobResult {
  /** Committed steps. */
  steps: number
  /** The final committed state (parameters and optimiser slots). */
  state: StateDict
  /** Final training loss, when known. */
  loss?: number
  /** Final held-out accuracy, when known. */
  accuracy?: number
}

/** A job as a worker process runs it. */
export interface Job {
  /** Short name, for logs. */
  readonly name: string
  /** Trains this worker's part of the job until the coordinator says it is done. */
  run(context: JobRunContext, options?: AbortOptions): Promise<JobResult>
  /** Releases what the job holds (models, datasets). Optional. */
  dispose?(): Promise<void> | void
}

/** Options a job receives from `--job-opt key=value` flags (values parsed as JSON when they can be). */
export type JobOptions = Readonly<Record<string, unknown>>

/** What a job module exports. */
export interface JobModule {
  createJob(config: PhalanxConfig, options: JobOptions): Job | Promise<Job>
}

/**
 * A synchronous-data-parallel trainer driven by {@link runStepLoop}: it computes one mean gradient
 * per micro-batch and applies the aggregated gradient when a step commits. Its state hooks serve
 * and receive healing, so a late joiner starts from its peers' committed state.
 */
export interface StepTrainer {
  /** Length of the flat gradient (the trainable parameters, first in `state.get()` order). */
  readonly size: number
  /** Committed state for healing (parameters and optimiser slots). */
  readonly state: StateHooks
  /** Mean gradient of the samples of global positions `[mb.start, mb.end)`. */
  gradient(mb: MicroBatch, step: number, context?: GradientContext): Float32Array | Promise<Float32Array>
  /** Applies the aggregated gradient of committed step `step`. */
  apply(aggregate: Float32Array, step: number): void | Promise<void>
  /** Loss (and accuracy) of the current state, for progress reports. Optional. */
  evaluate?(): { loss: number, accuracy?: number } | Promise<{ loss: number, accuracy?: number }>
}

/** Tunables of {@link runStepLoop}. */
export interface StepLoopInit {
  /**
   * Evaluate and report every this many committed steps (0 = only at the end).
   * @default 10
   */
  evaluateEvery?: number
}

/**
 * Runs a {@link StepTrainer} as an elastic worker until the job is done: join, compute the assigned
 * micro-batches, reduce, apply on commit; an aborted step (membership change) is simply retried
 * with the micro-batches of the next epoch.
 */
export async function runStepLoop (context: JobRunContext, trainer: StepTrainer, init: StepLoopInit = {}, options: AbortOptions = {}): Promise<JobResult> {
  const evaluateEvery = init.evaluateEvery ?? 10
  const signal = options.signal === undefined ? context.signal : AbortSignal.any([context.signal, options.signal])
  const worker = createWorker(
    workerInitFromConfig(context.config, { size: trainer.size, coordinatorAddress: context.coordinatorAddress }),
    {
      endpoint: context.endpoint, state: trainer.state, logger: context.logger,
      ...(context.clock === undefined ? {} : { clock: context.clock }),
      ...(context.aggregator === undefined ? {} : { aggregator: context.aggregator }),
      ...(context.snapshots === undefined
        ? {}
        : {
            snapshots: context.snapshots((meta) => {
              const st = trainer.state.get()
              // The hook must not wait: a trainer whose state is only available asynchronously is not snapshotted.
              if (st instanceof Promise) throw new InvalidParametersError('state.get() must be synchronous for snapshots')
              return pinStateDict(createStateDict(st.tensors, meta))
            })
          })
    }
  )
  context.onWorker?.(worker)
  let steps = 0
  let last: { loss: number, accuracy?: number } | undefined
  await worker.start()
  try {
    for await (const step of worker.steps({ signal })) {
      let grads: Float32Array[] = []
      const labelHook = context.labelHook
      const gctx: GradientContext | undefined = labelHook === undefined ? undefined : { labels: (l) => labelHook(l, step.step) }
      for (const mb of step.microBatches) grads.push(await trainer.gradient(mb, step.step, gctx))
      if (context.gradientHook !== undefined && grads.length > 0) grads = context.gradientHook(grads, step.step)
      let aggregate: Float32Array
      try {
        aggregate = await step.reduce(grads)
      } catch (err) {
        if ((err as Error).name === StepAbortedError.name) continue
        throw err
      }
      if (!await step.commit({ signal })) continue
      await trainer.apply(aggregate, step.step)
      steps = step.step + 1
      if (trainer.evaluate !== undefined && evaluateEvery > 0 && steps % evaluateEvery === 0) {
        last = await trainer.evaluate()
        context.report({ step: steps, ...last })
      } else {
        context.report({ step: steps })
      }
    }
    steps = Math.max(steps, worker.status().committed)
    if (trainer.evaluate !== undefined) last = await trainer.evaluate()
    return { steps, state: await trainer.state.get(), ...(last === undefined ? {} : last) }
  } finally {
    await worker.stop()
  }
}

/** CRC-32C of a state's flat bytes: equal checksums mean bit-identical states. */
export function stateChecksum (state: StateDict): number {
  return crc32c(bytesOf(flattenStateDict(state)))
}
