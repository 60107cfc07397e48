/**
 * Step-time overhead of a lazy L0 snapshot at every step boundary, on real tfjs training loops: the
 * transformer LM on the character corpus and the MNIST MLP, wasm backend with the `BatchMatMul`
 * override. Each loop is `computeGradients` + `applyGradients` + one event-loop turn; the lazy
 * variant adds `snapshotter.capture(pinState(model, optimizer, meta))` after the update, and the
 * snapshotter drains to a snapshot holder in another process over ZeroMQ ipc (slots in tmpfs),
 * optionally also to an L2 store; the awaited variant also waits for each drain (the full cost of
 * taking every snapshot). Runs of the three modes alternate on the same model (order rotated each
 * round), so drifting load from other jobs hits all alike.
 *
 * `measureSnapshotOverhead()` is imported by bench/suites/checkpoint.ts; run this file alone to print
 * the metrics: `node --import tsx bench/lib/snapshot-overhead.ts`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createCheckpointStore, createHolderClient, createSnapshotter, type Snapshotter } from '@phalanx/checkpoint'
import {
  applyGradients, charCorpus, computeGradients, createMnistMlp, createTransformerLm, lmLoss, mnistDataset, mnistLoss,
  pinState, selectBackend, stateSpecs, tf, type LossFn, type TfModel
} from '@phalanx/tfjs'
import { zmqTransport } from '@phalanx/transport/zmq'
import { median, progress, quantile, type Metric } from '../report.js'
import { startHolderProcess } from './start-holder.js'

/** The models measured. */
export type SnapshotWorkload = 'transformer' | 'mnist'

/** Tunables of {@link measureSnapshotOverhead}. */
export interface SnapshotOverheadInit {
  /** Which loops to measure, in this order. @default ['transformer', 'mnist'] */
  workloads?: readonly SnapshotWorkload[]
  /** Plain step time to size each model for (batch for the transformer, width for the MLP), ms. @default 200 */
  targetStepMs?: number
  /** Timed steps per run. @default 12 */
  steps?: number
  /** Untimed steps at the start of each run. @default 1 */
  warmup?: number
  /** Rounds of one run per mode (baseline, lazy, awaited), the order rotated each round. @default 3 */
  rounds?: number
  /** Every Nth completed snapshot also goes to an L2 store in a temporary directory (0: L0 only). @default 0 */
  l2Every?: number
}

const SEED = 7

/** One training loop: a model, its optimiser, a loss and the batch of each step. */
interface Loop {
  readonly model: TfModel
  readonly optimizer: tf.Optimizer
  readonly describe: string
  /** Performs step `s` (forward, backward to flat gradients, optimiser update). */
  step(s: number): Promise<void>
  dispose(): void
}

function loopOf<B> (model: TfModel, loss: LossFn<B>, batchOf: (s: number) => B, describe: string): Loop {
  const optimizer = tf.train.adam(1e-3)
  const out = new Float32Array(model.params.reduce((n, p) => n + p.variable.size, 0))
  return {
    model,
    optimizer,
    describe,
    async step (s) {
      const { grads } = await computeGradients(model, loss, batchOf(s), { out })
      applyGradients(model, optimizer, grads)
    },
    dispose () {
      model.dispose()
      optimizer.dispose()
    }
  }
}

/** Builds the loop of `workload` at size `knob` (sequences per batch, or MLP width). */
type LoopFactory = (knob: number) => Loop

async function factoryOf (workload: SnapshotWorkload): Promise<{ make: LoopFactory, knob: number }> {
  if (workload === 'transformer') {
    const corpus = await charCorpus({ seqLen: 64, seed: SEED })
    const order = corpus.order(0)
    return {
      knob: 8,
      make: (batch) => {
        const model = createTransformerLm({ vocab: corpus.vocab.length, dModel: 128, heads: 4, layers: 4, seqLen: 64, ffn: 512, seed: SEED })
        const batchOf = (s: number): ReturnType<typeof corpus.batch> => {
          const first = (s * batch) % (order.length - batch)
          return corpus.batch(order.subarray(first, first + batch))
        }
        return loopOf(model, lmLoss, batchOf, `transformer LM d 128, 4 layers, 4 heads, FFN 512, T 64, vocab ${corpus.vocab.length}, batch ${batch}, Adam`)
      }
    }
  }
  const data = await mnistDataset({ split: 'train', seed: SEED })
  const order = data.order(0)
  const batch = 1024
  return {
    knob: 512,
    make: (hidden) => {
      const batchOf = (s: number): ReturnType<typeof data.batch> => {
        const first = (s * batch) % (order.length - batch)
        return data.batch(order.subarray(first, first + batch))
      }
      return loopOf(createMnistMlp({ hidden, seed: SEED }), mnistLoss, batchOf, `MNIST MLP 784-${hidden}-10, batch ${batch}, Adam`)
    }
  }
}

/** Picks the size whose plain step takes about `targetMs` (at most 3 resizes of 4 steps each). */
async function calibrate (factory: { make: LoopFactory, knob: number }, targetMs: number): Promise<{ loop: Loop, ms: number }> {
  let knob = factory.knob
  let loop = factory.make(knob)
  const measure = async (): Promise<number> => {
    const times: number[] = []
    for (let s = 0; s < 4; s++) {
      const t0 = performance.now()
      await loop.step(s)
      if (s > 0) times.push(performance.now() - t0)
    }
    return median(times)
  }
  let ms = await measure()
  for (let i = 0; i < 3 && Math.abs(ms - targetMs) / targetMs > 0.15; i++) {
    loop.dispose()
    knob = Math.max(1, Math.round(knob * targetMs / ms))
    loop = factory.make(knob)
    ms = await measure()
  }
  return { loop, ms }
}

/**
 * How a run snapshots: not at all; `lazy`, a capture at every step boundary that returns at once
 * (skipped while the previous drain is in flight); `awaited`, a capture at every step and the step
 * waits for its drain (every snapshot taken: the full cost of a snapshot per step, an upper bound).
 */
type Mode = 'baseline' | 'lazy' | 'awaited'

const yieldLoop = async (): Promise<void> => { await new Promise<void>((resolve) => { setImmediate(resolve) }) }

/** One run: step durations, and (lazy mode) how many steps each completed drain spanned. */
interface RunResult { times: number[], drainSteps: number[], unfinished: number }

/** Step durations of one run: every step timed from its start to the end of its boundary work. */
async function run (loop: Loop, first: number, steps: number, warmup: number, mode: Mode, snapshotter: Snapshotter): Promise<RunResult> {
  const times: number[] = []
  const drainSteps: number[] = []
  let acceptedAt: number | undefined
  let completed = snapshotter.stats().completed
  for (let i = 0; i < warmup + steps; i++) {
    const s = first + i
    const t0 = performance.now()
    await loop.step(s)
    if (mode !== 'baseline') {
      const done = snapshotter.stats().completed
      if (done > completed && acceptedAt !== undefined) drainSteps.push(i - acceptedAt)
      completed = done
      if (snapshotter.capture(pinState(loop.model, loop.optimizer, { step: s + 1, epoch: 0 })).accepted) acceptedAt = i
    }
    if (mode === 'awaited') await snapshotter.flush()
    // One event-loop turn per step, in every mode, as an async training loop gives (a data loader,
    // a network round trip): tfjs's own awaits on wasm resolve as microtasks and give the drain none.
    await yieldLoop()
    if (i >= warmup) times.push(performance.now() - t0)
  }
  // A drain still in flight finishes outside the timed steps; the next run starts with none.
  const unfinished = mode === 'lazy' && snapshotter.stats().completed === completed && acceptedAt !== undefined ? 1 : 0
  await snapshotter.flush()
  return { times, drainSteps, unfinished }
}

function stateBytes (loop: Loop): number {
  const params = loop.model.params.reduce((n, p) => n + p.variable.size, 0)
  // Adam keeps two slots per parameter (plus two scalars, negligible).
  return params * 3 * 4
}

/**
 * Measures, per workload, the median step with a snapshot every step over the median step of the
 * same loop without, minus 1 (`<workload>_snapshot_every_step_overhead_ratio`, target ≤ 0.05), and
 * how many of the attempted snapshots were taken (the others were skipped because a drain was busy).
 */
export async function measureSnapshotOverhead (init: SnapshotOverheadInit = {}): Promise<Record<string, Metric>> {
  const workloads = init.workloads ?? ['transformer', 'mnist']
  const targetMs = init.targetStepMs ?? 200
  const steps = init.steps ?? 12
  const warmup = init.warmup ?? 1
  const rounds = init.rounds ?? 3
  const l2Every = init.l2Every ?? 0
  const backend = await selectBackend({ prefer: 'wasm' })
  // A holder process of its own (the endpoint's job must match the holder's).
  const holder = await startHolderProcess('snapshot-overhead')
  const address = holder.address
  const l2Dir = l2Every > 0 ? mkdtempSync(join(tmpdir(), 'phx-bench-snap-l2-')) : undefined
  const endpoint = await zmqTransport().open({ id: 'snapshot-overhead', job: 'snapshot-overhead' })
  const metrics: Record<string, Metric> = {}
  const m = (value: number, unit: string, target: number | null = null, better: 'lower' | 'higher' = 'lower'): Metric => ({ value, unit, target, better })
  try {
    for (const w of workloads) {
      const { loop, ms: calibratedMs } = await calibrate(await factoryOf(w), targetMs)
      const bytes = stateBytes(loop)
      const tensorCount = stateSpecs(loop.model, loop.optimizer).length
      progress(`snapshot-overhead: ${w}: backend ${backend.name}, ${loop.describe}; state ${(bytes / 2 ** 20).toFixed(1)} MiB; plain step ~${calibratedMs.toFixed(0)} ms`)
      const client = createHolderClient({ owner: `bench-${w}`, address, requestTimeoutMs: 60_000 }, { endpoint })
      const store = l2Dir === undefined ? undefined : createCheckpointStore({ dir: join(l2Dir, w), keep: 2 })
      const snapshotter = createSnapshotter({ l2Every }, { holder: client, ...(store === undefined ? {} : { store }) })
      const modes: Mode[] = ['baseline', 'lazy', 'awaited']
      const times: Record<Mode, number[]> = { baseline: [], lazy: [], awaited: [] }
      const means: Record<Mode, number[]> = { baseline: [], lazy: [], awaited: [] }
      const drainMs: number[] = []
      let taken = 0
      const lazyDrainSteps: number[] = []
      let lazyUnfinished = 0
      let skipped = 0
      let s = 1000
      try {
        snapshotter.start()
        for (let r = 0; r < rounds; r++) {
          // Rotate the order each round so no mode always runs first (or right after another).
          for (let k = 0; k < modes.length; k++) {
            const mode = modes[(k + r) % modes.length] as Mode
            const before = snapshotter.stats()
            const { times: t, drainSteps, unfinished } = await run(loop, s, steps, warmup, mode, snapshotter)
            const after = snapshotter.stats()
            s += warmup + steps
            times[mode].push(...t)
            means[mode].push(t.reduce((a, b) => a + b, 0) / t.length)
            if (mode === 'lazy') {
              taken += after.captured - before.captured
              skipped += after.skipped - before.skipped
              lazyDrainSteps.push(...drainSteps)
              lazyUnfinished += unfinished
            }
            if (mode === 'awaited') drainMs.push(after.lastDrainMs)
          }
          progress(`snapshot-overhead: ${w}: round ${r + 1}/${rounds}: baseline ${median(times.baseline).toFixed(1)} ms, lazy snapshot every step ${median(times.lazy).toFixed(1)} ms (taken ${taken}, skipped ${skipped}; lazy drains spanning [${lazyDrainSteps.join(', ')}] steps, ${lazyUnfinished} still draining at the end of its run), awaited snapshot every step ${median(times.awaited).toFixed(1)} ms (drain ${median(drainMs).toFixed(0)} ms)`)
        }
      } finally {
        await snapshotter.stop()
        loop.dispose()
      }
      const st = snapshotter.stats()
      if (st.failed > 0) throw new Error(`${st.failed} snapshots of ${w} failed`)
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
      const mb = median(times.baseline)
      metrics[`${w}_snapshot_every_step_overhead_ratio`] = m(median(times.lazy) / mb - 1, 'ratio', 0.05)
      metrics[`${w}_snapshot_every_step_overhead_ratio_mean`] = m(mean(means.lazy) / mean(means.baseline) - 1, 'ratio')
      metrics[`${w}_snapshot_every_step_overhead_ratio_p20`] = m(quantile(times.lazy, 0.2) / quantile(times.baseline, 0.2) - 1, 'ratio')
      metrics[`${w}_snapshots_taken_fraction`] = m(taken / Math.max(1, taken + skipped), 'fraction', null, 'higher')
      metrics[`${w}_snapshots_skipped`] = m(skipped, 'count')
      // Steps a lazy drain spans (a drain unfinished when its run ended counts as the whole run).
      metrics[`${w}_lazy_drain_span_steps`] = m(median([...lazyDrainSteps, ...Array.from({ length: lazyUnfinished }, () => warmup + steps)]), 'steps')
      metrics[`${w}_snapshot_awaited_every_step_overhead_ratio`] = m(median(times.awaited) / mb - 1, 'ratio')
      metrics[`${w}_step_ms_baseline`] = m(mb, 'ms')
      metrics[`${w}_step_ms_snapshot_every_step`] = m(median(times.lazy), 'ms')
      metrics[`${w}_step_ms_snapshot_awaited`] = m(median(times.awaited), 'ms')
      metrics[`${w}_snapshot_drain_ms`] = m(median(drainMs), 'ms')
      metrics[`${w}_snapshots_committed_l0`] = m(st.l0, 'count', null, 'higher')
      // The drain yields one event-loop turn per tensor: this bounds how fast a lazy drain can finish.
      metrics[`${w}_snapshot_tensors`] = m(tensorCount, 'count')
      metrics[`${w}_snapshot_state_mib`] = m(bytes / 2 ** 20, 'MiB', null, 'higher')
      if (l2Every > 0) metrics[`${w}_snapshots_committed_l2`] = m(st.l2, 'count', null, 'higher')
    }
  } finally {
    await endpoint.close({ lingerMs: 0 })
    await holder.stop()
    if (l2Dir !== undefined) rmSync(l2Dir, { recursive: true, force: true })
  }
  return metrics
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const metrics = await measureSnapshotOverhead({
    ...(process.env.SNAP_WORKLOADS === undefined ? {} : { workloads: process.env.SNAP_WORKLOADS.split(',') as SnapshotWorkload[] }),
    ...(process.env.SNAP_ROUNDS === undefined ? {} : { rounds: Number(process.env.SNAP_ROUNDS) }),
    ...(process.env.SNAP_STEPS === undefined ? {} : { steps: Number(process.env.SNAP_STEPS) }),
    ...(process.env.SNAP_L2_EVERY === undefined ? {} : { l2Every: Number(process.env.SNAP_L2_EVERY) })
  })
  for (const [name, x] of Object.entries(metrics)) process.stdout.write(`${name}: ${Number(x.value.toPrecision(4))} ${x.unit}${x.target === null ? '' : ` (target ${x.better === 'lower' ? '<=' : '>='} ${x.target})`}\n`)
}
