/**
 * `npm run bench -- aggregate`: time per whole-vector aggregation (Gram pass included where the rule
 * needs it) for every rule at n ∈ {10, 16, 32} and d ∈ {1e6, 1e7}, as a ratio to the plain mean of the
 * same inputs in the same run. n = 32 × d = 1e7 (1.28 GB of float32 inputs) is skipped: with six
 * engineers sharing a 24 GiB box it does not fit sensibly. Targets are informational (null).
 */
import { aggregate, createAggregator, gramPartial, type AggregatorSpec } from '@phalanx/aggregate'
import { median, progress, writeBenchResult, type Metric } from '../report.js'

function specs (n: number): Array<[string, AggregatorSpec]> {
  const f = Math.floor(n / 4)
  return [
    ['Median', { name: 'Median', f }],
    ['TrMean', { name: 'TrMean', f }],
    ['Krum', { name: 'Krum', f }],
    ['MultiKrum', { name: 'MultiKrum', f }],
    ['Bulyan', { name: 'Bulyan', f: Math.floor((n - 3) / 4) }],
    ['GeometricMedian', { name: 'GeometricMedian', f, T: 8 }],
    ['CenteredClipping', { name: 'CenteredClipping', f, tau: 1, L: 3, init: 'medoid' }],
    ['MDA', { name: 'MDA', f: Math.min(f, 3) }],
    ['FlagAggregator', { name: 'FlagAggregator', f, r: 5, scale: 'medianNorm' }],
    ['NNM+TrMean', { name: 'TrMean', f, pre: [{ name: 'NNM' }] }]
  ]
}

function inputs (n: number, d: number): Float32Array[] {
  let s = 12345
  return Array.from({ length: n }, () => {
    const x = new Float32Array(d)
    for (let k = 0; k < d; k++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0
      x[k] = s / 4294967296 - 0.5
    }
    return x
  })
}

function time (reps: number, fn: () => void): number {
  const ms: number[] = []
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now()
    fn()
    ms.push(performance.now() - t0)
  }
  return median(ms)
}

const metrics: Record<string, Metric> = {}
const started = performance.now()
for (const d of [1e6, 1e7]) {
  for (const n of [10, 16, 32]) {
    if (n * d * 4 > 1e9) {
      progress(`skip n=${n} d=${d}: ${(n * d * 4 / 1e9).toFixed(2)} GB of inputs`)
      continue
    }
    const reps = d >= 1e7 ? 1 : 3
    const xs = inputs(n, d)
    const out = new Float32Array(d)
    const mean = createAggregator({ name: 'Average' })
    aggregate(mean, xs, out)
    const meanMs = time(reps, () => { aggregate(mean, xs, out) })
    const gramMs = time(reps, () => { gramPartial(xs) })
    const tag = `n${n}_d${d === 1e6 ? '1e6' : '1e7'}`
    metrics[`Average_${tag}_ms`] = { value: meanMs, unit: 'ms', target: null, better: 'lower' }
    metrics[`gram_${tag}_ratio`] = { value: gramMs / meanMs, unit: 'x mean', target: null, better: 'lower' }
    progress(`n=${n} d=${d}: mean ${meanMs.toFixed(0)} ms, Gram ${gramMs.toFixed(0)} ms`)
    for (const [label, spec] of specs(n)) {
      const rule = createAggregator(spec)
      const ms = time(reps, () => { aggregate(rule, xs, out) })
      metrics[`${label}_${tag}_ratio`] = { value: ms / meanMs, unit: 'x mean', target: null, better: 'lower' }
      progress(`  ${label}: ${ms.toFixed(0)} ms (${(ms / meanMs).toFixed(1)}x mean)`)
    }
    xs.length = 0
    globalThis.gc?.()
  }
}
writeBenchResult('aggregate', metrics, { seconds: (performance.now() - started) / 1000, skipped: ['n=32 d=1e7 (1.28 GB of inputs)'] })
