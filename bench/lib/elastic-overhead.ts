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
import { createHolderClient, createSnapshotter } from '@phalanx/checkpoint'
import { createCoordinator } from '@phalanx/coordinator'
import {
  applyGradients, computeGradients, createMnistMlp, mnistDataset, mnistLoss, pinState, selectBackend, tf, type MnistDataset, type TfModel
} from '@phalanx/tfjs'
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { createSampleOrder, createTrainer } from '@phalanx/worker'
import { median, progress, quantile, type Metric } from '../report.js'
import { startHolderProcess } from './start-holder.js'

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
  /**
   * Include the ZeroMQ variant with a snapshot every step sent to a holder process (ipc). Needs `zmq`.
   * @default true
   */
  snapshots?: boolean
  /**
   * Micro-batches per step for the deterministic vs pre-summed comparison (both Phalanx over the
   * memory transport, and a plain loop summing the same micro-batch gradients). 0 skips it.
   * @default 4
   */
  microBatches?: number
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

/**
 * The plain loop with the step's batch cut into `m` micro-batches, as Phalanx computes it: one
 * gradient per micro-batch, summed in float64 and divided by m, then one optimiser update.
 */
async function plainMicroRun (data: MnistDataset, hidden: number, batch: number, m: number, steps: number, warmup: number): Promise<number[]> {
  const { model, optimizer } = modelOf(hidden)
  const order = createSampleOrder({ seed: SEED, size: data.size })
  const size = model.params.reduce((n, p) => n + p.variable.size, 0)
  const outs = Array.from({ length: m }, () => new Float32Array(size))
  const acc = new Float64Array(size)
  const agg = new Float32Array(size)
  const mb = batch / m
  const times: number[] = []
  try {
    for (let s = 0; s < warmup + steps; s++) {
      const t0 = performance.now()
      for (let k = 0; k < m; k++) {
        const b = data.batch(order.range(s * batch + k * mb, s * batch + (k + 1) * mb))
        await computeGradients(model, mnistLoss, b, { out: outs[k] as Float32Array })
      }
      acc.fill(0)
      for (const g of outs) for (let j = 0; j < size; j++) acc[j] = (acc[j] as number) + (g[j] as number)
      for (let j = 0; j < size; j++) agg[j] = (acc[j] as number) / m
      applyGradients(model, optimizer, agg)
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
async function phalanxRun (transport: Transport, listen: (id: string) => string | undefined, data: MnistDataset, hidden: number, batch: number, steps: number, warmup: number, options: { microBatch?: number, deterministic?: boolean, holder?: string } = {}): Promise<number[]> {
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
    jobId: 'overhead', minWorkers: 1, maxWorkers: 1, globalBatch: batch, microBatch: options.microBatch ?? batch, steps: warmup + steps + 1, deterministic: options.deterministic ?? true,
    heartbeatIntervalMs: 100, suspectAfterMs: 1000, stepTimeoutMs: 60_000, rendezvousTimeoutMs: 60_000
  }, { endpoint: coordinatorEndpoint })
  const stamps: number[] = []
  let snapshotter: ReturnType<typeof createSnapshotter> | undefined
  try {
    await coordinator.start()
    const endpoint = await open('worker-1')
    let snapshots
    if (options.holder !== undefined) {
      const client = createHolderClient({ owner: 'worker-1', address: options.holder }, { endpoint })
      const snap = createSnapshotter({ l2Every: 0 }, { holder: client })
      snapshotter = snap
      snap.start()
      snapshots = {
        capture: (meta: Parameters<typeof pinState>[2]) => { snap.capture(pinState(model, optimizer, meta)) },
        restore: async () => undefined
      }
    }
    const trainer = createTrainer({
      model, optimizer, data, loss: mnistLoss, seed: SEED, coordinatorAddress: coordinatorEndpoint.address,
      worker: { heartbeatIntervalMs: 100, suspectAfterMs: 1000 },
      onStep: () => { stamps.push(performance.now()) }
    }, { endpoint, ...(snapshots === undefined ? {} : { snapshots }) })
    await trainer.run()
    if (snapshotter !== undefined) {
      await snapshotter.flush()
      const st = snapshotter.stats()
      progress(`elastic-overhead: snapshots captured ${st.captured}, skipped ${st.skipped}, committed by the holder ${st.l0}, main-thread ${st.mainThreadMs.toFixed(0)} ms, capture ${st.captureMs.toFixed(0)} ms`)
    }
  } finally {
    await snapshotter?.stop()
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
  const withSnapshots = withZmq && (init.snapshots ?? true)
  const m = init.microBatches ?? 4
  const backend = await selectBackend({ prefer: 'wasm' })
  const data = await mnistDataset({ split: 'train', seed: SEED })
  const { hidden, ms: calibratedMs } = await calibrate(data, batch, init.targetStepMs ?? 200)
  progress(`elastic-overhead: backend ${backend.name}, MLP 784-${hidden}-10, batch ${batch}, plain step ~${calibratedMs.toFixed(0)} ms`)
  const zmqTransport = withZmq ? (await import('@phalanx/transport/zmq')).zmqTransport() : undefined
  const holder = withSnapshots ? await startHolderProcess('overhead') : undefined
  const plain: number[] = []
  const minimize: number[] = []
  const memory: number[] = []
  const zmq: number[] = []
  const zmqSnap: number[] = []
  const plainMicro: number[] = []
  const detMicro: number[] = []
  const sumMicro: number[] = []
  const mem = (): Transport => memoryTransport({ network: createMemoryNetwork() })
  try {
    for (let r = 0; r < rounds; r++) {
      plain.push(...await plainRun(data, hidden, batch, steps, warmup))
      minimize.push(...await minimizeRun(data, hidden, batch, steps, warmup))
      memory.push(...await phalanxRun(mem(), () => undefined, data, hidden, batch, steps, warmup))
      if (zmqTransport !== undefined) zmq.push(...await phalanxRun(zmqTransport, () => 'tcp://127.0.0.1:0', data, hidden, batch, steps, warmup))
      if (zmqTransport !== undefined && holder !== undefined) zmqSnap.push(...await phalanxRun(zmqTransport, () => 'tcp://127.0.0.1:0', data, hidden, batch, steps, warmup, { holder: holder.address }))
      if (m > 1) {
        plainMicro.push(...await plainMicroRun(data, hidden, batch, m, steps, warmup))
        detMicro.push(...await phalanxRun(mem(), () => undefined, data, hidden, batch, steps, warmup, { microBatch: batch / m, deterministic: true }))
        sumMicro.push(...await phalanxRun(mem(), () => undefined, data, hidden, batch, steps, warmup, { microBatch: batch / m, deterministic: false }))
      }
      progress(`elastic-overhead: round ${r + 1}/${rounds}: plain ${median(plain).toFixed(1)} ms, memory ${median(memory).toFixed(1)} ms${zmq.length > 0 ? `, zmq ${median(zmq).toFixed(1)} ms` : ''}${zmqSnap.length > 0 ? `, zmq+snapshots ${median(zmqSnap).toFixed(1)} ms` : ''}${m > 1 ? `; ${m} micro-batches: plain ${median(plainMicro).toFixed(1)}, deterministic ${median(detMicro).toFixed(1)}, pre-summed ${median(sumMicro).toFixed(1)} ms` : ''}`)
    }
  } finally {
    await holder?.stop()
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
  if (zmqSnap.length > 0) {
    // The snapshot's cost on top of the same Phalanx run without snapshots (docs/checkpoint.md).
    metrics.snapshot_every_step_overhead_ratio = { value: median(zmqSnap) / median(zmq) - 1, unit: 'ratio', target: 0.05, better: 'lower' }
    metrics.phalanx_zmq_snapshot_step_ms = { value: median(zmqSnap), unit: 'ms', target: null, better: 'lower' }
  }
  // On a shared machine the medians carry other jobs' load; the 20th percentiles approximate the
  // uncontended step of each variant (informational, same runs).
  const p20 = (xs: number[]): number => quantile(xs, 0.2)
  metrics.step_overhead_ratio_p20 = { value: p20(memory) / p20(plain) - 1, unit: 'ratio', target: null, better: 'lower' }
  if (zmq.length > 0) metrics.step_overhead_ratio_zmq_p20 = { value: p20(zmq) / p20(plain) - 1, unit: 'ratio', target: null, better: 'lower' }
  if (zmqSnap.length > 0) metrics.snapshot_every_step_overhead_ratio_p20 = { value: p20(zmqSnap) / p20(zmq) - 1, unit: 'ratio', target: null, better: 'lower' }
  if (plainMicro.length > 0) {
    metrics[`step_overhead_ratio_${m}mb_deterministic_p20`] = { value: p20(detMicro) / p20(plainMicro) - 1, unit: 'ratio', target: null, better: 'lower' }
    metrics[`step_overhead_ratio_${m}mb_presummed_p20`] = { value: p20(sumMicro) / p20(plainMicro) - 1, unit: 'ratio', target: null, better: 'lower' }
  }
  if (plainMicro.length > 0) {
    const pm = median(plainMicro)
    metrics[`plain_${m}mb_step_ms`] = { value: pm, unit: 'ms', target: null, better: 'lower' }
    metrics[`step_overhead_ratio_${m}mb_deterministic`] = { value: median(detMicro) / pm - 1, unit: 'ratio', target: 0.05, better: 'lower' }
    metrics[`step_overhead_ratio_${m}mb_presummed`] = { value: median(sumMicro) / pm - 1, unit: 'ratio', target: 0.05, better: 'lower' }
  }
  return metrics
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const metrics = await measureOverhead()
  for (const [name, m] of Object.entries(metrics)) process.stdout.write(`${name}: ${Number(m.value.toPrecision(4))} ${m.unit}${m.target === null ? '' : ` (target ${m.better === 'lower' ? '<=' : '>='} ${m.target})`}\n`)
}
