/**
 * Per-step framework overhead of the high-level `train()` API: one Phalanx worker plus its
 * coordinator (in-process, over the memory transport and over ZeroMQ tcp on loopback) against the
 * same plain TensorFlow.js loop, on the same model and batch, in the same run. The model is sized so
 * that a plain step takes about 200 ms on this machine (calibrated at start).
 *
 * `measureOverhead()` is imported by bench/suites/elastic.ts; run this file alone to print the
 * metrics: `node --import tsx bench/lib/elastic-overhead.ts`.
 */
import { pathToFileURL } from 'node:url'
import type { Endpoint, Transport } from '@phalanx/core'
import { createCoordinator } from '@phalanx/coordinator'
import {
  applyGradients, computeGradients, createMnistMlp, mnistDataset, mnistLoss, selectBackend, tf, type MnistDataset, type TfModel
} from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createTrainer } from '@phalanx/worker'
import { median, progress, type Metric } from '../report.js'

/** Tunables of {@link measureOverhead}. */
export interface OverheadInit {
  /** Plain step time to size the model for, ms. @default 200 */
  targetStepMs?: number
  /**
   * Samples per step (one micro-batch: the worker computes what the plain loop computes). The
   * framework's per-step work (copies, float64 reduce, CRC32C of the aggregate) grows with the
   * parameter count and not with the batch, so the ratio shrinks as the batch grows.
   * @default 1024
   */
  batch?: number
  /** Timed steps per run (after {@link warmup}). @default 12 */
  steps?: number
  /** Untimed steps at the start of each run. @default 2 */
  warmup?: number
  /** Rounds of (plain, memory, zmq), interleaved so drifting machine load hits all alike. @default 2 */
  rounds?: number
  /** Include the ZeroMQ tcp variant. @default true */
  zmq?: boolean
}

const SEED = 7

function modelOf (hidden: number): { model: TfModel, optimizer: tf.Optimizer } {
  return { model: createMnistMlp({ hidden, seed: SEED }), optimizer: tf.train.adam(1e-3) }
}

/** Step durations of the plain loop: batch, forward + backward to flat gradients, optimiser update. */
async function plainRun (data: MnistDataset, hidden: number, batch: number, steps: number, warmup: number): Promise<number[]> {
  const { model, optimizer } = modelOf(hidden)
  const order = createSampleOrder({ seed: SEED, size: data.size })
  const out = new Float32Array(model.params.reduce((n, p) => n + p.variable.size, 0))
  const times: number[] = []
  try {
    for (let s = 0; s < warmup + steps; s++) {
      const t0 = performance.now()
      const { grads } = await computeGradients(model, mnistLoss, data.batch(order.range(s * batch, (s + 1) * batch)), { out })
      applyGradients(model, optimizer, grads)
      if (s >= warmup) times.push(performance.now() - t0)
    }
  } finally {
    model.dispose()
    optimizer.dispose()
  }
  return times
}

/** The same loop as tf users often write it: `optimizer.minimize` (gradients never leave the backend). */
async function minimizeRun (data: MnistDataset, hidden: number, batch: number, steps: number, warmup: number): Promise<number[]> {
  const { model, optimizer } = modelOf(hidden)
  const order = createSampleOrder({ seed: SEED, size: data.size })
  const vars = model.params.map((p) => p.variable)
  const times: number[] = []
  try {
    for (let s = 0; s < warmup + steps; s++) {
      const t0 = performance.now()
      const b = data.batch(order.range(s * batch, (s + 1) * batch))
      const loss = optimizer.minimize(() => mnistLoss(model, b), true, vars)
      await loss?.data()
      loss?.dispose()
      if (s >= warmup) times.push(performance.now() - t0)
    }
  } finally {
    model.dispose()
    optimizer.dispose()
  }
  return times
}

/** Step durations (commit to commit, as user code sees them) of one worker + coordinator on `transport`. */
async function phalanxRun (transport: Transport, listen: (id: string) => string | undefined, data: MnistDataset, hidden: number, batch: number, steps: number, warmup: number): Promise<number[]> {
  const { model, optimizer } = modelOf(hidden)
  const endpoints: Endpoint[] = []
  const open = async (id: string): Promise<Endpoint> => {
    const address = listen(id)
    const e = await transport.open({ id, job: 'overhead', ...(address === undefined ? {} : { listen: address }) })
    endpoints.push(e)
    return e
  }
  const coordinatorEndpoint = await open('coordinator')
  const coordinator = createCoordinator({
    jobId: 'overhead', minWorkers: 1, maxWorkers: 1, globalBatch: batch, microBatch: batch, steps: warmup + steps + 1, deterministic: true,
    heartbeatIntervalMs: 100, suspectAfterMs: 1000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000
  }, { endpoint: coordinatorEndpoint })
  const stamps: number[] = []
  try {
    await coordinator.start()
    const endpoint = await open('worker-1')
    const trainer = createTrainer({
      model, optimizer, data, loss: mnistLoss, seed: SEED, coordinatorAddress: coordinatorEndpoint.address,
      worker: { heartbeatIntervalMs: 100, suspectAfterMs: 1000 },
      onStep: () => { stamps.push(performance.now()) }
    }, { endpoint })
    await trainer.run()
  } finally {
    await coordinator.stop()
    for (const e of endpoints) await e.close()
    model.dispose()
    optimizer.dispose()
  }
  const times: number[] = []
  for (let i = warmup + 1; i < stamps.length; i++) times.push((stamps[i] as number) - (stamps[i - 1] as number))
  return times
}

/** Picks the hidden width whose plain step takes about `targetMs`. */
async function calibrate (data: MnistDataset, batch: number, targetMs: number): Promise<{ hidden: number, ms: number }> {
  let hidden = 256
  let ms = median(await plainRun(data, hidden, batch, 3, 1))
  for (let i = 0; i < 3 && Math.abs(ms - targetMs) / targetMs > 0.15; i++) {
    hidden = Math.max(16, Math.round(hidden * targetMs / ms))
    ms = median(await plainRun(data, hidden, batch, 3, 1))
  }
  return { hidden, ms }
}

/**
 * Measures the per-step overhead of `train()` with one worker against the plain loop.
 * `step_overhead_ratio` = median Phalanx step / median plain step − 1 (memory transport).
 */
export async function measureOverhead (init: OverheadInit = {}): Promise<Record<string, Metric>> {
  const batch = init.batch ?? 1024
  const steps = init.steps ?? 12
  const warmup = init.warmup ?? 2
  const rounds = init.rounds ?? 2
  const withZmq = init.zmq ?? true
  const backend = await selectBackend({ prefer: 'wasm' })
  const data = await mnistDataset({ split: 'train', seed: SEED })
  const { hidden, ms: calibratedMs } = await calibrate(data, batch, init.targetStepMs ?? 200)
  progress(`elastic-overhead: backend ${backend.name}, MLP 784-${hidden}-10, batch ${batch}, plain step ~${calibratedMs.toFixed(0)} ms`)
  const zmqTransport = withZmq ? (await import('@phalanx/transport/zmq')).zmqTransport() : undefined
  const plain: number[] = []
  const minimize: number[] = []
  const memory: number[] = []
  const zmq: number[] = []
  for (let r = 0; r < rounds; r++) {
    plain.push(...await plainRun(data, hidden, batch, steps, warmup))
    minimize.push(...await minimizeRun(data, hidden, batch, steps, warmup))
    memory.push(...await phalanxRun(memoryTransport({ network: createMemoryNetwork() }), () => undefined, data, hidden, batch, steps, warmup))
    if (zmqTransport !== undefined) zmq.push(...await phalanxRun(zmqTransport, () => 'tcp://127.0.0.1:0', data, hidden, batch, steps, warmup))
    progress(`elastic-overhead: round ${r + 1}/${rounds}: plain ${median(plain).toFixed(1)} ms, memory ${median(memory).toFixed(1)} ms${zmq.length > 0 ? `, zmq ${median(zmq).toFixed(1)} ms` : ''}`)
  }
  const p = median(plain)
  const metrics: Record<string, Metric> = {
    step_overhead_ratio: { value: median(memory) / p - 1, unit: 'ratio', target: 0.05, better: 'lower' },
    plain_step_ms: { value: p, unit: 'ms', target: null, better: 'lower' },
    phalanx_step_ms: { value: median(memory), unit: 'ms', target: null, better: 'lower' },
    step_overhead_ms: { value: median(memory) - p, unit: 'ms', target: null, better: 'lower' },
    minimize_step_ms: { value: median(minimize), unit: 'ms', target: null, better: 'lower' },
    step_overhead_ratio_vs_minimize: { value: median(memory) / median(minimize) - 1, unit: 'ratio', target: null, better: 'lower' },
    overhead_model_hidden: { value: hidden, unit: 'units', target: null, better: 'higher' }
  }
  if (zmq.length > 0) {
    metrics.step_overhead_ratio_zmq = { value: median(zmq) / p - 1, unit: 'ratio', target: 0.05, better: 'lower' }
    metrics.phalanx_zmq_step_ms = { value: median(zmq), unit: 'ms', target: null, better: 'lower' }
  }
  return metrics
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const metrics = await measureOverhead()
  for (const [name, m] of Object.entries(metrics)) process.stdout.write(`${name}: ${Number(m.value.toPrecision(4))} ${m.unit}${m.target === null ? '' : ` (target ${m.better === 'lower' ? '<=' : '>='} ${m.target})`}\n`)
}
