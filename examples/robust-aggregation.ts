/**
 * Robust aggregation in a few lines: 10 honest-ish gradients plus 3 attackers. Compares how far the
 * plain mean, Krum and the trimmed mean land from the honest mean under "A Little Is Enough"
 * (ALIE, which is built to slip past robust rules) and under large Gaussian noise (which wrecks the
 * mean). Run: `npx tsx examples/robust-aggregation.ts`.
 */
import { aggregate, createAggregator, createAttack, createRng, type AttackSpec } from '@phalanx/aggregate'

const d = 100_000
const rng = createRng(42)
const truth = Float32Array.from({ length: d }, () => rng.normal())
// Honest gradients: the true gradient plus per-worker noise.
const honest = Array.from({ length: 10 }, () => Float32Array.from(truth, (v) => v + 0.5 * rng.normal()))
const honestMean = aggregate(createAggregator({ name: 'Average' }), honest)
const distance = (x: Float32Array): number => Math.sqrt(x.reduce((s, v, k) => s + (v - honestMean[k]!) ** 2, 0))
const rules = [{ name: 'Average' }, { name: 'Krum', f: 3 }, { name: 'TrMean', f: 3 }, { name: 'TrMean', f: 3, pre: [{ name: 'NNM' }] }] as const
const attacks: AttackSpec[] = [{ name: 'ALittleIsEnough', tau: 1.5 }, { name: 'ALittleIsEnough', z: 'baruch' }, { name: 'Gaussian', sigma: 10 }]

for (const attack of attacks) {
  const inputs = [...honest, ...createAttack(attack).generate(honest, 3, { seed: 1 })]
  process.stdout.write(`\n3 attackers, ${JSON.stringify(attack)}:\n`)
  for (const spec of rules) {
    const out = aggregate(createAggregator(spec), inputs)
    const label = 'pre' in spec ? 'NNM + TrMean' : spec.name
    process.stdout.write(`  ${label.padEnd(13)} ‖F − honest mean‖ = ${distance(out).toFixed(2)}\n`)
  }
}
