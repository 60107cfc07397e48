import { aggregatorComplianceSuite, type AggregatorSuiteOptions } from '@phalanx/testing/aggregator'
import { createAggregator, seededPermutation, type AggregatorSpec } from '../src/index.js'
import {
  refArc, refBucketing, refBulyan, refCenteredClipping, refClipping, refFlag, refGeometricMedian, refKrum, refMda,
  refMean, refMedian, refMultiKrum, refNnm, refTrMean
} from './reference.js'

const X = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
const create = (spec: AggregatorSpec): ReturnType<typeof createAggregator> => createAggregator(spec)
const norm = (x: number[]): number => Math.hypot(...x)
const medianOf = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b)
  const h = s.length >> 1
  return s.length % 2 === 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2
}

type Entry = [AggregatorSpec, Omit<AggregatorSuiteOptions<AggregatorSpec>, 'create'>]

const entries: Entry[] = [
  // The control: the plain mean must fail the robustness case.
  [{ name: 'Average' }, { minInputs: 1, robust: false, byzantine: 1, reference: refMean, cases: [{ inputs: X, expected: [4, 5, 6] }] }],
  [{ name: 'Median', f: 2 }, {
    minInputs: 5,
    reference: refMedian,
    cases: [{ inputs: [[1], [3], [2], [10], [-5], [4]], expected: [2.5] }, { inputs: [[1, 0], [2, 0], [30, 0], [4, 0], [5, 0]], expected: [4, 0] }]
  }],
  [{ name: 'TrMean', f: 2 }, { minInputs: 5, reference: (xs) => refTrMean(xs, 2), cases: [{ inputs: [[1], [2], [3], [4], [100], [-100]], expected: [2.5] }] }],
  [{ name: 'TrMean', f: 1 }, { minInputs: 3, reference: (xs) => refTrMean(xs, 1), cases: [{ inputs: X, expected: [4, 5, 6] }] }],
  [{ name: 'Krum', f: 1 }, {
    minInputs: 5,
    reference: (xs) => refKrum(xs, 1),
    // Scores (3 nearest, squared): 0 → 14, 1 → 6, 2 → 6, 3 → 14: the tie goes to the lower index.
    cases: [{ inputs: [[0], [1], [2], [3], [100]], expected: [1] }]
  }],
  [{ name: 'Krum', f: 2, neighbours: 'n-f-2' }, { minInputs: 7, reference: (xs) => refKrum(xs, 2, 2) }],
  [{ name: 'Krum', f: 1, bound: 'byzfl' }, { minInputs: 3, reference: (xs) => refKrum(xs, 1), cases: [{ inputs: X, expected: [1, 2, 3] }] }],
  [{ name: 'MultiKrum', f: 2 }, { minInputs: 7, reference: (xs) => refMultiKrum(xs, 2) }],
  [{ name: 'MultiKrum', f: 1, bound: 'byzfl' }, { minInputs: 3, reference: (xs) => refMultiKrum(xs, 1), cases: [{ inputs: X, expected: [2.5, 3.5, 4.5] }] }],
  [{ name: 'Bulyan', f: 1 }, {
    minInputs: 7,
    reference: (xs) => refBulyan(xs, 1),
    // Krum rounds pick 5, 4, 3, 2 and then 50 (score 1600, tied with 90, lower index); median of
    // {2, 3, 4, 5, 50} is 4 and the 3 values closest to it are 4, 3, 5.
    cases: [{ inputs: [[1], [2], [3], [4], [5], [50], [90]], expected: [4] }]
  }],
  [{ name: 'GeometricMedian', f: 1 }, {
    minInputs: 3,
    reference: (xs) => refGeometricMedian(xs),
    cases: [{ inputs: X, expected: [3.78788764, 4.78788764, 5.78788764] }]
  }],
  [{ name: 'GeometricMedian', f: 1, nu: 1e-6, T: 50 }, { minInputs: 3, reference: (xs) => refGeometricMedian(xs, 1e-6, 50), tolerance: 1e-4 }],
  [{ name: 'CenteredClipping', f: 1 }, { minInputs: 3, reference: (xs) => refCenteredClipping(xs), cases: [{ inputs: X, expected: [4, 5, 6] }] }],
  // Known weakness, asserted: a mean start is dragged by a huge input and L·τ cannot walk back.
  [{ name: 'CenteredClipping', f: 2, tau: 1, L: 3, init: 'mean' }, {
    minInputs: 5,
    robust: false,
    reference: (xs) => refCenteredClipping(xs, 1, 3, 'mean'),
    // v0 = mean = 2; |x - v| = 2 for both, clipped to 1: steps ±1 cancel, so v stays 2.
    cases: [{ inputs: [[0], [4], [2], [2], [2]], expected: [2] }]
  }],
  [{ name: 'CenteredClipping', f: 1, tau: 1, L: 1, init: 'zero' }, {
    minInputs: 3,
    identity: false,
    boundFactor: 10,
    // Every input is at distance 4 from 0 and clipped to norm 1: v = mean of unit steps = 1.
    cases: [{ inputs: [[4], [4], [4]], expected: [1] }]
  }],
  [{ name: 'CenteredClipping', f: 2, init: 'medoid', tau: 0.5, L: 5 }, { minInputs: 5, reference: undefined }],
  [{ name: 'MDA', f: 2 }, { minInputs: 5, reference: (xs) => refMda(xs, 2) }],
  [{ name: 'MDA', f: 1 }, { minInputs: 3, reference: (xs) => refMda(xs, 1), cases: [{ inputs: X, expected: [2.5, 3.5, 4.5] }] }],
  [{ name: 'FlagAggregator', f: 1, r: 2 }, {
    minInputs: 3,
    identity: false,
    reference: (xs) => refFlag(xs, 2, 1),
    tolerance: 1e-5,
    cases: [
      { inputs: [[1, 0, 0], [2, 0, 0], [0, 0, 5]], expected: [1, 0, 0.5] },
      { inputs: [[3, 4], [3, 4], [3, 4]], expected: [0.9, 1.2] }
    ]
  }],
  [{ name: 'FlagAggregator', f: 1, r: 1, iterations: 4 }, {
    minInputs: 3,
    identity: false,
    reference: (xs) => refFlag(xs, 1, 4),
    cases: [
      { inputs: [[1, 0, 0], [2, 0, 0], [0, 0, 5]], expected: [2, 0, 0] },
      { inputs: [[1, 1, 0], [1, 0, 1], [0, 1, 1], [-10, -10, -10]], expected: [0.836863, 0.836863, 0.836863] }
    ]
  }],
  [{ name: 'FlagAggregator', f: 1, r: 3, scale: 'medianNorm' }, {
    minInputs: 3,
    reference: (xs) => refFlag(xs, 3, 1).map((v) => v * 3 / xs.length * medianOf(xs.map(norm)))
  }],
  [{ name: 'FlagAggregator', f: 1, r: 2, lambda: 4, iterations: 2 }, { minInputs: 3, identity: false, cases: [{ inputs: [[3, 4], [3, 4], [3, 4]], expected: [0.9, 1.2] }] }],
  [{ name: 'Krum', f: 1, pre: [{ name: 'NNM' }] }, { minInputs: 5, reference: (xs) => refKrum(refNnm(xs, 1), 1) }],
  [{ name: 'TrMean', f: 1, pre: [{ name: 'NNM' }] }, {
    minInputs: 3,
    reference: (xs) => refTrMean(refNnm(xs, 1), 1),
    cases: [{ inputs: X, expected: [2.5, 3.5, 4.5] }]
  }],
  [{ name: 'GeometricMedian', f: 1, pre: [{ name: 'Clipping', c: 2 }, { name: 'NNM' }] }, {
    minInputs: 3,
    identity: false,
    reference: (xs) => refGeometricMedian(refNnm(refClipping(xs, 2), 1))
  }],
  [{ name: 'Average', pre: [{ name: 'ARC', f: 1 }] }, {
    minInputs: 1,
    byzantine: 1,
    reference: (xs) => refMean(refArc(xs, 1)),
    cases: [{ inputs: X, expected: [(1 + 4 + 4.41004009) / 3, (2 + 5 + 5.04004582) / 3, (3 + 6 + 5.67005155) / 3] }]
  }],
  [{ name: 'Median', f: 1, pre: [{ name: 'Bucketing', s: 2 }] }, {
    minInputs: 5,
    permutationInvariant: false,
    reference: (xs, { seed }) => refMedian(refBucketing(xs, 2, seededPermutation(xs.length, seed)))
  }],
  [{ name: 'MultiKrum', f: 1, pre: [{ name: 'Bucketing', s: 2 }, { name: 'NNM' }] }, {
    minInputs: 9,
    permutationInvariant: false,
    reference: (xs, { seed }) => refMultiKrum(refNnm(refBucketing(xs, 2, seededPermutation(xs.length, seed)), 1), 1)
  }]
]

for (const [spec, options] of entries) aggregatorComplianceSuite(spec, { ...options, create })
