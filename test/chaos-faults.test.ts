/**
 * Every fault class on real processes (`phalanx chaos` launch driver): the loss of every holder of
 * the committed state (with per-host snapshot holders, and its must-fail control without them),
 * Byzantine gradients and label flipping against a robust aggregator, disk faults on L2
 * checkpoints, and clock skew. Each scenario is a shipped file of packages/chaos/scenarios/process/.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadScenario, runBaseline, type JobOutcome, type Scenario } from '@phalanx/chaos'
import { createLaunchDriver, runChaosScenario, type ChaosRunReport } from '@phalanx/cli'
import { BIN, ROOT } from './cli-harness.js'

const SCENARIOS = join(ROOT, 'packages', 'chaos', 'scenarios', 'process')
const base = mkdtempSync(join(tmpdir(), 'phalanx-chaos-faults-'))
afterAll(() => { rmSync(base, { recursive: true, force: true }) })

const load = async (name: string): Promise<Scenario> => await loadScenario(join(SCENARIOS, `${name}.yaml`))
const baselineOf = async (s: Scenario, dir: string): Promise<JobOutcome> => {
  const driver = createLaunchDriver({ bin: BIN, runDir: join(base, dir), seed: s.seed })
  try {
    return await runBaseline(s, { driver, signal: AbortSignal.timeout(60_000) })
  } finally {
    await driver.stop()
  }
}
const run = async (s: Scenario, baseline: JobOutcome | undefined): Promise<ChaosRunReport> =>
  await runChaosScenario({ scenario: s, runDir: join(base, s.name), bin: BIN, ...(baseline === undefined ? { baseline: false } : { baselineOutcome: baseline }) })
/** JSON log lines of one process of a scenario run. */
const logOf = (r: ChaosRunReport, id: string): Array<Record<string, unknown>> =>
  readFileSync(join(r.runDir, 'scenario', 'run-1', `${id}.log`), 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)

describe('fault classes on real processes', () => {
  it('every holder of the committed state killed: restarted workers restore it from the snapshot holder; without one the run fails naming the lost step', async () => {
    const s = await load('process-state-loss')
    const report = await run(s, await baselineOf(s, 'state-loss-baseline'))
    expect(report.reasons).toEqual([])
    expect(report.verdict).toBe('pass')
    expect(report.bitIdentical).toBe(true)
    expect(report.stepsLost).toBe(0)
    expect(report.injected.filter((i) => i.skipped === undefined).map((i) => i.targets)).toEqual([['worker-1', 'worker-2']])
    for (const id of ['worker-1', 'worker-2']) {
      expect(logOf(report, id).some((l) => l.msg === 'restored from the local snapshot before joining')).toBe(true)
    }

    const control = await run(await load('process-state-loss-must-fail'), undefined)
    expect(control.verdict).toBe('fail')
    expect(control.expected).toBe('fail')
    expect(control.reasons).toContainEqual(expect.stringMatching(/^finishes: QuorumLostError: Committed state of step 20 lost: no member or waiting worker holds it \(workers hold: worker-1@0, worker-2@0\)/))
    expect(control.committed).toBe(20)
    expect(control.leaks).toEqual([])
  })

  it('a Byzantine worker (Gaussian noise) and a label-flipping worker: a trimmed mean keeps the loss within the bound, the plain mean does not', async () => {
    const byz = await load('process-byzantine')
    const baseline = await baselineOf(byz, 'robust-baseline')
    for (const s of [byz, await load('process-label-flip')]) {
      const report = await run(s, baseline)
      expect(report.reasons, s.name).toEqual([])
      expect(report.verdict, s.name).toBe('pass')
      expect(report.committed).toBe(s.job.steps)
      // The attack changed what was trained (so the hook was live), within the loss bound.
      expect(report.bitIdentical).toBe(false)
      expect(report.finalLoss).not.toBe(baseline.loss)
      expect(report.faultsByClass[`byzantine:${s.faults[0]?.kind === 'label-flip' ? 'label-flip' : 'byzantine'}-start`]).toBe(1)
    }
    const control = await load('process-byzantine-mean-must-fail')
    const broken = await run(control, await baselineOf(control, 'mean-baseline'))
    expect(broken.verdict).toBe('fail')
    expect(broken.expected).toBe('fail')
    expect(broken.reasons).toEqual([expect.stringMatching(/^loss: final loss .* vs bound /)])
  })

  it('disk faults on L2 checkpoints (ENOSPC, slow fsync, torn and corrupt files) and clock skew: the job ends bit-identical', async () => {
    const disk = await load('process-disk')
    const baseline = await baselineOf(disk, 'disk-baseline')
    const report = await run(disk, baseline)
    expect(report.reasons).toEqual([])
    expect(report.verdict).toBe('pass')
    expect(report.bitIdentical).toBe(true)
    expect(report.faultsByClass['disk:disk-start']).toBe(4)
    // The full disk is reported by the writer and skipped; the job goes on.
    expect(logOf(report, 'worker-1').some((l) => l.msg === 'L2 checkpoint failed' && JSON.stringify(l.err).includes('ENOSPC'))).toBe(true)
    // The restarted worker passes over its torn and corrupt checkpoints (CRC-32C) and heals from peers.
    const w2 = logOf(report, 'worker-2')
    expect(w2.some((l) => l.msg === 'restore candidate failed, trying the next')).toBe(true)
    expect(w2.some((l) => /ChecksumMismatchError|CorruptCheckpointError/.test(JSON.stringify(l.err ?? '')))).toBe(true)

    const skew = await load('process-clock-skew')
    const skewed = await run(skew, baseline)
    expect(skewed.reasons).toEqual([])
    expect(skewed.verdict).toBe('pass')
    expect(skewed.bitIdentical).toBe(true)
    expect(skewed.faultsByClass['clock:clock-skew-start']).toBe(3)
  })
})
