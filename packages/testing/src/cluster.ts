/**
 * In-process cluster harness for the elastic core: a pure-JS linear-regression problem with
 * hand-written gradients (exactly reproducible, milliseconds per step), an SGD-with-momentum trainer
 * whose state (weights and optimiser slot) is a `StateDict`, and the canonical training loop over any
 * worker that yields steps shaped like `@phalanx/worker`'s. Tests compose it with a coordinator,
 * workers and a memory transport; no process or socket is involved.
 *
 * @module
 */
import { createStateDict, type StateDict, mulberry32 } from '@phalanx/core'

/** A synthetic regression dataset `y = x·w* + b* + noise`, generated from a seed. */
export interface LinearProblem {
  readonly samples: number
  readonly features: number
  /** Parameters: `features` weights then the bias. */
  readonly size: number
  /** Mean squared-error gradient over the given dataset indices, accumulated in float64. */
  gradient(params: Float32Array, indices: readonly number[]): Float32Array
  /** Mean squared error over the whole dataset. */
  loss(params: Float32Array): number
}


/** Creates a {@link LinearProblem}. */
export function createLinearProblem (init: { samples?: number, features?: number, seed?: number } = {}): LinearProblem {
  const samples = init.samples ?? 512
  const features = init.features ?? 16
  const r = mulberry32(init.seed ?? 1)
  const truth = Float64Array.from({ length: features + 1 }, () => r() * 2 - 1)
  const x = Float32Array.from({ length: samples * features }, () => r() * 2 - 1)
  const y = new Float32Array(samples)
  for (let i = 0; i < samples; i++) {
    let v = truth[features] as number
    for (let j = 0; j < features; j++) v += (truth[j] as number) * (x[i * features + j] as number)
    y[i] = v + (r() - 0.5) * 0.1
  }
  const predict = (p: Float32Array, i: number): number => {
    let v = p[features] as number
    for (let j = 0; j < features; j++) v += (p[j] as number) * (x[i * features + j] as number)
    return v
  }
  return {
    samples,
    features,
    size: features + 1,
    gradient (params, indices) {
      const g = new Float64Array(features + 1)
      for (const i of indices) {
        const e = predict(params, i) - (y[i] as number)
        for (let j = 0; j < features; j++) g[j] = (g[j] as number) + 2 * e * (x[i * features + j] as number)
        g[features] = (g[features] as number) + 2 * e
      }
      const out = new Float32Array(features + 1)
      for (let j = 0; j <= features; j++) out[j] = (g[j] as number) / Math.max(1, indices.length)
      return out
    },
    loss (params) {
      let s = 0
      for (let i = 0; i < samples; i++) s += (predict(params, i) - (y[i] as number)) ** 2
      return s / samples
    }
  }
}

/** Plain SGD with momentum on float32 parameters; its state is a `StateDict` (weights + momentum slot). */
export interface SgdTrainer {
  readonly params: Float32Array
  /** The committed state (views over the live arrays). */
  state(): StateDict
  /** Replaces parameters and slots from a healed state. */
  load(state: StateDict): void
  /** Applies an aggregated gradient. */
  apply(gradient: Float32Array): void
}

/** Creates an {@link SgdTrainer} for `size` parameters, initialised from `seed`. */
export function createSgdTrainer (init: { size: number, seed?: number, lr?: number, momentum?: number }): SgdTrainer {
  const r = mulberry32((init.seed ?? 7) * 31 + 3)
  const params = Float32Array.from({ length: init.size }, () => (r() - 0.5) * 0.1)
  const velocity = new Float32Array(init.size)
  const lr = Math.fround(init.lr ?? 0.05)
  const mu = Math.fround(init.momentum ?? 0.9)
  let meta: StateDict['meta'] = { step: 0, epoch: 0 }
  return {
    params,
    state: () => createStateDict([
      { name: 'w', shape: [init.size], dtype: 'float32', data: params },
      { name: 'opt/momentum', shape: [init.size], dtype: 'float32', data: velocity }
    ], meta),
    load (state) {
      const w = state.tensors.find((t) => t.name === 'w')
      const v = state.tensors.find((t) => t.name === 'opt/momentum')
      if (w === undefined || v === undefined) throw new Error('state lacks w or opt/momentum')
      params.set(w.data)
      velocity.set(v.data)
      meta = { ...state.meta }
    },
    apply (gradient) {
      for (let j = 0; j < params.length; j++) {
        velocity[j] = Math.fround(mu * (velocity[j] as number) + (gradient[j] as number))
        params[j] = Math.fround((params[j] as number) - lr * (velocity[j] as number))
      }
    }
  }
}

/** The shape of a step the loop drives (structurally `@phalanx/worker`'s `TrainingStep`). */
export interface StepLike {
  readonly step: number
  readonly epoch: number
  readonly microBatches: ReadonlyArray<{ readonly index: number, readonly start: number, readonly end: number }>
  readonly signal: AbortSignal
  reduce(gradients: readonly Float32Array[]): Promise<Float32Array>
  commit(): Promise<boolean>
}

/** Options of {@link trainLoop}. */
export interface TrainLoopOptions {
  /** Maps a global sample position to a dataset index (e.g. `createSampleOrder(...).indexOf`). */
  indexOf: (position: number) => number
  /** Called before the gradients are handed over: tests stall or crash workers here. */
  beforeReduce?: (step: StepLike) => Promise<void> | void
}

/** What a worker did in {@link trainLoop}. */
export interface TrainLoopResult {
  committed: number
  aborted: number
}

/** The canonical user loop: compute per-micro-batch gradients, reduce, apply on commit. */
export async function trainLoop (steps: AsyncIterable<StepLike>, problem: LinearProblem, trainer: SgdTrainer, options: TrainLoopOptions): Promise<TrainLoopResult> {
  const result: TrainLoopResult = { committed: 0, aborted: 0 }
  for await (const step of steps) {
    const grads = step.microBatches.map((mb) => {
      const idx: number[] = []
      for (let p = mb.start; p < mb.end; p++) idx.push(options.indexOf(p))
      return problem.gradient(trainer.params, idx)
    })
    let agg: Float32Array
    try {
      await options.beforeReduce?.(step)
      agg = await step.reduce(grads)
    } catch (err) {
      if ((err as Error).name === 'StepAbortedError') { result.aborted++; continue }
      throw err
    }
    if (await step.commit()) {
      trainer.apply(agg)
      result.committed++
    } else {
      result.aborted++
    }
  }
  return result
}

/**
 * The fault-free reference: trains `steps` steps of the same problem on one process, with the same
 * canonical reduction (per-micro-batch gradients summed in float64 in index order, divided by the
 * number of micro-batches). An elastic run in deterministic mode must end bit-identical to it.
 */
export function referenceRun (problem: LinearProblem, trainer: SgdTrainer, init: { steps: number, globalBatch: number, microBatch: number, indexOf: (position: number) => number }): void {
  const M = init.globalBatch / init.microBatch
  for (let s = 0; s < init.steps; s++) {
    const acc = new Float64Array(problem.size)
    for (let m = 0; m < M; m++) {
      const start = s * init.globalBatch + m * init.microBatch
      const idx: number[] = []
      for (let p = start; p < start + init.microBatch; p++) idx.push(init.indexOf(p))
      const g = problem.gradient(trainer.params, idx)
      for (let j = 0; j < acc.length; j++) acc[j] = (acc[j] as number) + (g[j] as number)
    }
    // Shard boundaries do not matter: every coordinate is reduced independently.
    const out = new Float32Array(problem.size)
    for (let j = 0; j < out.length; j++) out[j] = (acc[j] as number) / M
    trainer.apply(out)
  }
}
