/**
 * `npm run eval -- checkfree [--pretrain 150] [--branch 40] [--baseline 120] [--cap 3] [--eval-every 5]
 *  [--seeds 3] [--rates 0.01,0.02,0.05] [--strategies checkfree+,checkpoint-restart] [--parts A,B]`
 *
 * CheckFree / CheckFree+ stage recovery against random re-initialisation and checkpoint-and-restart,
 * on the character-level transformer LM of @phalanx/tfjs (licence-text corpus, vocab from the text),
 * trained pipeline-parallel in one process by the real @phalanx/pipeline runtime (stage workers and
 * controller over the in-memory transport, wasm backend). Stages are crashed with
 * `LocalPipeline.kill`, so recovery, replay and the replacement's state pulls are the production code.
 *
 * A. Snapshot-and-branch: pretrain in order and out of order (CheckFree+ swaps), then from the
 *    snapshot: one common step, fail one stage, train `--branch` steps per strategy.
 * B. Time to a target loss: per seed, a no-failure run of `--baseline` steps sets the target
 *    (1.03 × its final validation loss); every strategy then trains, with every stage failing with
 *    probability p per executed iteration (the same seeded schedule for every strategy), until its
 *    validation loss first reaches the target or `--cap` × baseline iterations have been executed.
 *    Validation runs every `--eval-every` committed steps (the same points for every strategy).
 *
 * Wall-clock model (stated in the summary): step time = the median measured step time of the run;
 * a failure costs a replacement start `RESTART_S` for every strategy, plus for CheckFree the
 * neighbours' stage state over `NET_BPS`; checkpoint-and-restart also pays a checkpoint of the whole
 * model (`CKPT_FIXED_S` + bytes / `DISK_BPS`) every `CKPT_EVERY` steps, and its rollback re-trains the
 * lost steps (counted as executed steps); CheckFree+ also pushes its (de)embedding copies to the
 * neighbours every step over `NET_BPS`. Executed iterations to the target are reported as well:
 * they are the wall-clock in the limit where a step costs far more than a restart or a checkpoint.
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
const BASELINE = Number(arg('baseline', '120'))
const CAP = Number(arg('cap', '3')) * BASELINE
const EVAL_B = Number(arg('eval-every', '5'))
const SEEDS = Number(arg('seeds', '3'))
const RATES = arg('rates', '0.01,0.02,0.05').split(',').map(Number)
const PARTS = arg('parts', 'A,B').split(',')
const STRATEGIES = arg('strategies', 'checkfree+,checkpoint-restart').split(',')
const TARGET = 1.03
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
  // Chunks of 256 sequences: wasm runs the larger matmuls faster than 8 chunks of 64.
  for (let off = 0; off < valBatch.size; off += 256) {
    const n = Math.min(256, valBatch.size - off)
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

/** Bytes of the (de)embedding copies CheckFree+ pushes to the neighbouring stages after every commit. */
function edgeCopyBytes (p: LocalPipeline): number {
  const rows = p.workers()
  const size = (ps: ReadonlyArray<{ variable: { size: number } }> | undefined): number => (ps ?? []).reduce((n, q) => n + q.variable.size, 0)
  return 4 * (size(rows[0]?.[0]?.model.groups.embed) + size(rows[rows.length - 1]?.[0]?.model.groups.head))
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

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? 0
}

const runA = PARTS.includes('A')
const inOrder = runA ? await pretrain(false) : { states: [], val: Number.NaN }
log(`in-order pretrain val ${inOrder.val.toFixed(3)}, median step ${median(stepTimes).toFixed(0)} ms`)
const swapped = runA ? await pretrain(true) : { states: [], val: Number.NaN }
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
for (const [snap, v, s] of runA ? branches : []) {
  const row = await branch(snap, v, s)
  log(`branch ${v.name} stage ${s ?? '-'}: after ${Number(row.valAfter).toFixed(3)} end ${Number(row.valEnd).toFixed(3)}`)
  branchRows.push(row)
}


// ---------------- B. wall-clock to a target loss under Bernoulli failures ----------------
/** Cost counters at one validation point; the modelled wall-clock is computed from them at the end. */
interface Point { step: number, executed: number, restarts: number, checkpoints: number, netBytes: number, val: number }
interface RunResult {
  /** Validation at the points where it ran (committed steps, multiples of `EVAL_B`, first time reached). */
  curve: Point[]
  /** The first point at or below the target; undefined when the cap came first. */
  reached: Point | undefined
  /** Counters and validation loss when the run stopped (at the target or at the cap). */
  end: Point
  failures: number
}

async function bernoulli (v: Variant, p: number, seed: number, target: number, stopAt: { steps?: number, executed: number }): Promise<RunResult> {
  const pipe = await open(v, seed)
  const rng = createRng(deriveSeed(seed, Math.round(p * 1e6)))
  const bytes = stageBytes(pipe)
  const edgeBytes = v.strategy === 'checkfree-plus' ? edgeCopyBytes(pipe) : 0
  const c = { executed: 0, restarts: 0, checkpoints: 0, netBytes: 0 }
  let failures = 0
  let highest = 0
  let last: Point | undefined
  const curve: Point[] = []
  try {
    while (c.executed < stopAt.executed && (stopAt.steps === undefined || pipe.controller.step < stopAt.steps)) {
      // One draw per stage per executed iteration, identical across strategies (same rng stream).
      const failing: number[] = []
      for (let s = 0; s < STAGES; s++) if (rng.next() < p && c.executed > 0) failing.push(s)
      for (const s of failing) await pipe.kill(s)
      if (failing.length > 0) {
        failures += failing.length
        c.restarts++
        if (v.strategy === 'checkfree' || v.strategy === 'checkfree-plus') c.netBytes += failing.reduce((n, s) => n + 2 * (bytes[s] ?? 0), 0)
      }
      const before = pipe.controller.step
      const t0 = performance.now()
      await pipe.controller.trainStep()
      if (failing.length === 0) stepTimes.push(performance.now() - t0)
      c.executed++
      c.netBytes += edgeBytes
      const after = pipe.controller.step
      if (v.strategy === 'rollback' && after % CKPT_EVERY === 0 && after > before) c.checkpoints++
      // Each point is validated the first time it is committed: a rollback re-reaches a step with
      // bit-identical weights (checked against the no-failure curve in the report), so re-validating adds nothing.
      if (after % EVAL_B === 0 && after > highest) {
        last = { step: after, ...c, val: await validate(pipe) }
        curve.push(last)
        if (last.val <= target) return { curve, reached: last, end: last, failures }
      }
      highest = Math.max(highest, after)
      if (c.executed % 100 === 0) log(`  ${v.name} p ${p} seed ${seed}: ${c.executed} iterations, step ${after}, ${failures} failures`)
    }
    const end = last !== undefined && last.step === pipe.controller.step && last.executed === c.executed
      ? last
      : { step: pipe.controller.step, ...c, val: await validate(pipe) }
    return { curve, reached: undefined, end, failures }
  } finally {
    await pipe.stop()
  }
}

const variants: Variant[] = [
  { name: 'none', strategy: 'none', outOfOrder: false },
  ...([
    { name: 'checkfree+', strategy: 'checkfree-plus', outOfOrder: true },
    { name: 'checkfree', strategy: 'checkfree', outOfOrder: false },
    { name: 'checkpoint-restart', strategy: 'rollback', outOfOrder: false }
  ] satisfies Variant[]).filter((v) => STRATEGIES.includes(v.name))
]
const runB = PARTS.includes('B')
const results = new Map<string, RunResult>()
const targets: number[] = []
const t0B = performance.now()
for (let seed = 1; seed <= (runB ? SEEDS : 0); seed++) {
  const base = await bernoulli(variants[0] as Variant, 0, seed, -Infinity, { steps: BASELINE, executed: BASELINE })
  results.set(`none|0|${seed}`, base)
  const target = TARGET * base.end.val
  targets[seed] = target
  // The no-failure run's own time to the target, on the same validation points.
  const own = base.curve.find((q) => q.val <= target)
  results.set(`none|0|${seed}`, { ...base, reached: own })
  log(`seed ${seed} no-failure: val ${base.end.val.toFixed(3)} after ${BASELINE} steps, target ${target.toFixed(3)} first reached at step ${own?.step ?? '-'}`)
  for (const p of RATES) {
    for (const v of variants.slice(1)) {
      const r = await bernoulli(v, p, seed, target, { executed: CAP })
      results.set(`${v.name}|${p}|${seed}`, r)
      log(`seed ${seed} p ${p} ${v.name}: ${r.reached === undefined ? 'not reached' : `target at step ${r.reached.step}`}, ` +
        `${r.end.executed} iterations, ${r.failures} failures, val ${r.end.val.toFixed(3)} (${((performance.now() - t0B) / 60e3).toFixed(1)} min in B)`)
    }
  }
}

// ---------------- report ----------------
const stepS = median(stepTimes) / 1000
const modelBytes = 4 * evalModel.params.reduce((n, q) => n + q.variable.size, 0)
const wall = (q: Point): number => q.executed * stepS + q.restarts * RESTART_S + q.netBytes / NET_BPS + q.checkpoints * (CKPT_FIXED_S + modelBytes / DISK_BPS)
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
/** Median over seeds with a run that missed the target counted as +Infinity (i.e. above the cap). */
const medianInf = (xs: Array<number | undefined>): number => median(xs.map((x) => x ?? Number.POSITIVE_INFINITY))
/** The median's change against checkpoint-restart, in words ("12 % less", "10 % more"). */
const relative = (x: number, ref: number): string => {
  const d = Math.round(100 * (1 - x / ref))
  return d >= 0 ? `${d} % less` : `${-d} % more`
}
const show = (x: number, digits = 1): string | number => Number.isFinite(x) ? Number(x.toFixed(digits)) : 'not reached'

const rows: Array<Record<string, string | number>> = []
for (const row of branchRows) rows.push({ experiment: 'A branch', variant: String(row.variant), rate: '-', failed: row.failed ?? '-', valAfterFailure: row.valAfter ?? '-', valEnd: row.valEnd ?? '-', failures: row.failed === '-' ? 0 : 1 })

interface Summary { reached: number, wallMedian: number, wallMean: number, itersMedian: number, stepsMedian: number }
const summaries = new Map<string, Summary>()
const seedRows: Array<Record<string, string | number>> = []
for (const p of runB ? [0, ...RATES] : []) {
  for (const v of p === 0 ? variants.slice(0, 1) : variants.slice(1)) {
    const runs = Array.from({ length: SEEDS }, (_, i) => results.get(`${v.name}|${p}|${i + 1}`)).filter((r): r is RunResult => r !== undefined)
    const hit = runs.map((r) => r.reached)
    const s: Summary = {
      reached: hit.filter((q) => q !== undefined).length,
      wallMedian: medianInf(hit.map((q) => q === undefined ? undefined : wall(q))),
      wallMean: mean(hit.filter((q): q is Point => q !== undefined).map(wall)),
      itersMedian: medianInf(hit.map((q) => q?.executed)),
      stepsMedian: medianInf(hit.map((q) => q?.step))
    }
    summaries.set(`${v.name}|${p}`, s)
    runs.forEach((r, i) => {
      seedRows.push({
        experiment: 'B seed', variant: v.name, rate: p, seed: i + 1, target: Number((targets[i + 1] ?? 0).toFixed(3)),
        valEnd: r.end.val, failures: r.failures, reached: r.reached === undefined ? `no (cap ${CAP} iterations)` : 'yes',
        stepsToTarget: r.reached?.step ?? `> ${r.end.step}`, itersToTarget: r.reached?.executed ?? `> ${CAP}`,
        wallToTargetS: r.reached === undefined ? `> ${wall(r.end).toFixed(0)}` : Number(wall(r.reached).toFixed(1))
      })
    })
  }
}
for (const p of runB ? [0, ...RATES] : []) {
  const ckpt = summaries.get(`checkpoint-restart|${p}`)
  for (const v of p === 0 ? variants.slice(0, 1) : variants.slice(1)) {
    const s = summaries.get(`${v.name}|${p}`) as Summary
    const runs = Array.from({ length: SEEDS }, (_, i) => results.get(`${v.name}|${p}|${i + 1}`)).filter((r): r is RunResult => r !== undefined)
    // Reduction of the median modelled wall-clock against checkpoint-and-restart at the same rate.
    const vs = ckpt === undefined || v.strategy === 'rollback'
      ? '-'
      : !Number.isFinite(s.wallMedian) ? 'not reached' : !Number.isFinite(ckpt.wallMedian) ? 'ckpt not reached' : relative(s.wallMedian, ckpt.wallMedian)
    rows.push({
      experiment: 'B to target', variant: v.name, rate: p, failed: p === 0 ? '-' : 'any', valAfterFailure: '-',
      valEnd: mean(runs.map((r) => r.end.val)), failures: mean(runs.map((r) => r.failures)),
      reached: `${s.reached}/${runs.length}`, stepsToTarget: show(s.stepsMedian, 0), itersToTarget: show(s.itersMedian, 0),
      wallToTargetS: show(s.wallMedian), wallToTargetMeanS: s.reached > 0 ? Number(s.wallMean.toFixed(1)) : '-', vsCheckpoint: vs
    })
  }
}
rows.push(...seedRows)

// Rollback is exact: its validation at a step must equal the no-failure run's at that step.
let rollbackMaxDiff = 0
for (const [key, r] of runB ? results : []) {
  const [name, , seed] = key.split('|')
  if (name !== 'checkpoint-restart') continue
  const base = results.get(`none|0|${seed}`)
  for (const q of r.curve) {
    const b = base?.curve.find((x) => x.step === q.step)
    if (b !== undefined) rollbackMaxDiff = Math.max(rollbackMaxDiff, Math.abs(b.val - q.val))
  }
}

const ratesText = RATES.join(', ')
const edgeKiB = 4 * evalModel.params.filter((q) => /^(embed|head)\//.test(q.name)).reduce((n, q) => n + q.variable.size, 0) / 1024
writeEvalResult('checkfree', {
  summary: `Pipeline of ${STAGES} stages × ${LAYERS / STAGES} blocks (d=32, 2 heads, ffn 128, T=${T}), ${M} micro-batches × ${MB} sequences per step, ` +
    `Adam ${LR}, per-stage clip 1.0, 1F1B, wasm, real @phalanx/pipeline runtime over the memory transport. ` +
    `A: pretrain ${PRETRAIN} steps (in order: val ${inOrder.val.toFixed(3)}; out of order: ${swapped.val.toFixed(3)}), one common step, fail a stage, ${BRANCH} steps per branch. ` +
    `B (time to target), strategies ${variants.slice(1).map((v) => v.name).join(', ')}: per seed (${SEEDS} seeds) a no-failure run of ${BASELINE} steps sets the target = ${TARGET} × its final validation loss; every strategy then trains ` +
    `until its validation loss (every ${EVAL_B} committed steps, the same points for all) first reaches the target, or until ${CAP} executed iterations (the cap). ` +
    `Failures: every stage (edge stages included; all its replicas) fails with probability p per executed iteration, p ∈ {${ratesText}}, one seeded schedule shared by all strategies. ` +
    `These are per-stage per-iteration rates: the reference CheckFree configs put 5–10 %/h at 6e-4–4e-3 per stage per iteration (500M: 9e-4 at 5 %/h, 2e-3 at 10 %/h, 1e-2 at 33 %/h), ` +
    `so p = 0.01 is already the 500M config's 33 %/h and p = 0.05 is 12–83× the paper's 5–10 %/h. ` +
    `checkpoint-restart = in-memory snapshot every ${CKPT_EVERY} steps, all stages roll back and re-train (exact: its validation equals the no-failure run's at every shared point, max |diff| ${rollbackMaxDiff.toExponential(1)}). ` +
    `Wall-clock model: median measured step ${(stepS * 1000).toFixed(0)} ms per executed iteration; every iteration with failures costs a ${RESTART_S} s replacement start; ` +
    `CheckFree adds 2 neighbour stage states over 1 Gbit/s per recovered stage, and CheckFree+ its (de)embedding copies (${edgeKiB.toFixed(0)} KiB) over 1 Gbit/s every iteration; checkpointing costs ${CKPT_FIXED_S} s + model bytes / 200 MB/s every ${CKPT_EVERY} committed steps (≈ ${(100 * CKPT_FIXED_S / (CKPT_EVERY * stepS)).toFixed(0)} % overhead at this step time) and re-trains rolled-back steps. ` +
    `"B to target" rows: seeds that reached the target, median committed steps / executed iterations / modelled seconds to the target over seeds with a seed that missed counted as above the cap ` +
    `("not reached" when the median seed missed), mean seconds over the seeds that reached it, and the median's reduction against checkpoint-restart. ` +
    `Executed iterations are the wall-clock in the paper's regime, where an iteration (≈ 60–90 s) dwarfs restart and checkpoint costs. "B seed" rows give every run. ` +
    `Validation: ${valBatch.size} held-out sequences (${valBatch.size * T} tokens).`,
  columns: ['experiment', 'variant', 'rate', 'seed', 'failed', 'target', 'valAfterFailure', 'valEnd', 'failures', 'reached', 'stepsToTarget', 'itersToTarget', 'wallToTargetS', 'wallToTargetMeanS', 'vsCheckpoint'],
  rows,
  data: {
    settings: { baseline: BASELINE, cap: CAP, evalEvery: EVAL_B, seeds: SEEDS, rates: RATES, targetFactor: TARGET, restartS: RESTART_S, netBps: NET_BPS, diskBps: DISK_BPS, ckptFixedS: CKPT_FIXED_S, ckptEvery: CKPT_EVERY, modelBytes },
    branches: branchRows,
    bernoulli: Object.fromEntries([...results].map(([k, r]) => [k, { ...r, reachedWallS: r.reached === undefined ? null : wall(r.reached), endWallS: wall(r.end) }])),
    rollbackMaxDiff,
    stepMs: stepS * 1000
  }
})
evalModel.dispose()
