#!/usr/bin/env node
// `npm run soak`: a long chaos soak on real processes. It runs the linear job (coordinator + 5
// workers over loopback ZeroMQ, a per-host snapshot holder, L2 checkpoints, started by the
// `phalanx chaos` launch driver) again and again, each run with a fresh fault seed and a dense mixed
// schedule (kill + restart, crash + join, SIGSTOP hang, event-loop stall, slow/lossy network, clock
// skew, corrupt checkpoint writes), until the time is up; every run must keep its invariants (all
// steps committed once, in order, bit-identical to the one fault-free baseline).
// Writes <out-dir>/soak.json and soak.md. Needs a build (`npx tsc -b`).
//
//   npm run soak -- [--minutes 30] [--faults 500] [--steps 300] [--workers 5] [--seed 1000] [--out-dir docs/results]
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { parseScenario } from '@phalanx/chaos'
import { runChaosScenario } from '@phalanx/cli'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const BIN = join(ROOT, 'packages', 'cli', 'bin', 'phalanx.js')

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    faults: { type: 'string', default: '500' },
    steps: { type: 'string', default: '300' },
    workers: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1000' },
    'out-dir': { type: 'string', default: join(ROOT, 'docs', 'results') },
    'run-dir': { type: 'string' },
    'max-runs': { type: 'string', default: '10000' }
  },
  strict: true
})
const minutes = Number(values.minutes)
const targetFaults = Number(values.faults)
const steps = Number(values.steps)
const workers = Number(values.workers)
const seed0 = Number(values.seed)
const maxRuns = Number(values['max-runs'])
for (const [k, v] of Object.entries({ minutes, faults: targetFaults, steps, workers, seed: seed0, 'max-runs': maxRuns })) {
  if (!Number.isFinite(v) || v < 0) { process.stderr.write(`soak: --${k} must be a non-negative number\n`); process.exit(2) }
}
if (steps < 100 || workers < 3) { process.stderr.write('soak: needs --steps ≥ 100 and --workers ≥ 3\n'); process.exit(2) }

/** The schedule of one soak run: dense, mixed, seeded. */
function scenarioFor (seed) {
  return parseScenario({
    name: 'soak',
    description: 'Mixed process and network faults on real processes (npm run soak).',
    seed,
    // Snapshots: a killed worker restores its newest snapshot from the holder (which outlives it)
    // before rejoining, so the job goes on even when every other holder of the state is gone too.
    job: { workers, steps, minWorkers: 2, config: { snapshots: true, checkpoints: { every: 5 }, jobOptions: { stepDelayMs: 3 } } },
    faults: [
      { kind: 'kill', at: { everySteps: 40, fromStep: 10 }, restartAfterMs: 300 },
      { kind: 'crash', at: { everySteps: 70, fromStep: 30 } },
      { kind: 'join', at: { everySteps: 70, fromStep: 35 } },
      { kind: 'hang', at: { everySteps: 50, fromStep: 20 }, durationMs: 800 },
      { kind: 'stall', at: { everySteps: 45, fromStep: 25 }, durationMs: 700 },
      { kind: 'network', at: { everySteps: 30, fromStep: 5 }, target: 'random-worker', delayMs: 2, jitterMs: 3, drop: 0.01, durationMs: 1500 },
      { kind: 'clock-skew', at: { everySteps: 60, fromStep: 15 }, target: 'random-worker', offsetMs: 5000, driftPpm: 20000, durationMs: 3000 },
      { kind: 'disk', at: { everySteps: 60, fromStep: 45 }, target: 'random-worker', fault: 'corrupt', path: '*.bin', bits: 4, durationMs: 3000 }
    ],
    invariants: { bitIdentical: true, minRecoveries: 1, mttr: { p99Ms: 10_000 }, timeoutMs: 240_000 }
  }, 'soak scenario')
}

const runRoot = resolve(values['run-dir'] ?? join(tmpdir(), `phalanx-soak-${process.pid}`))
const keepRuns = values['run-dir'] !== undefined
const ctl = new AbortController()
const onSignal = () => { ctl.abort(new Error('interrupted')) }
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

const started = Date.now()
const elapsedMin = () => (Date.now() - started) / 60_000
const log = (line) => { process.stderr.write(`[soak ${elapsedMin().toFixed(1)} min] ${line}\n`) }
const runs = []
let baseline
const byKind = {}
const recoveryTotals = []
const phases = { detectMs: [], quorumMs: [], firstCommitMs: [], totalMs: [] }
let faults = 0
let failed = 0

try {
  for (let i = 0; i < maxRuns && elapsedMin() < minutes && !ctl.signal.aborted; i++) {
    const scenario = scenarioFor(seed0 + i)
    const t0 = Date.now()
    const report = await runChaosScenario({
      scenario, runDir: join(runRoot, `run-${i}`), bin: BIN,
      ...(baseline === undefined ? {} : { baselineOutcome: baseline }),
      progress: i === 0 ? log : () => {}
    }, { signal: ctl.signal })
    baseline ??= report.baseline
    const injected = report.injected.filter((f) => f.skipped === undefined)
    faults += injected.length
    for (const f of injected) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1
    for (const r of report.recoveries) {
      recoveryTotals.push(r.totalMs)
      for (const k of Object.keys(phases)) phases[k].push(r[k])
    }
    if (report.verdict !== 'pass') failed++
    runs.push({
      run: i, seed: scenario.seed, verdict: report.verdict, reasons: report.reasons, faults: injected.length,
      skipped: report.injected.length - injected.length, recoveries: report.recoveries.length, mttrP99Ms: report.mttr.p99,
      stepsLost: report.stepsLost, committed: report.committed, bitIdentical: report.bitIdentical ?? false, durationMs: Date.now() - t0
    })
    log(`run ${i} (seed ${scenario.seed}): ${report.verdict.toUpperCase()}, ${injected.length} faults, ${report.recoveries.length} recoveries (p99 ${report.mttr.p99.toFixed(0)} ms), ${((Date.now() - t0) / 1000).toFixed(1)} s; total ${faults} faults${report.verdict === 'pass' ? '' : `\n  ${report.reasons.join('\n  ')}`}`)
    if (!keepRuns && report.verdict === 'pass') rmSync(join(runRoot, `run-${i}`), { recursive: true, force: true })
  }
} finally {
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
}
const durationMin = elapsedMin()
const verdict = failed === 0 && runs.length > 0 && faults >= targetFaults && !ctl.signal.aborted ? 'pass' : 'fail'
const result = {
  verdict,
  startedAt: new Date(started).toISOString(),
  durationMinutes: Number(durationMin.toFixed(2)),
  requestedMinutes: minutes,
  targetFaults,
  job: { name: 'linear', workers, steps, stepDelayMs: 3, transport: 'zmq (loopback)', snapshots: 'per-host holder', checkpoints: 'L2 every 5 snapshots' },
  runs: runs.length,
  failedRuns: failed,
  faults,
  faultsByKind: byKind,
  faultsPerMinute: Number((faults / Math.max(durationMin, 1e-9)).toFixed(1)),
  stepsCommitted: runs.reduce((a, r) => a + r.committed, 0),
  stepsLost: runs.reduce((a, r) => a + r.stepsLost, 0),
  recoveries: recoveryTotals.length,
  recoveryMs: Object.fromEntries(Object.entries(phases).map(([k, xs]) => [k, { p50: pct(xs, 0.5), p99: pct(xs, 0.99), max: pct(xs, 1) }])),
  allBitIdentical: runs.every((r) => r.bitIdentical),
  baselineLoss: baseline?.loss,
  machine: '2 shared cores (other agents running), Node ' + process.versions.node,
  perRun: runs
}
const outDir = resolve(values['out-dir'])
mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, 'soak.json'), JSON.stringify(result, null, 2) + '\n')
const ms = (x) => x.toFixed(0)
const md = [
  '# Chaos soak (`npm run soak`)',
  '',
  `Verdict: **${verdict.toUpperCase()}**, ${result.durationMinutes} min (requested ${minutes}), ${runs.length} runs of the linear job (${workers} workers, ${steps} steps, real processes over loopback ZeroMQ, a snapshot holder, L2 checkpoints), ${failed} failed.`,
  '',
  `- Faults injected: **${faults}** (target ${targetFaults}), ${result.faultsPerMinute}/min: ${Object.entries(byKind).map(([k, v]) => `${k} ${v}`).join(', ')}`,
  `- Steps committed: ${result.stepsCommitted}, steps lost: ${result.stepsLost}; every run bit-identical to the fault-free baseline: ${result.allBitIdentical}`,
  `- Recoveries: ${result.recoveries}; ms p50 / p99 / max by phase:`,
  '',
  '| phase | p50 | p99 | max |',
  '|---|---|---|---|',
  ...Object.entries(result.recoveryMs).map(([k, v]) => `| ${k} | ${ms(v.p50)} | ${ms(v.p99)} | ${ms(v.max)} |`),
  '',
  `Started ${result.startedAt} on ${result.machine}. Per-run details in soak.json.`,
  ''
].join('\n')
writeFileSync(join(outDir, 'soak.md'), md)
if (!keepRuns && failed === 0) rmSync(runRoot, { recursive: true, force: true })
log(`done: ${verdict.toUpperCase()}, ${faults} faults in ${runs.length} runs; wrote ${join(outDir, 'soak.json')} and soak.md${failed > 0 ? `; failed runs kept in ${runRoot}` : ''}`)
process.exitCode = verdict === 'pass' ? 0 : 1
