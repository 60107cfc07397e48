/**
 * `npm run eval -- checkfree [--pretrain 150] [--branch 40] [--steps 80] [--seeds 2] [--rates 0.02,0.05]`
 *
 * CheckFree / CheckFree+ stage recovery against random re-initialisation and checkpoint-and-restart,
 * on the character-level transformer LM of @phalanx/tfjs (licence-text corpus, vocab from the text),
 * trained pipeline-parallel in one process by the real @phalanx/pipeline runtime (stage workers and
 * controller over the in-memory transport, wasm backend). Stages are crashed with
 * `LocalPipeline.kill`, so recovery, replay and the replacement's state pulls are the production code.
 *
 * A. Snapshot-and-branch: pretrain in order and out of order (CheckFree+ swaps), then from the
 *    snapshot: one common step, fail one stage, train `--branch` steps per strategy.
 * B. Bernoulli failures: every stage fails with probability p per executed iteration (the same
 *    seeded schedule for every strategy), `--steps` committed steps, several seeds.
 *
 * Wall-clock model (stated in the summary): step time = the median measured step time of the run;
 * a failure costs a replacement start `RESTART_S` for every strategy, plus for CheckFree the
 * neighbours' stage state over `NET_BPS`; checkpoint-and-restart also pays a checkpoint of the whole
 * model (`CKPT_FIXED_S` + bytes / `DISK_BPS`) every `CKPT_EVERY` steps, and its rollback re-trains the
 * lost steps (counted as executed steps).
 */
import { createMemoryNetwork, memoryTransport } from '@phalanx/transport/memory'
import { charCorpus, createTransformerLm, deriveSeed, createRng, lmLoss, selectBackend, tensorFrom, tf, type SequenceBatch, type TransformerLmInit } from '@phalanx/tfjs'
import type { StateDict } from '@phalanx/core'
import { createStageRegistry } from '@phalanx/coordinator'
import { createLocalPipeline, pipelineGraph, type LocalPipeline, type LocalPipelineInit, type RecoveryStrategy, type AverageWeighting } from '@phalanx/pipeline'
import { writeEvalResult } from './report.js'

function arg (name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? String(process.argv[i + 1]) : fallback
}
const PRETRAIN = Number(arg('pretrain', '150'))
const BRANCH = Number(arg('branch', '40'))
const STEPS = Number(arg('steps', '80'))
const SEEDS = Number(arg('seeds', '2'))
const RATES = arg('rates', '0.02,0.05').split(',').map(Number)
const STAGES = 4
const LAYERS = 8
const M = 2
const MB = 8
const T = 16
const LR = 3e-3
const EVAL_EVERY = 20
const VAL_SEQS = 512
const RESTART_S = 10
const NET_BPS = 1e9 / 8
const DISK_BPS = 200e6
const CKPT_FIXED_S = 2
const CKPT_EVERY = 20

const log = (msg: string): void => { process.stderr.write(`[checkfree] ${msg}\n`) }

interface Variant { name: string, strategy: RecoveryStrategy | 'none', weighting?: AverageWeighting, outOfOrder: boolean }

await selectBackend({ prefer: 'wasm' })
const train = await charCorpus({ seqLen: T, split: 'train' })
const val = await charCorpus({ seqLen: T, split: 'test' })
const lm: TransformerLmInit = { vocab: train.vocab.length, dModel: 32, heads: 2, layers: LAYERS, seqLen: T, ffn: 128, seed: 1 }
const order = train.order(0)
const batches = (seed: number) => (step: number, mb: number): SequenceBatch => {
  const first = ((step * M + mb) * MB + seed * 9973) % (train.size - MB)
  return train.batch(order.subarray(first, first + MB))
}
const valBatch = val.batch(Array.from({ length: Math.min(VAL_SEQS, val.size) }, (_, i) => i))
const evalModel = createTransformerLm(lm)

async function validate (p: LocalPipeline): Promise<number> {
  const byName = new Map(evalModel.params.map((q) => [q.name, q.variable]))
  for (const row of p.workers()) {
    const w = row[0]
    if (w === undefined) continue
    for (const q of w.model.params) {
      const t = tensorFrom(await q.variable.data() as Float32Array, q.variable.shape)
      byName.get(q.name)?.assign(t)
      t.dispose()
    }
  }
  let sum = 0
  for (let off = 0; off < valBatch.size; off += 64) {
    const n = Math.min(64, valBatch.size - off)
    const b: SequenceBatch = { size: n, seqLen: T, inputs: valBatch.inputs.subarray(off * T, (off + n) * T), targets: valBatch.targets.subarray(off * T, (off + n) * T) }
    const l = tf.tidy(() => lmLoss(evalModel, b))
    sum += (await l.data())[0] as number * n
    l.dispose()
  }
  return sum / valBatch.size
}

async function open (v: Variant, seed: number, startStep = 0): Promise<LocalPipeline> {
  const init: LocalPipelineInit = {
    lm, stages: STAGES, microBatches: M, lr: LR, schedule: '1f1b', outOfOrder: v.outOfOrder, edgeReplicas: v.strategy === 'checkfree-plus',
    controller: {
      startStep,
      seed,
      snapshotEvery: v.strategy === 'rollback' ? CKPT_EVERY : 0,
      recovery: { strategy: v.strategy === 'none' ? 'checkfree' : v.strategy, weighting: v.weighting ?? 'gradNorm', lrScale: 1.1 }
    }
  }
  const registry = createStageRegistry({ graph: pipelineGraph({ stages: STAGES, outOfOrder: v.outOfOrder }) })
  return await createLocalPipeline(init, { transport: memoryTransport({ network: createMemoryNetwork() }), batches: batches(seed), registry })
}

async function statesOf (p: LocalPipeline): Promise<StateDict[]> {
  return await Promise.all(p.workers().map(async (row) => await (row[0] as NonNullable<typeof row[0]>).state()))
}

function stageBytes (p: LocalPipeline): number[] {
  return p.workers().map((row) => 4 * (row[0]?.model.params.reduce((n, q) => n + q.variable.size, 0) ?? 0))
}

// ---------------- A. snapshot and branch ----------------
const branchRows: Array<Record<string, string | number>> = []
const stepTimes: number[] = []
async function pretrain (outOfOrder: boolean): Promise<{ states: StateDict[], val: number }> {
  const p = await open({ name: 'pre', strategy: 'none', outOfOrder }, 0)
  try {
    for (let i = 0; i < PRETRAIN; i++) {
      const t0 = performance.now()
      await p.controller.trainStep()
      stepTimes.push(performance.now() - t0)
      if ((i + 1) % 40 === 0) log(`pretrain ${outOfOrder ? 'out-of-order' : 'in-order'} step ${i + 1}/${PRETRAIN}`)
    }
    return { states: await statesOf(p), val: await validate(p) }
  } finally {
    await p.stop()
  }
}

async function branch (snap: StateDict[], v: Variant, failStage: number | undefined): Promise<Record<string, string | number>> {
  const p = await open(v, 0, PRETRAIN)
  try {
    p.workers().forEach((row, s) => { for (const w of row) w.load(snap[s] as StateDict) })
    await p.controller.trainStep()
    if (failStage !== undefined) await p.kill(failStage)
    const first = await p.controller.trainStep()
    const right = await validate(p)
    const curve: number[] = [right]
    for (let i = 1; i < BRANCH; i++) {
      await p.controller.trainStep()
      if ((i + 1) % EVAL_EVERY === 0) curve.push(await validate(p))
    }
    const end = await validate(p)
    return { variant: v.name, failed: failStage ?? '-', recovery: first.recoveries[0]?.strategy ?? '-', valAfter: right, valEnd: end, curve: curve.map((x) => x.toFixed(3)).join(' ') }
  } finally {
    await p.stop()
  }
}

const inOrder = await pretrain(false)
log(`in-order pretrain val ${inOrder.val.toFixed(3)}, median step ${median(stepTimes).toFixed(0)} ms`)
const swapped = await pretrain(true)
log(`out-of-order pretrain val ${swapped.val.toFixed(3)}`)
const branches: Array<[StateDict[], Variant, number | undefined]> = [
  [inOrder.states, { name: 'none (in order)', strategy: 'none', outOfOrder: false }, undefined],
  [inOrder.states, { name: 'checkfree gradNorm', strategy: 'checkfree', outOfOrder: false }, 1],
  [inOrder.states, { name: 'checkfree uniform', strategy: 'checkfree', weighting: 'uniform', outOfOrder: false }, 1],
  [inOrder.states, { name: 'random', strategy: 'random', outOfOrder: false }, 1],
  [inOrder.states, { name: 'checkfree edge copy (in order)', strategy: 'checkfree', outOfOrder: false }, 0],
  [inOrder.states, { name: 'random edge', strategy: 'random', outOfOrder: false }, 0],
  [swapped.states, { name: 'none (out of order)', strategy: 'none', outOfOrder: true }, undefined],
  [swapped.states, { name: 'checkfree+ edge copy', strategy: 'checkfree-plus', outOfOrder: true }, 0],
  [swapped.states, { name: 'random edge (out of order)', strategy: 'random', outOfOrder: true }, 0]
]
for (const [snap, v, s] of branches) {
  const row = await branch(snap, v, s)
  log(`branch ${v.name} stage ${s ?? '-'}: after ${Number(row.valAfter).toFixed(3)} end ${Number(row.valEnd).toFixed(3)}`)
  branchRows.push(row)
}

// ---------------- B. Bernoulli failures ----------------
function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? 0
}

interface RunResult { final: number, curve: Array<[number, number, number]>, failures: number, executed: number, wallS: number }

async function bernoulli (v: Variant, p: number, seed: number, stepS: number): Promise<RunResult> {
  const pipe = await open(v, seed)
  const rng = createRng(deriveSeed(seed, Math.round(p * 1e6)))
  const bytes = stageBytes(pipe)
  const modelBytes = bytes.reduce((a, b) => a + b, 0)
  let failures = 0
  let executed = 0
  let wallS = 0
  const curve: Array<[number, number, number]> = []
  try {
    // Rollback can fall behind for ever when failures come faster than checkpoints: cap the iterations.
    while (pipe.controller.step < STEPS && executed < 4 * STEPS) {
      // One draw per stage per executed iteration, identical across strategies (same rng stream).
      const failing: number[] = []
      for (let s = 0; s < STAGES; s++) if (rng.next() < p && executed > 0) failing.push(s)
      if (v.strategy !== 'none') {
        for (const s of failing) await pipe.kill(s)
        if (failing.length > 0) {
          failures += failing.length
          wallS += RESTART_S
          if (v.strategy === 'checkfree' || v.strategy === 'checkfree-plus') wallS += failing.reduce((n, s) => n + 2 * (bytes[s] ?? 0), 0) / NET_BPS
        }
      }
      const before = pipe.controller.step
      await pipe.controller.trainStep()
      executed++
      wallS += stepS
      const after = pipe.controller.step
      if (v.strategy === 'rollback' && after % CKPT_EVERY === 0 && after > before) wallS += CKPT_FIXED_S + modelBytes / DISK_BPS
      if (after % EVAL_EVERY === 0 && after > before) curve.push([after, wallS, await validate(pipe)])
    }
    return { final: await validate(pipe), curve, failures, executed, wallS }
  } finally {
    await pipe.stop()
  }
}

const stepS = median(stepTimes) / 1000
const variants: Variant[] = [
  { name: 'none', strategy: 'none', outOfOrder: false },
  { name: 'checkfree+', strategy: 'checkfree-plus', outOfOrder: true },
  { name: 'checkfree', strategy: 'checkfree', outOfOrder: false },
  { name: 'checkpoint-restart', strategy: 'rollback', outOfOrder: false }
]
const results = new Map<string, RunResult[]>()
for (let seed = 1; seed <= SEEDS; seed++) {
  const base = await bernoulli(variants[0] as Variant, 0, seed, stepS)
  results.set(`none|0|${seed}`, [base])
  log(`seed ${seed} no-failure final ${base.final.toFixed(3)}`)
  for (const p of RATES) {
    for (const v of variants.slice(1)) {
      const r = await bernoulli(v, p, seed, stepS)
      results.set(`${v.name}|${p}|${seed}`, [r])
      log(`seed ${seed} p ${p} ${v.name}: final ${r.final.toFixed(3)}, ${r.failures} failures, ${r.executed} iterations, modelled ${r.wallS.toFixed(0)} s`)
    }
  }
}

const rows: Array<Record<string, string | number>> = []
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
for (const row of branchRows) rows.push({ experiment: 'A branch', variant: String(row.variant), rate: '-', failed: row.failed ?? '-', valAfterFailure: row.valAfter ?? '-', valEnd: row.valEnd ?? '-', failures: row.failed === '-' ? 0 : 1, wallToTargetS: '-' })
for (const p of [0, ...RATES]) {
  for (const v of p === 0 ? variants.slice(0, 1) : variants.slice(1)) {
    const runs = Array.from({ length: SEEDS }, (_, i) => results.get(`${v.name}|${p}|${i + 1}`)?.[0]).filter((r): r is RunResult => r !== undefined)
    const targets = Array.from({ length: SEEDS }, (_, i) => (results.get(`none|0|${i + 1}`)?.[0]?.final ?? 0) * 1.03)
    const toTarget = runs.map((r, i) => r.curve.find(([, , l]) => l <= (targets[i] as number))?.[1] ?? Number.NaN)
    rows.push({
      experiment: 'B bernoulli', variant: v.name, rate: p, failed: 'any',
      valAfterFailure: '-', valEnd: mean(runs.map((r) => r.final)), failures: mean(runs.map((r) => r.failures)),
      wallToTargetS: toTarget.some(Number.isNaN) ? `not reached (${toTarget.filter((x) => !Number.isNaN(x)).length}/${runs.length})` : mean(toTarget)
    })
  }
}

writeEvalResult('checkfree', {
  summary: `Pipeline of ${STAGES} stages × ${LAYERS / STAGES} blocks (d=32, 2 heads, ffn 128, T=${T}), ${M} micro-batches × ${MB} sequences per step, ` +
    `Adam ${LR}, per-stage clip 1.0, 1F1B, wasm, real @phalanx/pipeline runtime over the memory transport. ` +
    `A: pretrain ${PRETRAIN} steps (in order: val ${inOrder.val.toFixed(3)}; out of order: ${swapped.val.toFixed(3)}), one common step, fail a stage, ${BRANCH} steps per branch. ` +
    `B: Bernoulli failures of every stage with probability p per executed iteration, ${STEPS} committed steps, ${SEEDS} seeds, same failure schedule for every strategy; ` +
    `checkpoint-restart = in-memory snapshot every ${CKPT_EVERY} steps, all stages roll back. ` +
    `Wall-clock model: median measured step ${(stepS * 1000).toFixed(0)} ms per executed iteration; every failure costs a ${RESTART_S} s replacement start; ` +
    `CheckFree adds 2 neighbour stage states over 1 Gbit/s; checkpointing costs ${CKPT_FIXED_S} s + model bytes / 200 MB/s every ${CKPT_EVERY} steps and re-trains rolled-back steps. ` +
    `Target loss = 1.03 × the no-failure run's final validation loss (same seed). Validation: ${valBatch.size} held-out sequences (${valBatch.size * T} tokens).`,
  columns: ['experiment', 'variant', 'rate', 'failed', 'valAfterFailure', 'valEnd', 'failures', 'wallToTargetS'],
  rows,
  data: { branches: branchRows, bernoulli: Object.fromEntries([...results].map(([k, v]) => [k, v[0]])), stepMs: stepS * 1000 }
})
evalModel.dispose()
