/**
 * The built-in `linear` job: linear regression with momentum SGD on a synthetic, seeded dataset,
 * in pure JavaScript. It is exact and fast, so end-to-end tests and benchmarks use it to compare
 * final weights bit for bit: every micro-batch gradient is computed alone in float64 and rounded
 * once, the reduce sums them in micro-batch order, and the update is plain float32 arithmetic, so
 * the result does not depend on which worker computed what.
 *
 * Options (`--job-opt key=value`): `features` (8), `samples` (4096), `lr` (0.05), `momentum` (0.9),
 * `stepDelayMs` (0: simulated compute time per micro-batch, to make steps last long enough for
 * scheduled faults), `evaluateEvery` (10).
 *
 * @module
 */
import { InvalidConfigError, createStateDict, type PhalanxConfig, type StateDict } from '@phalanx/core'
import { createSampleOrder, type MicroBatch } from '@phalanx/worker'
import { runStepLoop, type GradientContext, type Job, type JobOptions, type StepTrainer } from './job.js'

/** Tunables of the linear job. */
export interface LinearJobInit {
  /**
   * Input features (the model has `features + 1` parameters with the bias).
   * @default 8
   */
  features?: number
  /**
   * Samples in the synthetic dataset.
   * @default 4096
   */
  samples?: number
  /**
   * Learning rate.
   * @default 0.05
   */
  lr?: number
  /**
   * Momentum of SGD (its buffer is part of the healed state).
   * @default 0.9
   */
  momentum?: number
  /**
   * Simulated compute time per micro-batch, in milliseconds.
   * @default 0
   */
  stepDelayMs?: number
  /**
   * Evaluate the full-dataset loss every this many steps.
   * @default 10
   */
  evaluateEvery?: number
  /**
   * Extra frozen state, in MiB, carried (and healed) with the model: a seeded random tensor that
   * is never trained, to exercise healing and checkpoints with large states.
   * @default 0
   */
  stateMiB?: number
}

/** The data and model of the linear job, usable without any transport (the reference run). */
export interface LinearModel extends StepTrainer {
  /** Parameters: `features` weights then the bias. */
  readonly w: Float32Array
  /** Momentum buffer. */
  readonly v: Float32Array
  /** Mean squared error over the whole dataset. */
  loss(): number
}

function lcg (seed: number): () => number {
  let s = (seed % 2147483646) + 1
  return () => { s = (s * 16807) % 2147483647; return s / 2147483647 - 0.5 }
}

function option (options: JobOptions, key: keyof LinearJobInit, fallback: number, check: (v: number) => boolean): number {
  const v = options[key]
  if (v === undefined) return fallback
  if (typeof v !== 'number' || !check(v)) throw new InvalidConfigError(`linear job option ${key}: invalid value ${JSON.stringify(v)}`)
  return v
}

/** Reads {@link LinearJobInit} from `--job-opt` values, rejecting wrong ones. */
export function linearInitFromOptions (options: JobOptions): Required<LinearJobInit> {
  const known = new Set(['features', 'samples', 'lr', 'momentum', 'stepDelayMs', 'evaluateEvery', 'stateMiB'])
  for (const k of Object.keys(options)) if (!known.has(k)) throw new InvalidConfigError(`linear job: unknown option "${k}" (known: ${[...known].join(', ')})`)
  const int = (v: number): boolean => Number.isInteger(v) && v >= 0
  return {
    features: option(options, 'features', 8, (v) => int(v) && v >= 1 && v <= 1 << 20),
    samples: option(options, 'samples', 4096, (v) => int(v) && v >= 1),
    lr: option(options, 'lr', 0.05, (v) => v > 0 && v < 10),
    momentum: option(options, 'momentum', 0.9, (v) => v >= 0 && v < 1),
    stepDelayMs: option(options, 'stepDelayMs', 0, (v) => v >= 0 && v <= 60_000),
    evaluateEvery: option(options, 'evaluateEvery', 10, int),
    stateMiB: option(options, 'stateMiB', 0, (v) => v >= 0 && v <= 4096)
  }
}

/** Creates the model and dataset of the linear job (deterministic in `config.job.seed`). */
export function createLinearModel (config: PhalanxConfig, init: LinearJobInit = {}): LinearModel {
  const features = init.features ?? 8
  const samples = init.samples ?? 4096
  const lr = Math.fround(init.lr ?? 0.05)
  const momentum = Math.fround(init.momentum ?? 0.9)
  const delayMs = init.stepDelayMs ?? 0
  const rand = lcg(config.job.seed + 1)
  const truth = Float64Array.from({ length: features + 1 }, () => rand() * 2)
  const xs = new Float64Array(samples * features)
  const ys = new Float64Array(samples)
  for (let i = 0; i < samples; i++) {
    let y = truth[features] as number
    for (let j = 0; j < features; j++) {
      const x = rand()
      xs[i * features + j] = x
      y += x * (truth[j] as number)
    }
    ys[i] = y + rand() * 0.01
  }
  const order = createSampleOrder({ seed: config.job.seed, size: samples })
  const w = new Float32Array(features + 1)
  const v = new Float32Array(features + 1)
  const size = features + 1
  const frozen = new Float32Array(Math.floor(((init.stateMiB ?? 0) * 1024 * 1024) / 4))
  const frand = lcg(config.job.seed + 2)
  for (let i = 0; i < frozen.length; i++) frozen[i] = frand()

  const residual = (i: number): number => {
    let e = w[features] as number
    for (let j = 0; j < features; j++) e += (xs[i * features + j] as number) * (w[j] as number)
    return e - (ys[i] as number)
  }
  const state = (): StateDict => createStateDict([
    { name: 'linear/w', shape: [size], dtype: 'float32', data: w },
    { name: 'sgd/momentum/linear/w', shape: [size], dtype: 'float32', data: v },
    ...(frozen.length === 0 ? [] : [{ name: 'frozen', shape: [frozen.length], dtype: 'float32' as const, data: frozen }])
  ])
  const busy = (ms: number): void => {
    // Simulated compute: a step must take time for faults scheduled at a step to land mid-run.
    const until = performance.now() + ms
    while (performance.now() < until) { /* spin */ }
  }

  return {
    size,
    w,
    v,
    state: {
      // Views, not copies: the worker flattens the state into its own snapshot at once.
      get: () => state(),
      set: (s) => {
        const byName = new Map(s.tensors.map((t) => [t.name, t.data]))
        w.set(byName.get('linear/w') ?? w)
        v.set(byName.get('sgd/momentum/linear/w') ?? v)
        const f = byName.get('frozen')
        if (f !== undefined && f.length === frozen.length) frozen.set(f)
      }
    },
    gradient (mb: MicroBatch, _step: number, context?: GradientContext) {
      if (delayMs > 0) busy(delayMs)
      const g = new Float64Array(size)
      const n = mb.end - mb.start
      // Label flipping on a regression: each target is class 1 (y ≥ 0) or 0; a target whose class
      // the hook changes is trained with its sign flipped (y → −y).
      let flipped: Int32Array | undefined
      let classes: Int32Array | undefined
      if (context?.labels !== undefined) {
        classes = new Int32Array(n)
        for (let p = mb.start; p < mb.end; p++) classes[p - mb.start] = (ys[order.indexOf(p)] as number) >= 0 ? 1 : 0
        flipped = context.labels(classes)
      }
      for (let p = mb.start; p < mb.end; p++) {
        const i = order.indexOf(p)
        const k = p - mb.start
        const r = flipped !== undefined && flipped[k] !== (classes as Int32Array)[k] ? residual(i) + 2 * (ys[i] as number) : residual(i)
        const e = (2 * r) / n
        for (let j = 0; j < features; j++) g[j] = (g[j] as number) + e * (xs[i * features + j] as number)
        g[features] = (g[features] as number) + e
      }
      return Float32Array.from(g)
    },
    apply (aggregate) {
      for (let j = 0; j < size; j++) {
        v[j] = Math.fround(Math.fround(momentum * (v[j] as number)) + (aggregate[j] as number))
        w[j] = Math.fround((w[j] as number) - Math.fround(lr * (v[j] as number)))
      }
    },
    loss () {
      let sum = 0
      for (let i = 0; i < samples; i++) sum += residual(i) ** 2
      return sum / samples
    },
    evaluate () {
      let sum = 0
      for (let i = 0; i < samples; i++) sum += residual(i) ** 2
      return { loss: sum / samples }
    }
  }
}

/**
 * Trains the linear job in one process without any transport: every step aggregates all
 * micro-batches in index order exactly as the elastic reduce does (float64 sum, one rounding).
 * Its final state is what every fault-tolerant run must reproduce bit for bit.
 */
export function referenceLinearRun (config: PhalanxConfig, init: LinearJobInit = {}): LinearModel {
  const model = createLinearModel(config, { ...init, stepDelayMs: 0 })
  const { globalBatch, microBatch, steps } = config.job
  const M = globalBatch / microBatch
  for (let s = 0; s < steps; s++) {
    const acc = new Float64Array(model.size)
    for (let m = 0; m < M; m++) {
      const start = s * globalBatch + m * microBatch
      const g = model.gradient({ index: m, start, end: start + microBatch }, s) as Float32Array
      for (let j = 0; j < g.length; j++) acc[j] = (acc[j] as number) + (g[j] as number)
    }
    const agg = new Float32Array(model.size)
    for (let j = 0; j < agg.length; j++) agg[j] = (acc[j] as number) / M
    void model.apply(agg, s)
  }
  return model
}

/** The `linear` job module: `createJob(config, options)`. */
export function createLinearJob (config: PhalanxConfig, options: JobOptions = {}): Job {
  const init = linearInitFromOptions(options)
  return {
    name: 'linear',
    async run (context, runOptions) {
      const model = createLinearModel(config, init)
      return await runStepLoop(context, model, { evaluateEvery: init.evaluateEvery }, runOptions)
    }
  }
}

export { createLinearJob as createJob }
